from bench.cache_quality.run import main

raise SystemExit(main())
