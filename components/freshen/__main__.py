from freshen.cli import main

raise SystemExit(main())
