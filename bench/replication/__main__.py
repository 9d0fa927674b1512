import sys

from bench.replication.run import main

sys.exit(main())
