# The two commands: `sudo make demo` and `sudo make test`. Both start with the idempotent install.
SHELL := /bin/bash
PY := .venv/bin/python
RYU_PY := .venv-ryu/bin/python
PYTEST_FLAGS ?= -q

.PHONY: install ryu-env test unit integration demo bench clean-venvs

install:
	@tools/install.sh

# Real Ryu 4.34 needs Python 3.9 (its eventlet 0.30.2 fails on 3.10+): built when pyenv
# (or the system) has 3.9, else skipped with a clear line.
ryu-env: install
	@tools/ryu-env.sh

# Unit tests under os-ken, then under real Ryu, then every integration test (root, real OVS).
test: install ryu-env
	$(PY) -m pytest $(PYTEST_FLAGS) tests/unit
	@if [ -x $(RYU_PY) ]; then \
	    echo "== unit tests under real Ryu 4.34 =="; \
	    SDNMIG_PLATFORM=ryu $(RYU_PY) -m pytest $(PYTEST_FLAGS) -p no:cacheprovider tests/unit; \
	else echo "test: real-Ryu unit run skipped (no .venv-ryu: see 'make ryu-env')"; fi
	SDNMIG_REQUIRE_INTEGRATION=1 $(PY) -m pytest $(PYTEST_FLAGS) tests/integration

unit: install
	$(PY) -m pytest $(PYTEST_FLAGS) tests/unit

integration: install ryu-env
	SDNMIG_REQUIRE_INTEGRATION=1 $(PY) -m pytest $(PYTEST_FLAGS) tests/integration

demo: install
	$(PY) -m sdnmig.demo

# Every experiment in full (each also takes --quick).
bench: install ryu-env
	@set -e; for x in experiments/ofbench.py experiments/pingall.py experiments/meta_migration.py experiments/client_costs.py experiments/lime.py experiments/vnm.py experiments/cpm.py; do echo "== $$x =="; $(PY) $$x --out results; done

clean-venvs:
	rm -rf .venv .venv-ryu
