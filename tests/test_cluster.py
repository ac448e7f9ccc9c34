"""A real Spark standalone cluster: master + 2 workers (1 core, 1g each) on loopback, started from the pyspark
installation, running `spark-submit --master spark://... jobs/dedup.py` with the code shipped as a --py-files zip.

* the cluster's `deduped` / `duplicates` equal a local-mode run of the same job on a copy of the same lake;
* `jobs/pack.py` on the cluster writes the same shard bytes as a local-mode run;
* with LMR_CLUSTER_DRILL=1: a driver that dies between two table commits (LMR_FAIL_AFTER_WRITE) is re-run on the
  cluster to a consistent lake: conservation in the one metrics row, ids unique, deduped + duplicates == input, one
  commit per table;
* stopping the cluster leaves no process (every process it starts carries a marker in its environment).

The timed SIGKILLs (an executor, the driver) are in scripts/failure_drill.py, whose output docs/cluster.md quotes.
"""
import os
import shutil
import sys

import pytest

pytestmark = pytest.mark.slow   # local and cluster runs of dedup and pack: ~4.5 min on 2 cores

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))

import failure_drill as drill  # noqa: E402
from cluster import StandaloneCluster, make_code_zip, marked_pids  # noqa: E402


@pytest.fixture(scope="module")
def base_lake(spark, tmp_path_factory):
    """A lake whose `filtered` holds 352 real-text documents with planted duplicates, and the local-mode result."""
    from jobs.dedup import main

    root = tmp_path_factory.mktemp("cluster-lakes")
    base, ref = str(root / "base"), str(root / "reference")
    expected = drill.build_lake(spark, base)
    shutil.copytree(base, ref)
    assert main(["--lake", ref] + drill.DEDUP_ARGS) == 0          # in-process, local[2], 4 shuffle partitions
    drill.check_lake(ref, expected=expected)                       # exactly the planted duplicates are removed
    return {"root": root, "base": base, "reference": drill.outputs(ref), "expected": expected}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = StandaloneCluster(str(tmp_path_factory.mktemp("spark-cluster")), workers=2, cores=1, memory="1g")
    c.start()
    try:
        yield c
    finally:
        pids_before = marked_pids(c.token)
        c.stop()
        assert pids_before, "the cluster's processes were not found by their marker"
        assert marked_pids(c.token) == []


def _copy(base_lake, name):
    lake = str(base_lake["root"] / name)
    shutil.copytree(base_lake["base"], lake)
    return lake


def test_code_zip_holds_the_packages(tmp_path):
    import zipfile

    names = zipfile.ZipFile(make_code_zip(str(tmp_path / "code.zip"))).namelist()
    assert {"jobs/dedup.py", "jobs/session.py", "udfs/minhash.py", "udfs/__init__.py", "model/gpt.py"} <= set(names)
    assert not [n for n in names if "__pycache__" in n or not n.endswith(".py")]


def test_cluster_dedup_equals_local_mode(base_lake, cluster):
    lake = _copy(base_lake, "lake-cluster")
    sub = cluster.submit("jobs/dedup.py", ["--lake", lake] + drill.DEDUP_ARGS)
    rc = sub.wait(timeout=900)
    assert rc == 0, sub.log()[-4000:]
    assert drill.outputs(lake) == base_lake["reference"]
    fig = drill.check_lake(lake, reference=base_lake["reference"], expected=base_lake["expected"])
    assert (fig["docs_in"], fig["docs_out"], fig["docs_rejected"]) == (352, 272, 80)
    assert fig["reasons"] == {"exact": 16, "minhash": 64}

    # it really ran on the cluster: one executor per worker, and both executed tasks
    app = sub.cluster_app_id()
    assert app and app.startswith("app-"), sub.log()[-2000:]
    assert len(cluster.executors_launched(app)) == 2
    for wdir in cluster.worker_dirs:
        (ex,) = os.listdir(os.path.join(wdir, app))
        with open(os.path.join(wdir, app, ex, "stderr"), errors="replace") as f:
            assert "Running task" in f.read()
    assert "spark://127.0.0.1:" in " ".join(sub.argv) and "--py-files" in sub.argv


def test_cluster_pack_equals_local_mode(base_lake, cluster):
    """Pack's encode tasks write pieces that other executors' assemble tasks read: the shards from the cluster
    (2 executors) are byte-identical to an in-process local-mode run with another partition count."""
    import json

    from jobs.pack import main as pack_main, verify_packed

    lake = _copy(base_lake, "lake-pack")
    args = ["--input-table", "filtered", "--shard-tokens", "3000", "--val-fraction", "0.1", "--force"]
    on_cluster, local = os.path.join(lake, "packed-cluster"), os.path.join(lake, "packed-local")
    sub = cluster.submit("jobs/pack.py", ["--lake", lake, "--out", on_cluster] + args)
    assert sub.wait(timeout=900) == 0, sub.log()[-4000:]
    assert pack_main(["--lake", lake, "--out", local] + args) == 0
    a, b = (verify_packed(d) for d in (on_cluster, local))
    assert a["files"] == b["files"] and len(a["files"]) > 4
    assert a["splits"] == b["splits"] and a["splits"]["val"]["documents"] > 0
    assert not [f for f in os.listdir(lake) if "-tmp-" in f]  # no temporary folder (pieces live inside it) left
    assert json.load(open(os.path.join(on_cluster, "manifest.json")))["source"]["table"] == "filtered"


@pytest.mark.skipif(os.environ.get("LMR_CLUSTER_DRILL") != "1",
                    reason="two more cluster runs (~5 min on 2 cores): set LMR_CLUSTER_DRILL=1; the full drill is "
                           "scripts/failure_drill.py")
def test_driver_dies_between_commits_then_rerun(base_lake, cluster):
    lake = _copy(base_lake, "lake-die-after-deduped")
    res = drill.run_scenario("die-after-deduped", cluster, lake)   # asserts exit 137, then 0 for the re-run
    assert res["first_rc"] == 137 and res["rerun_rc"] == 0
    # the dead run left `deduped` committed, nothing else; the re-run kept that commit instead of writing again
    assert res["commits_after_kill"] == {"deduped": 1, "duplicates": 0, "metrics": 0}
    assert any("deduped already holds this run's output" in line for line in res["rerun_log"]), res["rerun_log"]
    fig = drill.check_lake(lake, reference=base_lake["reference"])
    assert fig["commits"] == {"deduped": 1, "duplicates": 1, "metrics": 1}
    assert fig["orphan_files"] == {"deduped": 0, "duplicates": 0, "metrics": 0}
