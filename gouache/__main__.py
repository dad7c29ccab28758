from gouache.cli import main

raise SystemExit(main())
