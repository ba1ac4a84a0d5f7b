# The two set-up commands of the README. Each makes (once) a small virtual environment holding tox, so the
# machine's own Python is never modified (and PEP 668 "externally managed" Pythons work too), then runs one
# tox environment, which installs everything else itself.
PYTHON ?= python3
BOOT = .tox-bootstrap
TOX = $(BOOT)/bin/tox

.PHONY: bench test perf gate
bench: $(TOX)
	$(TOX) -e bench
test: $(TOX)
	$(TOX) -e tests
perf: $(TOX)
	$(TOX) -e perf
gate: $(TOX)
	$(TOX) -e gate

$(TOX):
	$(PYTHON) -m venv $(BOOT)
	$(BOOT)/bin/python -m pip install -q 'tox>=4'
