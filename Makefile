# The two set-up commands (see README): `make demo` runs the pipeline on the bundled sample corpus,
# `make test` runs the tests. Both set up ./.venv first (scripts/setup.sh, idempotent).
LAKE ?= lake
PY := .venv/bin/python

.PHONY: setup demo test bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) jobs/pipeline.py --lake $(LAKE)

test: setup
	.venv/bin/pytest -q -p no:cacheprovider

clean:
	rm -rf $(LAKE) out runs
