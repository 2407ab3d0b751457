# The two README commands. Both do all the set-up first (idempotent). The shared venv holds
# the dependencies only; this clone's code comes from PYTHONPATH, so no other checkout's
# `make` can re-point what these commands run. `demo` always REPLAYS the demo session (it
# never opens a camera or microphone: `robot-emotion run` is the live verb).
.PHONY: demo test check bench constraints
RUN = HF_HUB_OFFLINE=1 PYTHONPATH="$(CURDIR)" $$VENV/bin/python
demo:
	@VENV=$$(scripts/setup.sh) && $(RUN) -m robot_emotion replay --demo
# make test: one pytest worker per core and one more (whole files each: their module fixtures
# load once; the extra worker fills the CPU while another waits on a paced replay), then the
# tests marked `alone` (wall-clock order or latency of a live node) with the machine to themselves
JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); n=$$((n + 1)); [ $$n -gt 4 ] && n=4; echo $$n)
test:
	@VENV=$$(scripts/setup.sh) && $(RUN) -m pytest -q -n $(JOBS) --dist loadfile -m "not alone" --durations=15 tests \
	  && $(RUN) -m pytest -q -m alone tests
# the fast tier for every change (slow tests listed in tests/slow.txt left out; ruff included)
check:
	@VENV=$$(scripts/setup.sh) && $(RUN) -m pytest -q -m "not slow" tests
bench:
	@VENV=$$(scripts/setup.sh) && $(RUN) -m robot_emotion bench
# constraints.txt from pyproject.toml's lists, every existing pin kept (needs PyPI)
constraints:
	@scripts/compile_constraints.sh
