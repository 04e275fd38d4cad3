from deskwatch.cli import main

raise SystemExit(main())
