"""Guarantees the stages share: strict config, containment, concurrency, leftovers, one-line edge errors, and an
import graph without cycles where model/ does not depend on jobs/."""
import ast
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from jobs.tables import Lake, committed_folders

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROSE = "The quick brown fox jumps over the lazy dog while the farmer watches from the porch."


def _job(*args, env=None, timeout=300):
    e = {**os.environ, "LMR_SPARK_LOG_LEVEL": "ERROR", **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=e)


def _last_line(p):
    return p.stderr.strip().splitlines()[-1]


# ---- strict configuration -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage,key,hint", [
    ("ingest", "ingest.max_doc_byte=5", "ingest.max_doc_bytes"),
    ("filter", "filter.langid.treshold=0.5", "filter.langid.threshold"),
    ("dedup", "dedup.thresholdd=0.5", "dedup.threshold"),
    ("decontaminate", "decontaminate.ngramm=8", "decontaminate.ngram"),
    ("mix", "mix.max_epoch=2", "mix.max_epochs"),
    ("pack", "pack.shard_token=10", "pack.shard_tokens"),
    ("train_tokenizer", "train_tokenizer.vocab=100", "train_tokenizer.vocab_size"),
    ("pipeline", "pipeline.stage=[ingest]", "pipeline.stages"),
])
def test_unknown_key_is_one_line_naming_the_nearest(stage, key, hint, tmp_path):
    extra = ["--out", str(tmp_path / "tok")] if stage == "train_tokenizer" else []
    p = _job(f"jobs/{stage}.py", "--lake", str(tmp_path / "lake"), "--set", key, *extra)
    assert p.returncode == 2, p.stderr[-2000:]
    assert _last_line(p) == (f"{stage}: error: --set: unknown config key {key.split('=')[0]!r} "
                             f"(did you mean {hint!r}?)")
    assert "Traceback" not in p.stderr and not os.path.exists(tmp_path / "lake")


def test_wrong_type_and_bad_yaml_file_are_refused(tmp_path):
    p = _job("jobs/dedup.py", "--lake", str(tmp_path / "lake"), "--set", "dedup.threshold=abc")
    assert p.returncode == 2 and _last_line(p) == "dedup: error: --set: config key 'dedup.threshold' must be a " \
                                                  "number, got 'abc'"
    conf = tmp_path / "my.yaml"
    conf.write_text("mix:\n  strategy: uniform_doc\n  tokn_budget: 5\n")
    p = _job("jobs/mix.py", "--lake", str(tmp_path / "lake"), "--conf", str(conf))
    assert p.returncode == 2
    assert _last_line(p) == f"mix: error: {conf}: unknown config key 'mix.tokn_budget' (did you mean " \
                            f"'mix.token_budget'?)"
    p = _job("model/train.py", "--data", str(tmp_path), "--set", "max_stepz=3")
    assert p.returncode == 2 and "unknown config key 'max_stepz' (did you mean 'max_steps'?)" in _last_line(p)


# ---- containment ------------------------------------------------------------------------------------------------
def test_table_names_cannot_leave_the_lake(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": PROSE}) + "\n")
    lake = tmp_path / "lake"
    for bad in ("../escaped_docs", "/tmp/abs_docs", "a/b", ".."):
        p = _job("jobs/ingest.py", "--lake", str(lake), "--input", str(src), "--format", "jsonl", "--source", "s",
                 "--domain", "d", "--output-table", bad)
        assert p.returncode == 2, p.stderr[-1500:]
        assert _last_line(p).startswith(f"ingest: error: table name {bad!r} is not a plain name")
    assert not os.path.exists(tmp_path / "escaped_docs") and not os.path.exists("/tmp/abs_docs")


# ---- concurrency ----------------------------------------------------------------------------------------------------
def _ingest_cmd(lake, src, source, *extra):
    return [sys.executable, os.path.join(REPO, "jobs", "ingest.py"), "--lake", lake, "--input", str(src),
            "--format", "jsonl", "--source", source, "--domain", "d", "--master", "local[1]", *extra]


def _wait_for_lease(lake, name, proc, timeout=180):
    path = os.path.join(lake, "_leases", f"{name}.lease")
    deadline = time.time() + timeout
    while time.time() < deadline and not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        time.sleep(0.1)
    assert os.path.exists(path)
    return json.load(open(path))


@pytest.mark.parametrize("mode", ["append", "overwrite"])
def test_racing_writers_never_duplicate_or_lose_silently(spark, tmp_path, mode):
    """Two ingests into one lake at the same time: the second fails with one line naming the table and the run
    that holds it; the first one's rows are there once. Appending the same source twice stays one copy."""
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps({"text": f"{PROSE} a{i}"}) + "\n" for i in range(300)))
    b.write_text("".join(json.dumps({"text": f"{PROSE} b{i}"}) + "\n" for i in range(40)))
    lake = str(tmp_path / "lake")
    flag = ["--append"] if mode == "append" else []
    env = {**os.environ, "LMR_SPARK_LOG_LEVEL": "ERROR"}
    first = subprocess.Popen(_ingest_cmd(lake, a, "a", *flag), env={**env, "LMR_PAUSE_AFTER_LEASE": "25"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lease = _wait_for_lease(lake, "documents", first)
    second_src, second_name = (a, "a") if mode == "append" else (b, "b")
    second = subprocess.run(_ingest_cmd(lake, second_src, second_name, *flag), env=env, capture_output=True,
                            text=True, timeout=300)
    assert second.returncode == 2, second.stderr[-2000:]
    line = _last_line(second)
    assert line.startswith("ingest: error: 'documents' is being written by another run: ingest run ") \
        or line.startswith("ingest: error: 'quarantine' is being written by another run: ingest run "), line
    assert lease["run_id"] in line and f"pid {first.pid}" in line
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err.decode()[-2000:]
    docs = Lake(spark, lake).read("documents")
    assert docs.count() == 300 and docs.select("id").distinct().count() == 300
    # the same append again, now that nobody holds the table: skipped, still one copy
    again = subprocess.run(_ingest_cmd(lake, a, "a", *flag), env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert Lake(spark, lake).read("documents").count() == 300
    assert not os.listdir(os.path.join(lake, "_leases"))  # every lease released


_RACER = """
import sys, time
from jobs.leases import LeaseError, Leases
lake, i = sys.argv[1], sys.argv[2]
while time.time() < float(sys.argv[3]):
    time.sleep(0.001)
try:
    Leases(lake, "run-" + i, "ingest").acquire(["documents"])
    print("got", flush=True)
    time.sleep(1.5)
except LeaseError as e:
    print("refused", e, flush=True)
"""


def test_a_lease_file_is_never_seen_empty_and_one_racer_wins(tmp_path):
    """Eight processes race for one lease while this test reads the lease file as fast as it can: exactly one wins,
    the seven others are refused naming the winner's run, and no read ever sees a half-written lease."""
    lake = str(tmp_path / "lake")
    path = os.path.join(lake, "_leases", "documents.lease")
    start = time.time() + 2.0
    env = {**os.environ, "PYTHONPATH": REPO}
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, lake, str(i), str(start)], env=env,
                              stdout=subprocess.PIPE, text=True) for i in range(8)]
    reads, bad = 0, []
    while any(p.poll() is None for p in procs):
        try:
            with open(path) as f:
                body = f.read()
        except FileNotFoundError:
            continue
        reads += 1
        try:
            json.loads(body)
        except ValueError:
            bad.append(body)
    outs = [p.communicate()[0].strip() for p in procs]
    winners = [o for o in outs if o == "got"]
    assert len(winners) == 1, outs
    winner = f"run-{outs.index('got')}"
    assert all(o.startswith("refused 'documents' is being written by another run: ingest run " + winner)
               for o in outs if o != "got"), outs
    assert reads > 0 and not bad, (reads, bad[:3])
    assert not [f for f in os.listdir(os.path.dirname(path)) if ".new-" in f]  # no private record left behind


# ---- leftovers -----------------------------------------------------------------------------------------------------
def test_leftovers_of_a_killed_write_go_with_the_next_run_and_vacuum(spark, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": f"{PROSE} {i}"}) + "\n" for i in range(2000)))
    lake = str(tmp_path / "lake")
    env = {**os.environ, "LMR_SPARK_LOG_LEVEL": "ERROR"}
    # a first committed version, so that the killed run's folder is one the log does not know
    assert subprocess.run(_ingest_cmd(lake, src, "s"), env=env, capture_output=True, timeout=300).returncode == 0
    p = subprocess.Popen(_ingest_cmd(lake, src, "s", "--force"), env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True)
    docs_dir = os.path.join(lake, "documents")
    known = committed_folders(docs_dir)
    deadline = time.time() + 240
    while time.time() < deadline and not any(d.startswith("w-") and d not in known for d in os.listdir(docs_dir)):
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.communicate(timeout=60)
    leftovers = [d for d in os.listdir(docs_dir) if d.startswith("w-") and d not in committed_folders(docs_dir)]
    assert leftovers, "the kill came too late to leave a write folder"
    # vacuum --dry-run lists it; the next run of the stage removes it
    v = _job("jobs/vacuum.py", "--lake", lake, "--dry-run")
    assert v.returncode == 0 and all(f"documents/{d}" in v.stderr for d in leftovers), v.stderr
    r = subprocess.run(_ingest_cmd(lake, src, "s", "--force"), env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "uncommitted write folder(s) of dead runs from documents" in r.stderr
    assert not any(d in os.listdir(docs_dir) for d in leftovers)
    assert Lake(spark, lake).read("documents").count() == 2000
    # vacuum: a fake dead pack folder and a fake dead write folder go; committed data stays readable
    os.makedirs(os.path.join(lake, ".packed-tmp-0123456789ab", "pieces-0"))
    os.makedirs(os.path.join(docs_dir, "w-19700101T000000-deadbeef0000"))
    v = _job("jobs/vacuum.py", "--lake", lake)
    assert v.returncode == 0 and "removed 2 leftover folder(s)" in v.stderr, v.stderr
    assert not os.path.exists(os.path.join(lake, ".packed-tmp-0123456789ab"))
    assert Lake(spark, lake).read("documents").count() == 2000


# ---- errors at the edges ----------------------------------------------------------------------------------------
def _lake_with_documents(tmp_path):
    import pyarrow as pa
    from deltalake import write_deltalake

    from jobs.schema import document_row

    root = tmp_path / "lake"
    rows = [document_row(f"s/{i}", f"{PROSE} {i}") for i in range(5)]
    t = pa.Table.from_pylist([{k: v for k, v in r.items()} for r in rows])
    write_deltalake(str(root / "documents"), t)
    return str(root)


def test_broken_lakes_are_one_line_errors(spark, tmp_path, capsys):
    from jobs import filter as filter_job
    from jobs.cli import run_main

    lake = _lake_with_documents(tmp_path / "a")
    log_file = os.path.join(lake, "documents", "_delta_log", "00000000000000000000.json")
    with open(log_file, "a") as f:
        f.write('{"commitInfo" {broken\n')
    assert run_main("filter", filter_job.main, ["--lake", lake]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"filter: error: table 'documents' at {lake}/documents: log file {log_file} does not parse"
    assert not any("Traceback" in x for x in err)

    lake = _lake_with_documents(tmp_path / "b")
    data = [f for f in os.listdir(os.path.join(lake, "documents")) if f.endswith(".parquet")][0]
    os.remove(os.path.join(lake, "documents", data))
    assert run_main("filter", filter_job.main, ["--lake", lake]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("filter: error: table 'documents' (version 0): data file ") and data in last \
        and "is missing" in last

    not_a_dir = tmp_path / "lakefile"
    not_a_dir.write_text("x")
    assert run_main("filter", filter_job.main, ["--lake", str(not_a_dir)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f"filter: error: lake {not_a_dir} is a file, not a folder (--lake names the folder of the tables)"
    # --debug shows the traceback of the same error
    assert run_main("filter", filter_job.main, ["--lake", str(not_a_dir), "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err
    os.environ.pop("LMR_DEBUG", None)


def test_trainer_refuses_manifest_names_outside_its_folder(tmp_path):
    from model.data import PackedSplit, ShardError

    packed = tmp_path / "packed"
    packed.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\0" * 8)
    manifest = {"tokenizer": {"vocab_size": 50257, "eos_id": 50256}, "dtype": "uint16",
                "files": {"../secret.bin": {"bytes": 8, "sha256": "0"}},
                "splits": {"train": {"tokens": 4, "shards": [{"bin": "../secret.bin", "idx": "x.idx", "tokens": 4,
                                                              "documents": 1}]}}}
    (packed / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match=r"names shard file '../secret.bin', which is not a plain file name"):
        PackedSplit(str(packed), "train", manifest=manifest)


# ---- import graph --------------------------------------------------------------------------------------------------
def _import_graph():
    pkgs = ("jobs", "udfs", "model")
    graph = {}
    for pkg in pkgs:
        for fn in sorted(os.listdir(os.path.join(REPO, pkg))):
            if not fn.endswith(".py"):
                continue
            tree = ast.parse(open(os.path.join(REPO, pkg, fn), encoding="utf-8").read())
            deps = set()
            for node in ast.walk(tree):  # function-level imports count too
                if isinstance(node, ast.Import):
                    deps |= {a.name for a in node.names if a.name.split(".")[0] in pkgs}
                elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in pkgs:
                    deps |= ({f"{node.module}.{a.name}" for a in node.names} if node.module in pkgs
                             else {node.module})
            graph[f"{pkg}.{fn[:-3]}"] = deps
    return graph


def test_import_graph_has_no_cycle_and_model_does_not_import_jobs():
    graph = _import_graph()
    assert len(graph) > 30
    assert {(m, d) for m, ds in graph.items() if m.startswith("model.") for d in ds if d.startswith("jobs.")} == set()
    assert {(m, d) for m, ds in graph.items() if m.startswith("udfs.") for d in ds
            if not d.startswith("udfs.")} == set()
    state, cycles = {}, []

    def visit(u, stack):
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if v not in graph:
                continue
            if state.get(v) == 1:
                cycles.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v, stack)
        stack.pop()
        state[u] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert cycles == []
    # the check is not a formality: a cycle planted in a copy of the graph is found
    graph["udfs.common"] = graph["udfs.common"] | {"udfs.records"}
    graph["udfs.records"] = graph["udfs.records"] | {"udfs.common"}
    state.clear()
    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert cycles


# ---- the stage contract --------------------------------------------------------------------------------------------
def test_every_pipeline_stage_is_a_declared_stage():
    import importlib

    from jobs.runner import Stage
    from jobs.stage import PIPELINE

    for name in PIPELINE:
        mod = importlib.import_module(f"jobs.{name}")
        assert isinstance(mod.STAGE, Stage) and mod.STAGE.name == name, name
        assert mod.main.__doc__.startswith(f"Run the {name} stage"), name


def test_help_lists_every_parameter_with_its_default(capsys):
    from jobs import mix

    with pytest.raises(SystemExit):
        mix.main(["--help"])
    out = capsys.readouterr().out
    for line in ("mix.strategy = proportional", "mix.max_epochs = 4", "mix.seed = 1234", "--max-epochs MAX_EPOCHS"):
        assert line in out, line


def test_a_new_stage_is_one_declaration(spark, tmp_path, capfd):
    """A stage declared in a few lines gets the CLI, input pinning, leases, skip-if-done and metrics."""
    from pyspark.sql import functions as F

    from jobs import ingest
    from jobs.runner import Flag, Stage, run_stage

    def plan(ctx):
        df = ctx.input()
        out = df.withColumn("text", F.upper("text"))
        ctx.run.write(out, ctx.output)
        n = df.count()
        ctx.run.finish(docs_in=n, docs_out=n, docs_rejected=0)

    shout = Stage(name="shout", doc="Upper-case every document.", input_table="documents",
                  outputs={"output_table": "shouted"}, plan=plan,
                  flags=[Flag("--dry", None, "unused", store_true=True, default=False)])
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": f"{PROSE} {i}"}) + "\n" for i in range(10)))
    lake = str(tmp_path / "lake")
    assert ingest.main(["--lake", lake, "--input", str(src), "--format", "jsonl", "--source", "s",
                        "--domain", "d"]) == 0
    assert run_stage(shout, ["--lake", lake]) == 0
    lk = Lake(spark, lake)
    assert {r["text"] for r in lk.read("shouted").collect()} == {f"{PROSE} {i}".upper() for i in range(10)}
    v = lk.version("shouted")
    capfd.readouterr()
    assert run_stage(shout, ["--lake", lake]) == 0
    assert lk.version("shouted") == v and "shout: already done" in capfd.readouterr().err
    assert [r["stage"] for r in lk.read_arrow("metrics").to_pylist()].count("shout") == 1
    from jobs.tables import TableError

    with pytest.raises(TableError, match="not a plain name"):
        run_stage(shout, ["--lake", lake, "--output-table", "../out"])


def test_dedup_rerun_after_both_commits_does_not_recompute(spark, tmp_path):
    """The driver dies after committing both tables, before the metrics row: the re-run records the metrics from
    the committed tables instead of deduplicating again."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from jobs.schema import document_row

    lake = str(tmp_path / "lake")
    texts = [f"{PROSE} number {i} of the series, with more words to shingle" for i in range(20)]
    rows = [document_row(f"s/{i}", t) for i, t in enumerate(texts + texts[:5])]
    rows = [dict(r, id=f"s/{i}") for i, r in enumerate(rows)]
    write_deltalake(os.path.join(lake, "filtered"), pa.Table.from_pylist(rows))
    p = _job("jobs/dedup.py", "--lake", lake, "--master", "local[1]", env={"LMR_FAIL_AFTER_WRITE": "duplicates"})
    assert p.returncode == 137, p.stderr[-2000:]
    lk = Lake(spark, lake)
    assert lk.exists("deduped") and lk.exists("duplicates") and not lk.exists("metrics")
    versions = (lk.version("deduped"), lk.version("duplicates"))
    p = _job("jobs/dedup.py", "--lake", lake, "--master", "local[1]")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "recording the metrics from them without computing again" in p.stderr
    assert "dedup: LSH" not in p.stderr  # no dedup work was started
    assert (lk.version("deduped"), lk.version("duplicates")) == versions
    (m,) = [r for r in lk.read_arrow("metrics").to_pylist() if r["stage"] == "dedup"]
    assert (m["docs_in"], m["docs_out"], m["docs_rejected"]) == (25, 20, 5) and dict(m["reasons"])["exact"] == 5


def test_a_killed_pack_leaves_nothing_after_the_next_run(spark, tmp_path):
    import pyarrow as pa
    from deltalake import write_deltalake

    from jobs.schema import document_row

    lake = str(tmp_path / "lake")
    rows = [document_row(f"s/{i}", f"{PROSE} Document {i}. " * 20) for i in range(300)]
    write_deltalake(os.path.join(lake, "mixed"), pa.Table.from_pylist(rows))
    env = {**os.environ, "LMR_SPARK_LOG_LEVEL": "ERROR"}
    cmd = [sys.executable, os.path.join(REPO, "jobs", "pack.py"), "--lake", lake, "--master", "local[1]"]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not any(d.startswith(".packed-tmp-") for d in os.listdir(lake)):
        assert p.poll() is None, p.communicate()[1].decode()[-2000:]
        time.sleep(0.05)
    time.sleep(1.0)  # let it write into the temporary folder
    os.killpg(p.pid, signal.SIGKILL)
    p.communicate(timeout=60)
    left = [d for d in os.listdir(lake) if d.startswith(".packed-tmp-")]
    assert left and not os.path.exists(os.path.join(lake, "packed", "manifest.json"))
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "left by a pack run that died" in r.stderr
    assert not [d for d in os.listdir(lake) if d.startswith(".packed-tmp-")]
    assert os.path.exists(os.path.join(lake, "packed", "manifest.json"))
    assert not os.listdir(os.path.join(lake, "_leases"))


def test_progress_lines_at_a_steady_interval_read_well_in_a_file(tmp_path):
    """A stage run with LMR_PROGRESS_S=1 logs progress lines naming the Spark stage, tasks done and an ETA; the log
    has no carriage return (no console progress bar) and no line longer than a screen or two."""
    import re
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": f"{PROSE} {i}"}) + "\n" for i in range(60000)))
    env = {**os.environ, "LMR_SPARK_LOG_LEVEL": "ERROR", "LMR_PROGRESS_S": "1"}
    r = subprocess.run(_ingest_cmd(str(tmp_path / "lake"), src, "s") + ["--set", "ingest.chunk_bytes=1048576", "--set", "ingest.max_task_bytes=1048576"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ": progress " in ln]
    assert len(lines) >= 2, r.stderr[-3000:]
    pat = re.compile(r"^ingest: progress \d+:\d\d:\d\d \| spark stage \d+( \(\w+\))?: \d+/\d+ tasks \(\d+%\)")
    odd = [ln for ln in lines if not pat.search(ln.split("] ", 1)[-1])]
    assert not odd, odd
    assert any("ETA" in ln for ln in lines), lines
    assert "\r" not in r.stderr and max(map(len, r.stderr.splitlines())) < 400
