# The two set-up commands of the README. Each makes (once) a small virtual environment holding tox, so the
# machine's own Python is never modified (and PEP 668 "externally managed" Pythons work too), then runs one
# tox environment, which installs everything else itself.
PYTHON ?= python3
BOOT = .tox-bootstrap
TOX = $(BOOT)/bin/tox

.PHONY: bench test perf gate gpu-check cluster
bench: $(TOX)
	$(TOX) -e bench
test: $(TOX)
	$(TOX) -e tests
perf: $(TOX)
	$(TOX) -e perf
gate: $(TOX)
	$(TOX) -e gate
# The cluster suite on a single-node Slurm it starts and stops (Debian's packages installed, run as root).
cluster: $(TOX)
	$(TOX) -e cluster

# On a CUDA machine, with the Python that already holds its torch and triton (no tox: GPU machines often have no
# network): the correctness suite with the Triton kernels compiled for the GPU, then the gpu-check preset
# (triton, compiled, eager against the run's copy bandwidth) and its report.
gpu-check:
	env -u TRITON_INTERPRET $(PYTHON) -m pytest -W error suites/correctness -q -p no:cacheprovider
	$(PYTHON) -m fastformer_bench run --preset gpu-check --out results/gpu-check-local --resume
	$(PYTHON) -m fastformer_bench report results/gpu-check-local --out reports/gpu-check-local

$(TOX):
	$(PYTHON) -m venv $(BOOT)
	$(BOOT)/bin/python -m pip install -q 'tox>=4'
