"""python -m robot_emotion: the robot-emotion command line (cli.py)."""
from robot_emotion.cli import main

raise SystemExit(main())
