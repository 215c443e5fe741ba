from aigateway.cli import main

raise SystemExit(main())
