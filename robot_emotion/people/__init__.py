"""Known people (off by default): the SQLite store of names and voice prints, and enrolment."""
