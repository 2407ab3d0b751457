# The two README commands. Both do all the set-up first (idempotent).
.PHONY: demo test bench
demo:
	@VENV=$$(scripts/setup.sh) && HF_HUB_OFFLINE=1 $$VENV/bin/robot-emotion run --demo
test:
	@VENV=$$(scripts/setup.sh) && HF_HUB_OFFLINE=1 $$VENV/bin/python -m pytest -q tests
bench:
	@VENV=$$(scripts/setup.sh) && HF_HUB_OFFLINE=1 $$VENV/bin/robot-emotion bench
