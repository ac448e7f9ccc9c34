# The two set-up commands (see README): `make demo` runs the pipeline on the bundled sample corpus,
# `make test` runs the tests. Both set up ./.venv first (scripts/setup.sh, idempotent).
LAKE ?= lake
PY := .venv/bin/python

.PHONY: setup demo test bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) jobs/pipeline.py --lake $(LAKE)

# The two-backend tests on the default backend (native delta-spark where set-up fetched its JARs), then the whole suite
# on the delta-rs fallback (no JARs on the classpath), so both backends stay tested. The whole suite has not yet
# passed on the native backend (test_tables has one failure there; see issue 16); the demo and the digest do.
test: setup
	.venv/bin/pytest -q -p no:cacheprovider tests/test_delta_backends.py
	LMR_TABLE_BACKEND=delta-rs .venv/bin/pytest -q -p no:cacheprovider

clean:
	rm -rf $(LAKE) out runs
