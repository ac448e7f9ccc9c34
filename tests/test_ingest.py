"""Ingest: every format, every quarantine reason, conservation, stable ids, idempotent and crash-safe re-runs."""
import gzip
import json
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from jobs import ingest
from jobs.tables import Lake

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROSE = ("The quick brown fox jumps over the lazy dog while the farmer watches from the porch. " * 3).strip()


def make_corpus(root):
    """A small corpus in every format with one instance of every malformation."""
    os.makedirs(root / "web", exist_ok=True)
    good = [{"id": f"w{i}", "url": f"https://example.org/{i}", "text": f"{PROSE} Page {i}.", "crawl": "2026"}
            for i in range(6)]
    lines = [json.dumps(g) for g in good[:3]]
    lines += ['{"id": "bad1", "text": "unterminated', "[1, 2, 3]", json.dumps({"id": "nt", "body": "x"}),
              json.dumps({"id": "num", "text": 42}), json.dumps({"id": "nul", "text": None}),
              json.dumps({"id": "ws", "text": " \n\t "}), json.dumps({"id": "big", "text": "a" * 3000}),
              "", json.dumps({"id": "w1", "text": "same id as an earlier record"}),
              '{"id": "sur", "text": "lone \\ud800 surrogate"}']
    raw = ("\n".join(lines) + "\n").encode() + b'{"id": "u8", "text": "caf\xe9 latin-1"}\n'
    (root / "web" / "a.jsonl").write_bytes(raw)
    with gzip.open(root / "web" / "b.jsonl.gz", "wb") as f:
        f.write(("\n".join(json.dumps(g) for g in good[3:]) + "\n").encode())
    os.makedirs(root / "books", exist_ok=True)
    (root / "books" / "one.txt").write_text(PROSE + "\n\n" + PROSE + "\n")
    (root / "books" / "empty.txt").write_text("   \n")
    os.makedirs(root / "paras", exist_ok=True)
    (root / "paras" / "p.txt").write_bytes(
        b"First paragraph line one.\nline two.\n\n\nSecond paragraph.\n  \nThird \xff bad.\n")
    os.makedirs(root / "code", exist_ok=True)
    pq.write_table(pa.table({"path": ["a.py", "b.py", "c.py"], "content": ["print('hi')\n", None, ""],
                             "stars": [1, 2, 3]}), root / "code" / "c.parquet", row_group_size=2)
    os.makedirs(root / "forum", exist_ok=True)
    (root / "forum" / "f.csv").write_bytes(
        b'post_id,title,body\n1,Hello,"A body\nspanning lines"\n2,No body,\n3,Bad,"bad \xfe bytes"\n4,Ok,fine text\n')
    sources = {"sources": [
        {"name": "web", "domain": "web", "format": "jsonl", "path": str(root / "web" / "*.jsonl*"),
         "id_field": "id", "url_field": "url"},
        {"name": "books", "domain": "books", "format": "text", "path": str(root / "books"), "text_mode": "file"},
        {"name": "paras", "domain": "books", "format": "text", "path": str(root / "paras" / "*.txt"),
         "text_mode": "paragraph"},
        {"name": "code", "domain": "code", "format": "parquet", "path": str(root / "code"), "text_field": "content",
         "id_field": "path"},
        {"name": "forum", "domain": "forum", "format": "csv", "path": str(root / "forum" / "*.csv"),
         "text_field": "body", "id_field": "post_id"},
    ]}
    (root / "sources.yaml").write_text(yaml.safe_dump(sources))
    return str(root / "sources.yaml")


EXPECTED_REASONS = {"invalid_json": 1, "not_an_object": 1, "missing_text_field": 3, "text_not_string": 1,
                    "empty_text": 4, "too_large": 1, "duplicate_id": 1, "invalid_unicode": 1,
                    "invalid_utf8": 3}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return make_corpus(root)


@pytest.fixture(scope="module")
def ingested(spark, corpus, tmp_path_factory):
    lake_dir = str(tmp_path_factory.mktemp("lake"))
    assert ingest.main(["--lake", lake_dir, "--sources", corpus, "--max-doc-bytes", "2000",
                        "--set", "ingest.chunk_bytes=200"]) == 0
    return Lake(spark, lake_dir)


def test_every_format_lands_with_trace(ingested):
    docs = {r["id"]: r for r in ingested.read("documents").collect()}
    by_source = {}
    for r in docs.values():
        by_source[r["source"]] = by_source.get(r["source"], 0) + 1
    assert by_source == {"web": 6, "books": 1, "paras": 2, "code": 1, "forum": 2}
    w0 = docs["web/w0"]
    assert w0["url"] == "https://example.org/0" and json.loads(w0["meta"]) == {"crawl": "2026"}
    assert w0["trace"]["line"] == 1 and w0["trace"]["byte_offset"] == 0 and w0["domain"] == "web"
    w2 = docs["web/w2"]
    assert w2["trace"]["line"] == 3
    raw = open(w2["trace"]["file"] if os.path.isabs(w2["trace"]["file"]) else os.path.join(REPO, w2["trace"]["file"]),
               "rb").read()
    assert raw[w2["trace"]["byte_offset"]:].startswith(b'{"id": "w2"')
    assert docs["web/w4"]["trace"]["file"].endswith("b.jsonl.gz") and docs["web/w4"]["trace"]["line"] == 2
    assert docs["forum/1"]["text"] == "A body\nspanning lines" and docs["forum/4"]["trace"]["row"] == 4
    assert docs["code/a.py"]["text"] == "print('hi')\n" and json.loads(docs["code/a.py"]["meta"]) == {"stars": 1}
    paras = sorted((r["trace"]["line"], r["text"]) for r in docs.values() if r["source"] == "paras")
    assert paras == [(1, "First paragraph line one.\nline two."), (5, "Second paragraph.")]
    for r in docs.values():
        assert r["n_bytes"] == len(r["text"].encode()) and r["n_tokens_est"] >= 1 and len(r["text_sha256"]) == 64


def test_each_quarantine_reason_with_raw_payload(ingested):
    q = ingested.read("quarantine").collect()
    reasons = {}
    for r in q:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    assert reasons == EXPECTED_REASONS
    by = {(r["reason"], r["id"]): r for r in q}
    assert by[("invalid_json", None)]["raw"] == b'{"id": "bad1", "text": "unterminated'
    assert by[("invalid_utf8", None)]["raw"].startswith(b'{"id": "u8"') or any(
        r["raw"] == b'{"id": "u8", "text": "caf\xe9 latin-1"}' for r in q)
    big = by[("too_large", "web/big")]
    assert big["raw_length"] > 3000 and big["raw_truncated"] is False
    dup = by[("duplicate_id", "web/w1")]
    # the later line's original bytes, and where the first one is (file:line, not a byte offset)
    assert dup["raw"] == json.dumps({"id": "w1", "text": "same id as an earlier record"}).encode()
    assert dup["trace"]["line"] == 12 and dup["raw_length"] == len(dup["raw"])
    assert dup["detail"].startswith("first seen at ") and dup["detail"].endswith("a.jsonl:2")
    assert all(r["trace"]["file"] for r in q)


def test_conservation_and_metrics(ingested):
    m = [r for r in ingested.read_arrow("metrics").to_pylist() if r["stage"] == "ingest"][-1]
    docs, quar = ingested.read("documents").count(), ingested.read("quarantine").count()
    assert m["docs_in"] == docs + quar == m["docs_out"] + m["docs_rejected"]
    assert m["docs_out"] == docs and dict(m["reasons"]) == EXPECTED_REASONS
    extra = json.loads(m["extra"])
    assert extra["duplicate_ids"] == 1 and 0 < extra["parse_failure_rate"] < 1 and extra["docs_per_s"] > 0
    # blank lines are not records but are counted: units = documents + quarantined + blank
    assert extra["blank_lines"] == 1 and extra["input_units"] == docs + quar + 1
    # where the time went: both tables' data writes and commits, the rest, within the stage's seconds (the workers
    # write both tables' files in one Spark job, whose time is the documents write's)
    t = extra["timings"]
    assert set(t["writes"]) == {"documents", "quarantine"} and all(c > 0 for _, c in t["writes"].values())
    assert t["writes"]["documents"][0] > 0 and t["write_data_s"] > 0
    assert t["write_data_s"] + t["commit_s"] + t["compute_s"] == pytest.approx(m["seconds"], abs=0.01)
    assert t["session_s"] >= 0
    audit = [json.loads(x) for x in open(os.path.join(ingested.root, "audit", "quarantine.jsonl"))]
    assert {a["reason"] for a in audit} == set(EXPECTED_REASONS)


def test_rerun_is_skipped_and_ids_are_stable(spark, corpus, ingested):
    v_docs, v_q = ingested.version("documents"), ingested.version("quarantine")
    ids_before = sorted(r["id"] for r in ingested.read("documents").select("id").collect())
    args = ["--lake", ingested.root, "--sources", corpus, "--max-doc-bytes", "2000", "--set", "ingest.chunk_bytes=200"]
    assert ingest.main(args) == 0
    assert (ingested.version("documents"), ingested.version("quarantine")) == (v_docs, v_q)
    assert ingest.main(args + ["--force", "--set", "ingest.chunk_bytes=1000000"]) == 0  # different task split
    ids_after = sorted(r["id"] for r in ingested.read("documents").select("id").collect())
    assert ids_after == ids_before


def test_append_rerun_does_not_duplicate(spark, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"text": f"{PROSE} {i}"}) for i in range(20)) + "\n")
    lake = str(tmp_path / "lake")
    args = ["--lake", lake, "--input", str(src), "--format", "jsonl", "--source", "s", "--domain", "d", "--append"]
    assert ingest.main(args) == 0 and ingest.main(args) == 0
    assert Lake(spark, lake).read("documents").count() == 20


def test_missing_input_is_one_line_error(tmp_path):
    p = subprocess.run([sys.executable, os.path.join(REPO, "jobs", "ingest.py"), "--lake", str(tmp_path / "l"),
                        "--input", str(tmp_path / "nope*.jsonl"), "--format", "jsonl", "--source", "s",
                        "--domain", "d"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1].startswith("ingest: error: source 's': no input file matches")


def _run_ingest(lake, corpus, env_extra=None):
    env = {**os.environ, **(env_extra or {}), "LMR_SPARK_LOG_LEVEL": "ERROR"}
    return subprocess.Popen([sys.executable, os.path.join(REPO, "jobs", "ingest.py"), "--lake", lake,
                             "--sources", corpus, "--master", "local[1]", "--max-doc-bytes", "2000"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _assert_one_copy(spark, lake_dir, reference: Lake):
    lake = Lake(spark, lake_dir)
    for table, key in (("documents", "id"), ("quarantine", "quarantine_id")):
        got = sorted(r[key] for r in lake.read(table).select(key).collect())
        want = sorted(r[key] for r in reference.read(table).select(key).collect())
        assert got == want, table
    m = lake.read_arrow("metrics").to_pylist()[-1]
    assert m["docs_in"] == m["docs_out"] + m["docs_rejected"] == len(want) + lake.read("documents").count()


def test_killed_between_commits_then_restarted_has_one_copy(spark, corpus, ingested, tmp_path):
    lake = str(tmp_path / "lake")
    p = _run_ingest(lake, corpus, {"LMR_FAIL_AFTER_WRITE": "documents"})
    p.communicate(timeout=300)
    assert p.returncode == 137
    assert Lake(spark, lake).exists("documents") and not Lake(spark, lake).exists("quarantine")
    p = _run_ingest(lake, corpus)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err.decode()[-2000:]
    assert b"already holds this run's output" in err
    _assert_one_copy(spark, lake, ingested)


def test_killed_during_spark_write_then_restarted_has_one_copy(spark, corpus, ingested, tmp_path):
    lake = str(tmp_path / "lake")
    p = _run_ingest(lake, corpus)
    deadline = time.time() + 240
    docs_dir = os.path.join(lake, "documents")
    while time.time() < deadline and not (os.path.isdir(docs_dir) and any(
            d.startswith("w-") for d in os.listdir(docs_dir))):
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)  # driver and its Python workers, mid-write
    p.communicate(timeout=60)
    p = _run_ingest(lake, corpus)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err.decode()[-2000:]
    _assert_one_copy(spark, lake, ingested)


def test_hostile_records_never_end_the_job(spark, tmp_path):
    """Deep nesting, a BOM, blank lines, a lone surrogate outside the text, an over-long line, an open CSV quote
    and a gzip bomb: the job exits 0 and lines = documents + quarantined + blank, per source."""
    import zlib

    root = tmp_path / "in"
    root.mkdir()
    jl = [b'\xef\xbb\xbf{"id": "bom", "text": "' + PROSE.encode() + b'"}', b"", b"  ",
          b'{"id": "deep", "text": "t", "x": ' + b"[" * 10000 + b"]" * 10000 + b"}",
          b'{"id": "sur", "text": "fine", "m": "\\udc00"}', b'{"id": "long", "text": "' + b"z" * 100_000 + b'"}',
          b'{"id": "ok", "text": "' + PROSE.encode() + b' again"}\r']
    (root / "h.jsonl").write_bytes(b"\n".join(jl) + b"\n")
    (root / "h.csv").write_bytes(b'\xef\xbb\xbfid,body\n1,"' + PROSE.encode() + b'"\n\n2,"never closed\nstill\n')
    comp = zlib.compressobj(1, zlib.DEFLATED, 31)
    with open(root / "bomb.jsonl.gz", "wb") as f:
        f.write(comp.compress(b'{"id": "pre", "text": "' + PROSE.encode() + b'"}\n'))
        for _ in range(8):
            f.write(comp.compress(bytes(4 << 20)))
        f.write(comp.flush())
    sources = {"sources": [
        {"name": "j", "domain": "web", "format": "jsonl", "path": str(root / "*.jsonl*"), "id_field": "id"},
        {"name": "c", "domain": "forum", "format": "csv", "path": str(root / "h.csv"), "text_field": "body",
         "id_field": "id"}]}
    (root / "s.yaml").write_text(yaml.safe_dump(sources))
    lake = str(tmp_path / "lake")
    assert ingest.main(["--lake", lake, "--sources", str(root / "s.yaml"), "--max-doc-bytes", "2000",
                        "--set", "ingest.max_skip_bytes=1000000"]) == 0
    lk = Lake(spark, lake)
    docs = sorted(r["id"] for r in lk.read("documents").select("id").collect())
    assert docs == ["c/1", "j/bom", "j/ok", "j/pre"]
    q = sorted((r["trace"]["file"].split("/")[-1], r["trace"]["line"], r["reason"])
               for r in lk.read("quarantine").collect())
    assert q == [("bomb.jsonl.gz", 2, "too_large"), ("h.csv", 4, "invalid_csv"), ("h.jsonl", 4, "too_deep"),
                 ("h.jsonl", 5, "invalid_unicode"), ("h.jsonl", 6, "too_large")]
    m = [r for r in lk.read_arrow("metrics").to_pylist() if r["stage"] == "ingest"][-1]
    extra = json.loads(m["extra"])
    lines = len(jl) + 2 + 2 + 1   # jsonl lines; gzip: 2 lines (the rest abandoned); csv: 2 rows + 1 blank line
    assert extra["blank_lines"] == 3 and extra["input_units"] == lines == m["docs_out"] + m["docs_rejected"] + 3


def test_a_wrong_text_field_is_one_line_naming_the_fields(spark, tmp_path, capsys):
    from jobs.cli import run_main

    src = tmp_path / "posts.jsonl"
    src.write_text("".join(json.dumps({"post_id": i, "title": "t", "body": PROSE}) + "\n" for i in range(5)))
    lake = tmp_path / "lake"
    rc = run_main("ingest", ingest.main, ["--lake", str(lake), "--input", str(src), "--format", "jsonl",
                                          "--source", "forum", "--domain", "forum"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1] == ("ingest: error: source 'forum': no record has the text field 'text' (no field "
                                   "'text'; fields: post_id, title, body); set text_field for this source "
                                   "(--text-field, or text_field: in the sources file)")
    assert not Lake(spark, str(lake)).exists("documents")


def test_small_files_share_spark_tasks_and_big_inputs_spread():
    """pack_tasks groups work by bytes like Spark's file scans: 2,000 small files make a handful of Spark tasks,
    big chunks spread over every core, every unit of work is placed exactly once and the plan is deterministic."""
    small = [{"task_id": i, "n_bytes": 4000 + i % 7} for i in range(2000)]
    groups = ingest.pack_tasks(small, parallelism=2)
    assert 2 <= len(groups) <= 8 and len(groups) % 2 == 0, len(groups)
    assert sorted(t["task_id"] for g in groups for t in g) == list(range(2000))
    assert ingest.pack_tasks(small, parallelism=2) == groups
    sizes = [len(g) for g in groups]
    assert max(sizes) - min(sizes) <= 1  # balanced: no core idles in the last wave
    big = [{"task_id": i, "n_bytes": 32 << 20} for i in range(8)]  # 8 files of 32 MB on 2 cores: two even waves
    assert [len(g) for g in ingest.pack_tasks(big, parallelism=2)] == [2, 2, 2, 2]  # not 3 + 3 + 2
    huge = [{"task_id": i, "n_bytes": 32 << 20} for i in range(64)]  # no partition beyond 128 MB (+ open costs)
    assert all(sum(t["n_bytes"] for t in g) <= 128 << 20 for g in ingest.pack_tasks(huge, parallelism=2))
    one = [{"task_id": 0, "n_bytes": 1 << 30}]  # one task bigger than max_bytes stays one task
    assert ingest.pack_tasks(one, parallelism=4) == [one]
    assert ingest.pack_tasks([], parallelism=2) == []


def _metrics(lake: Lake) -> dict:
    row = [r for r in lake.read_arrow("metrics").to_pylist() if r["stage"] == "ingest"][-1]
    extra = json.loads(row["extra"])
    return {"counts": (row["docs_in"], row["docs_out"], row["docs_rejected"], row["tokens_in"], row["tokens_out"]),
            "reasons": dict(row["reasons"]),
            **{k: extra[k] for k in ("per_source", "blank_lines", "duplicate_ids", "input_units")}}


def test_the_workers_writer_and_sparks_writer_give_the_same_tables(spark, corpus, ingested, tmp_path):
    """`ingest.writer: auto` (the Python workers write the Parquet files, the default here) and `spark`
    produce the same rows in both tables and the same metrics, also when a whole file repeats another's ids
    (its documents file is written again empty) and ids repeat inside one file."""
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    from lake_digest import table_digest

    root = tmp_path / "dups"
    root.mkdir()
    (root / "a.jsonl").write_text("".join(json.dumps({"id": i, "text": f"{PROSE} {i}"}) + "\n" for i in range(8)))
    (root / "b.jsonl").write_text("".join(json.dumps({"id": i, "text": f"again {PROSE} {i}"}) + "\n"
                                          for i in [3, 4, 4, 5]))
    (root / "c.jsonl").write_text("".join(json.dumps({"id": i, "text": f"c {PROSE}"}) + "\n" for i in [20, 21, 20]))
    dup_sources = tmp_path / "dups.yaml"
    dup_sources.write_text(yaml.safe_dump({"sources": [
        {"name": "d", "domain": "web", "format": "jsonl", "path": str(root / "*.jsonl"), "id_field": "id"}]}))
    for sources, args in ((corpus, ["--max-doc-bytes", "2000", "--set", "ingest.chunk_bytes=200"]),
                          (str(dup_sources), ["--set", "ingest.chunk_bytes=100"])):
        lakes = {}
        for direct in ("auto", "spark"):
            lakes[direct] = str(tmp_path / f"lake-{direct}-{os.path.basename(sources)}")
            assert ingest.main(["--lake", lakes[direct], "--sources", sources, *args,
                                "--set", f"ingest.writer={direct}"]) == 0
        for t in ("documents", "quarantine"):
            assert (table_digest(os.path.join(lakes["auto"], t)) ==
                    table_digest(os.path.join(lakes["spark"], t))), t
        a, b = Lake(spark, lakes["auto"]), Lake(spark, lakes["spark"])
        assert _metrics(a) == _metrics(b)
        for t in ("documents", "quarantine"):  # every file in the write folders is committed, nothing else left
            files = {os.path.relpath(u[7:] if u.startswith("file://") else u, a.path(t)) for u in a.files(t)}
            on_disk = {os.path.join(d, f) for d in os.listdir(a.path(t)) if d.startswith("w-")
                       for f in os.listdir(os.path.join(a.path(t), d))}
            assert files == on_disk, t
    q = Lake(spark, lakes["auto"]).read("quarantine").where("reason = 'duplicate_id'").collect()
    assert len(q) == 5 and all(r["detail"].startswith("first seen at ") for r in q)
    assert {r["detail"].rsplit(":", 1)[1] for r in q if r["id"] == "d/20"} == {"1"}  # the first line of c.jsonl
    assert {r["raw"] for r in q if r["id"] == "d/4"} == {json.dumps({"id": 4, "text": f"again {PROSE} 4"}).encode()}


def test_worker_arrow_schemas_equal_sparks(spark):
    """The Arrow schemas the workers write with are what Spark makes of the tables' DDL, so the Delta schema of a
    table does not depend on which writer made its files."""
    from pyspark.sql.pandas.types import to_arrow_schema

    from jobs import schema as S

    for ddl, arrow in ((S.DOCUMENT_DDL, S.document_arrow_schema()), (S.QUARANTINE_DDL, S.quarantine_arrow_schema())):
        assert to_arrow_schema(spark.createDataFrame([], ddl).schema) == arrow


def test_metrics_arrow_schema_equals_sparks(spark, tmp_path):
    """The driver writes metrics rows with pyarrow: the same schema as Spark's writer, and a metrics table that
    Spark's writer started (lakes of earlier versions) takes the new rows without a schema change."""
    import datetime as dt

    from pyspark.sql.pandas.types import to_arrow_schema

    from jobs.stage import METRICS_SCHEMA_DDL, METRICS_TABLE, _append_metrics, metrics_arrow_schema

    spark_schema = to_arrow_schema(spark.createDataFrame([], METRICS_SCHEMA_DDL).schema, timezone="UTC")
    assert spark_schema == metrics_arrow_schema()
    row = {"stage": "s", "run_id": "r1", "run_key": "k", "started_at": dt.datetime(2026, 12, 2, tzinfo=dt.timezone.utc),
           "seconds": 1.5, "input_table": None, "input_version": None, "output_table": "t", "output_version": 0,
           "outputs": {"t": 0}, "docs_in": 2, "docs_out": 1, "docs_rejected": 1, "tokens_in": 4, "tokens_out": 2,
           "doc_acceptance": 0.5, "token_acceptance": 0.5, "reasons": {"x": 1}, "config_hash": "h", "extra": "{}"}
    lake = Lake(spark, str(tmp_path / "lake"))
    lake.write(spark.createDataFrame([row], schema=METRICS_SCHEMA_DDL).coalesce(1), METRICS_TABLE, mode="append")
    before = lake._dt(METRICS_TABLE).schema().to_json()
    _append_metrics(lake, {**row, "run_id": "r2"}, app_id="a2")
    _append_metrics(lake, {**row, "run_id": "r2"}, app_id="a2")  # the same transaction again: not a second row
    assert lake._dt(METRICS_TABLE).schema().to_json() == before
    rows = sorted(lake.read(METRICS_TABLE).collect(), key=lambda r: r["run_id"])
    assert [(r["run_id"], r["outputs"], r["reasons"], r["started_at"]) for r in rows] == [
        (rid, {"t": 0}, {"x": 1}, rows[0]["started_at"]) for rid in ("r1", "r2")]
