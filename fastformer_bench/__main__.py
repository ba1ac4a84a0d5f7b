from fastformer_bench.cli import main

raise SystemExit(main())
