# The two commands of the README. Each installs what it needs first (scripts/bootstrap.sh).
SHELL := /bin/bash
VENV := .venv
KVPATH := $(VENV)/bin/kvpath
# Test parallelism: two workers fit the 2-core machines this project is built and checked on.
JOBS ?= 2

.PHONY: demo test bootstrap clean

bootstrap:
	@scripts/bootstrap.sh

demo: bootstrap
	@scripts/demo.sh

test: bootstrap
	$(VENV)/bin/python -m pytest -n $(JOBS) -q -rs

clean:
	rm -rf build .pytest_cache
