from bench.curator.run import main

raise SystemExit(main())
