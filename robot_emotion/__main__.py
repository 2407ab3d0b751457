"""python -m robot_emotion: the robot-emotion command line (cli/main.py)."""

from robot_emotion.cli.main import main

raise SystemExit(main())
