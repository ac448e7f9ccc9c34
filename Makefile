# The two set-up commands (see README): `make demo` runs the pipeline on the bundled sample corpus,
# `make test` runs the tests. Both set up ./.venv first (scripts/setup.sh, idempotent).
LAKE ?= lake
PY := .venv/bin/python

.PHONY: setup demo test bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) jobs/pipeline.py --lake $(LAKE)

# The whole suite on the default backend (native delta-spark where set-up fetched its JARs), then the table, guarantee,
# object-storage and pipeline-digest tests again on the delta-rs fallback (no Delta JARs on the classpath), so both
# backends stay tested.
test: setup
	.venv/bin/pytest -q -p no:cacheprovider
	LMR_TABLE_BACKEND=delta-rs .venv/bin/pytest -q -p no:cacheprovider tests/test_tables.py tests/test_guarantees.py \
		tests/test_delta_backends.py tests/test_object_storage.py tests/test_pipeline.py

clean:
	rm -rf $(LAKE) out runs
