from robot_emotion.cli import main

raise SystemExit(main())
