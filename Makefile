# The two set-up commands of the README: each installs tox if needed and runs one tox environment.
PYTHON ?= python3
TOX = $(PYTHON) -m tox

.PHONY: bench test perf gate
bench:
	$(PYTHON) -m pip install -q 'tox>=4' && $(TOX) -e bench
test:
	$(PYTHON) -m pip install -q 'tox>=4' && $(TOX) -e tests
perf:
	$(PYTHON) -m pip install -q 'tox>=4' && $(TOX) -e perf
gate:
	$(PYTHON) -m pip install -q 'tox>=4' && $(TOX) -e gate
