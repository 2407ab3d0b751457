"""List the tests that take more than SLOW_S, from a JUnit XML report, for tests/slow.txt.

    python -m pytest tests --junitxml=/tmp/junit.xml        # the whole suite, on 2 cores
    python tools/slow_tests.py /tmp/junit.xml > tests/slow.txt

tests/conftest.py marks every test listed in tests/slow.txt ``slow``: `make check` leaves them
out (the fast tier), `make test` runs everything. A new test is fast until a report says not.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET

SLOW_S = 3.0
# Whole modules whose module-scoped fixtures replay or build whole sessions (5-15 s of setup
# in the fast tier's `--durations` report, 2026-12-07): leaving out only their slow tests would
# hand the fixture to the first fast one.
FIXTURE_MODULES = (
    "tests/test_node.py",
    "tests/test_offline_chain.py",
    "tests/test_turns.py",
    "tests/test_demo_session.py",
    "tests/test_corpus.py",
)


def main(paths: list[str]) -> int:
    """Every test over SLOW_S in any of the reports (the whole suite's, then the fast tier's:
    a fixture left behind by a slow test is paid by a fast one), plus FIXTURE_MODULES."""
    slow: set[str] = set(FIXTURE_MODULES)
    for path in paths:
        for tc in ET.parse(path).iter("testcase"):
            module = tc.get("classname", "").replace(".", "/") + ".py"
            if float(tc.get("time", 0)) > SLOW_S and module not in FIXTURE_MODULES:
                slow.add(f"{module}::{tc.get('name')}")
    print(
        f"# tests (or whole modules) over {SLOW_S:g} s on 2 cores: make check leaves them out. "
        "Regenerate: tools/slow_tests.py JUNIT.xml [FAST_TIER_JUNIT.xml]"
    )
    print("\n".join(sorted(slow)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
