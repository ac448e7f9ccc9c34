"""jobs/pipeline.py, the README's main command: every stage on the bundled sample, a short training run, a sample
and the report; a second run skips every stage and leaves every table version and the shards untouched."""
import json
import os

import pytest

from jobs import pipeline
from jobs.cli import run_main
from jobs.pack import verify_packed
from jobs.tables import Lake

TABLES = ["documents", "quarantine", "filtered", "rejected", "deduped", "duplicates", "decontaminated",
          "contaminated", "mixed", "metrics"]
ARGV_TRAIN = ["--train-steps", "4", "--set", "pipeline.train.overrides=warmup_steps=1,eval_interval=4,log_interval=2",
              "--set", "pipeline.sample.max_tokens=8"]


@pytest.fixture(scope="module")
def first_run(spark, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("pipeline") / "lake")
    assert pipeline.main(["--lake", root] + ARGV_TRAIN) == 0
    return root


def _versions(spark, root):
    lake = Lake(spark, root)
    return {t: lake.version(t) for t in TABLES if lake.exists(t)}


def test_every_stage_wrote_its_tables_and_the_run_trained(spark, first_run):
    versions = _versions(spark, first_run)
    missing = [t for t in TABLES if t not in versions]
    assert not missing, missing
    lake = Lake(spark, first_run)
    stages = {r["stage"] for r in lake.read_arrow("metrics").to_pylist()}
    assert set(pipeline.STAGES) <= stages
    m = verify_packed(os.path.join(first_run, "packed"))
    assert m["splits"]["train"]["tokens"] > 0 and m["splits"]["val"]["tokens"] > 0
    assert m["source"]["table"] == "mixed" and m["source"]["version"] == versions["mixed"]
    summary = json.load(open(os.path.join(first_run, "runs", "tiny", "summary.json")))
    assert summary["step"] == summary["max_steps"] == 4 and summary["finished"], summary
    assert os.path.getsize(os.path.join(first_run, "report.html")) > 10_000


def test_second_run_skips_every_stage(spark, first_run, capfd):
    before = _versions(spark, first_run)
    manifest = open(os.path.join(first_run, "packed", "manifest.json")).read()
    ckpt_mtime = os.path.getmtime(os.path.join(first_run, "runs", "tiny", "ckpt.pt"))
    capfd.readouterr()
    assert pipeline.main(["--lake", first_run] + ARGV_TRAIN) == 0
    err = capfd.readouterr().err
    assert _versions(spark, first_run) == before
    assert open(os.path.join(first_run, "packed", "manifest.json")).read() == manifest
    assert os.path.getmtime(os.path.join(first_run, "runs", "tiny", "ckpt.pt")) == ckpt_mtime
    for stage in pipeline.STAGES:
        assert any(f"] {stage}: " in line and "skipping" in line for line in err.splitlines()), stage
    assert "already trained" in err


def test_bad_stage_name_is_a_one_line_error(capsys):
    assert run_main("pipeline", pipeline.main, ["--lake", "unused", "--stages", "ingest,dedupe"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dedupe" in err[0] and "stages are ingest" in err[0]


def test_tables_and_shards_match_the_committed_digest(first_run):
    """Refactorings keep the bundled sample's tables and shards byte for byte: tests/data/sample_digest.json was
    written by scripts/lake_digest.py from a pipeline run (regenerate it only for an intended change of output)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("lake_digest", os.path.join(os.path.dirname(__file__), "..",
                                                                             "scripts", "lake_digest.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    got = mod.lake_digest(first_run)
    want = json.load(open(os.path.join(os.path.dirname(__file__), "data", "sample_digest.json")))
    assert got["packed"] == want["packed"]
    assert {t: d["rows"] for t, d in got["tables"].items()} == {t: d["rows"] for t, d in want["tables"].items()}
    assert got == want
