# Set-up and entry points. Every target creates or reuses .venv and installs from the pinned files.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PIP_PIN := pip==24.3.1

.PHONY: demo test test-slow test-readme test-arm64 bench system-deps clean

$(STAMP): setup.py constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q $(PIP_PIN)
	$(PY) -m pip install -q -c constraints.txt -e ".[convert,onnx,runtime,dev,ansible]"
	touch $(STAMP)

## make demo: convert the shipped demo model for the host and time early exit against full depth
demo: $(STAMP)
	$(VENV)/bin/edgekit demo

## make test: the default test run (well under 20 minutes on 2 cores)
test: $(STAMP) system-deps
	$(PY) -m pytest -q -m "not slow"

## make test-slow: the tests marked slow
test-slow: $(STAMP) system-deps
	$(PY) -m pytest -q -m slow

## make test-readme: every `$ edgekit ...` command of README.md, in order, in a scratch directory with a fresh
## HOME; board commands run against a loopback sshd (tests/test_readme.py, marked slow: about 10 minutes)
test-readme: $(STAMP) system-deps
	$(PY) -m pytest -q tests/test_readme.py

## make test-arm64: the bundle on emulated Raspberry Pi stacks (arm64 Debian 12 / Python 3.11 / tflite-runtime
## 2.14 and Debian 11 / Python 3.9 / tflite-runtime 2.13, under qemu-user, root needed), compared with x86;
## exit 3 = skipped, never a pass (tests/emulated/)
test-arm64: $(STAMP)
	$(PY) tests/emulated/run_arm64.py

## make bench: the benchmark suite in benchmarks/
bench: $(STAMP)
	$(PY) benchmarks/run_all.py

system-deps:
	bash scripts/system-deps.sh

clean:
	rm -rf $(VENV) .pytest_cache
