"""The Databricks-style notebooks run top to bottom as plain Python (`LMR_LAKE=<lake> python notebooks/NN_*.py`)
against the small lake of tests/test_report.py, and print what the lake holds."""
import collections
import glob
import json
import os
import re
import subprocess
import sys
import time

import pytest

from tests.test_report import get_small_lake, metrics_latest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "notebooks", "[0-9][0-9]_*.py")))
# Runs every notebook as `__main__` (runpy: a fresh namespace each, top to bottom, exactly as `python notebooks/X.py`)
# in ONE Python subprocess, so the four share one local Spark JVM instead of starting four.
RUNNER = r"""
import runpy, sys, time, traceback
failed = 0
for path in sys.argv[1:]:
    print(f"@@@ BEGIN {path}", flush=True)
    t0 = time.time()
    try:
        runpy.run_path(path, run_name="__main__")
        status = "ok"
    except BaseException:
        traceback.print_exc(file=sys.stdout)
        status, failed = "failed", failed + 1
    print(f"@@@ END {path} {status} {time.time() - t0:.1f}", flush=True)
sys.exit(1 if failed else 0)
"""
_RUNS: dict = {}
# the threshold change 05_threshold_tuning.py tries on the small lake (env LMR_TUNING_SET): it keeps one document
# more of web (c4 sentences), keeps the French one, moves the German one to another reason and drops a reference one
TUNING_SET = ["filter.quality.c4.min_num_sentences=1", "filter.langid.languages=en,de,fr",
              "filter.domains.reference.quality.gopher_quality.min_alpha_words_ratio=0.8"]


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    return get_small_lake(spark, tmp_path_factory)


def run_notebooks(root: str) -> dict:
    """{notebook file name: {"status", "seconds", "out"}} from one subprocess with LMR_LAKE=root (run once)."""
    if not _RUNS:
        env = {**os.environ, "LMR_LAKE": root, "SPARK_MASTER": "local[2]", "PYTHONUNBUFFERED": "1",
               "LMR_TUNING_SET": ";".join(TUNING_SET)}
        env.pop("PYSPARK_GATEWAY_PORT", None)
        t0 = time.time()
        r = subprocess.run([sys.executable, "-c", RUNNER, *NOTEBOOKS], capture_output=True, text=True, env=env,
                           cwd=os.path.dirname(root), timeout=900)
        _RUNS["total"] = {"rc": r.returncode, "seconds": time.time() - t0, "err": r.stderr}
        for m in re.finditer(r"^@@@ BEGIN (\S+)\n(.*?)^@@@ END \1 (\w+) ([0-9.]+)$", r.stdout, re.M | re.S):
            _RUNS[os.path.basename(m.group(1))] = {"out": m.group(2), "status": m.group(3),
                                                   "seconds": float(m.group(4))}
        print(f"\nnotebooks: {_RUNS['total']['seconds']:.1f}s in one process (exit {r.returncode})")
    return _RUNS


def run_notebook(name: str, root: str) -> dict:
    runs = run_notebooks(root)
    assert name in runs, f"{name} did not run:\n{runs['total']['err'][-3000:]}"
    res = runs[name]
    assert res["status"] == "ok", f"{name} failed:\n{res['out'][-3000:]}"
    print(f"\n{name}: {res['seconds']:.1f}s")
    return res


def test_every_notebook_ran_and_the_process_exited_0(lake):
    runs = run_notebooks(lake["root"])
    assert {os.path.basename(p) for p in NOTEBOOKS} <= set(runs)
    assert runs["total"]["rc"] == 0, runs["total"]["err"][-3000:]


def _statement_before(src: str, pos: int) -> str:
    """The source from the start of the statement holding `pos` (last line starting at column 0) up to it."""
    start = pos
    while True:
        start = src.rfind("\n", 0, start)
        if start < 0 or (src[start + 1:start + 2] not in (" ", ")", "") and not src[start + 1:].startswith("#")):
            return src[max(start, 0):pos]
        if start == 0:
            return src[:pos]


def test_notebooks_are_databricks_source_files():
    names = [os.path.basename(p) for p in NOTEBOOKS]
    assert names == ["01_explore_documents.py", "02_filter_rejections.py", "03_duplicate_clusters.py",
                     "04_mixture_and_tokens.py", "05_threshold_tuning.py", "06_delta_history_and_maintenance.py"]
    for p in NOTEBOOKS:
        with open(p, encoding="utf-8") as f:
            src = f.read()
        assert src.startswith("# Databricks notebook source\n")
        cells = src.split("\n# COMMAND ----------\n")
        assert len(cells) >= 4
        assert any(c.strip().startswith("# MAGIC %md") for c in cells)
        compile(src, p, "exec")
        # nothing pulls a whole table to the driver: every collect() is on an aggregate, a limit or a few
        # rows per group (row_number window); metrics rows are read with delta-rs (a small table)
        for m in re.finditer(r"\.collect\(\)", src):
            stmt = _statement_before(src, m.start())
            name = re.match(r"\s*(?:\w+\s*=\s*)?(?:\[[^\]]*for \w+ in )?(\w+)", stmt).group(1)
            defs = "".join(_statement_before(src, d.end()) for d in re.finditer(rf"^{name} = .*", src, re.M))
            assert re.search(r"\.limit\(|\.groupBy\(|\.agg\(|where\(\"k <=", stmt + defs), f"{p}: {stmt}"
        assert ".toPandas()" not in src


def test_01_documents_and_quarantine(lake):
    latest = metrics_latest(lake["root"])
    out = run_notebook("01_explore_documents.py", lake["root"])["out"]
    assert f"lake: {lake['root']}" in out
    m = re.search(r"documents: (\d+)\s+tokens_est: (\d+)", out)
    assert m and int(m.group(1)) == latest["ingest"]["docs_out"]
    assert int(m.group(2)) == latest["ingest"]["tokens_out"]
    for heading in ("## Documents per source and domain", "## Documents per domain", "## Samples per domain",
                    "## Quarantine per reason", "## Quarantine samples"):
        assert heading in out
    assert "quarantined: 3" in out
    for reason in ("invalid_json", "missing_text_field", "invalid_utf8"):
        assert re.search(rf"\|\s*{reason}\s*\|\s*1\s*\|", out), reason
    assert "caf\ufffd cr\ufffdme" in out  # the invalid UTF-8 payload, shown with replacement characters
    assert "web/w-bench" in out and "reference/r00" in out  # the smallest ids of each domain, as samples


def test_02_rejections_per_reason_with_samples(lake):
    f = metrics_latest(lake["root"])["filter"]
    out = run_notebook("02_filter_rejections.py", lake["root"])["out"]
    assert f"documents in: {f['docs_in']}  kept: {f['docs_out']}  rejected: {f['docs_rejected']}" in out
    for heading in ("## Rejected documents per reason", "## Rejected documents per filter step",
                    "## Signals: kept vs rejected (median)", "## Rejected documents with their signals"):
        assert heading in out
    for reason, n in f["reasons"].items():
        assert re.search(rf"\|\s*{re.escape(reason)}\s*\|\s*{n}\s*\|", out), reason
        assert f"--- {reason}\n" in out
    assert "web/w-de  [lang de" in out and "signals:" in out
    # per domain and per source, from filter_signals: equal to the filter's own per-domain counts (metrics extra)
    for key in ("domain", "source"):
        assert f"## Per {key}: documents and tokens in -> out" in out
        for name, g in f["extra"][f"per_{key}"].items():
            m = re.search(rf"^\|\s*{name}\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|", out, re.M)
            assert m, (key, name)
            assert tuple(map(int, m.groups())) == (g["docs_in"], g["docs_out"], g["tokens_in"], g["tokens_out"])
    top = re.findall(r"^\|\s*(web|reference)\s*\|\s*(\S+)\s*\|\s*(\d+)\s*\|$",
                     out.split("## Top reasons per domain")[1], re.M)
    assert {(d, r): int(n) for d, r, n in top} == {("web", r): n for r, n in f["extra"]["per_domain"]["web"]["reasons"]
                                                   .items()}


def test_03_duplicate_clusters_side_by_side(lake):
    d = metrics_latest(lake["root"])["dedup"]
    out = run_notebook("03_duplicate_clusters.py", lake["root"])["out"]
    assert f"kept: {d['docs_out']}  removed: {d['docs_rejected']}" in out
    assert "clusters: 2" in out
    assert "## Clusters side by side: kept vs removed" in out
    blocks = re.findall(r"--- cluster (\S+) \(size (\d+), (\w+), jaccard ([0-9.]+)\)", out)
    assert sorted((int(s), m) for _, s, m, _ in blocks) == [(2, "minhash"), (3, "exact"), (3, "exact")]
    for _, size, method, jac in blocks:
        assert (float(jac) == 1.0) if method == "exact" else (0.8 <= float(jac) < 1.0)
    # survivors are the smallest ids: w-exact-a over w02 and w-exact-b, w-near over w01
    assert "KEPT web/w-exact-a" in out and "REMOVED web/w02" in out and "REMOVED web/w-exact-b" in out
    assert "KEPT web/w-near" in out and "REMOVED web/w01" in out


def test_04_mixture_and_token_stats(lake):
    mx = metrics_latest(lake["root"])["mix"]["extra"]
    with open(os.path.join(lake["root"], "packed", "manifest.json")) as f:
        manifest = json.load(f)
    out = run_notebook("04_mixture_and_tokens.py", lake["root"])["out"]
    assert "strategy: temperature" in out
    for d in mx["domains"]:
        m = re.search(rf"^{d['domain']}\s+([0-9.]+)\s+([0-9.]+)\s+[-+0-9.]+\s+(\d+)\s+(\d+)\s+(\d+)$", out, re.M)
        assert m, d["domain"]
        assert float(m.group(1)) == pytest.approx(d["target_weight"], abs=1e-4)
        assert float(m.group(2)) == pytest.approx(d["achieved_share"], abs=1e-4)
        assert (int(m.group(3)), int(m.group(4)), int(m.group(5))) == (d["tokens"], d["docs"], d["unique_docs"])
    for split, info in manifest["splits"].items():
        assert re.search(rf"^{split}\s+{info['tokens']}\s+{info['documents']}\s+{len(info['shards'])}\s+"
                         rf"{info['text_bytes']}\s", out, re.M), split
    assert "## Tokenizer compression" in out
    assert re.search(r"^ALL\s+[0-9.]+\s+[0-9.]+\s+[0-9.]+", out, re.M)


def test_05_threshold_tuning_added_minus_removed_is_the_kept_difference(lake, spark):
    """The notebook's per-domain numbers against sets of kept ids under both decision columns, computed here."""
    from pyspark.sql import functions as F

    from jobs.config import load_config
    from jobs.filter import decision_column, resolve_config
    from jobs.tables import Lake

    f = metrics_latest(lake["root"])["filter"]
    out = run_notebook("05_threshold_tuning.py", lake["root"])["out"]
    for item in TUNING_SET:
        assert f"set {item}" in out
    assert re.search(r"^  reference\s+gopher_quality:alpha_words\s+min\s+alpha_words_ratio\s+0\.7 -> 0\.8$", out, re.M)
    n = f["docs_in"]
    assert f"current config reproduces the stored decision for {n} of {n} documents" in out

    sig = Lake(spark, lake["root"]).read("filter_signals")
    old = resolve_config(load_config()["filter"])
    new = resolve_config(load_config(None, TUNING_SET)["filter"])
    rows = (sig.select("id", "domain", "n_tokens_clean", decision_column(old, sig.columns).alias("o"),
                       decision_column(new, sig.columns).alias("n")).collect())  # a few dozen rows
    want = {}
    for d in {r["domain"] for r in rows} | {"ALL"}:
        mine = [r for r in rows if d in ("ALL", r["domain"])]
        before = {r["id"]: r["n_tokens_clean"] for r in mine if r["o"] is None}
        after = {r["id"]: r["n_tokens_clean"] for r in mine if r["n"] is None}
        plus, minus = set(after) - set(before), set(before) - set(after)
        want[d] = {"docs": len(mine), "kept_before": len(before), "kept_after": len(after), "docs_added": len(plus),
                   "docs_removed": len(minus), "tokens_before": sum(before.values()),
                   "tokens_after": sum(after.values()), "tokens_added": sum(after[i] for i in plus),
                   "tokens_removed": sum(before[i] for i in minus)}
    table = out.split("## Change per domain\n")[1].split("\n## ")[0].splitlines()
    heads = table[0].split()
    got = {}
    for line in table[1:]:
        if line.startswith("total:"):
            continue
        cells = line.split()
        got[cells[0]] = {h: int(c) for h, c in zip(heads[1:], cells[1:])}
    for d, w in want.items():
        for k, v in w.items():
            assert got[d][k] == v, (d, k)
        assert got[d]["tokens_net"] == w["tokens_added"] - w["tokens_removed"] == w["tokens_after"] - w["tokens_before"]
    assert want["ALL"]["docs_added"] >= 2 and want["ALL"]["docs_removed"] >= 1  # the change does both
    # before the change the kept tokens are those of the filtered table (the stored decision)
    kept_tokens = Lake(spark, lake["root"]).read("filtered").agg(F.sum("n_tokens_est")).first()[0]
    m = re.search(r"^total: docs added (\d+) removed (\d+) net ([-+]\d+) \| tokens added (\d+) removed (\d+) "
                  r"net ([-+]\d+) \| kept tokens before (\d+) after (\d+)$", out, re.M)
    assert m
    da, dr, dn, ta, tr, tn, kb, ka = map(int, m.groups())
    assert (da, dr, ta, tr, kb, ka) == tuple(want["ALL"][k] for k in (
        "docs_added", "docs_removed", "tokens_added", "tokens_removed", "tokens_before", "tokens_after"))
    assert dn == da - dr and tn == ta - tr == ka - kb and kb == kept_tokens

    # audit samples: every transition, at most 5 documents each, each with its text from the documents table
    trans = collections.Counter((r["o"] or "kept", r["n"] or "kept") for r in rows if r["o"] != r["n"])
    audit = out.split("## Audit samples at the margin\n")[1]
    blocks = dict(re.findall(r"^--- (\S+ -> \S+)\n((?:  .*\n?)*)", audit, re.M))
    assert set(blocks) == {f"{a} -> {b}" for a, b in trans}
    docs = {r["id"]: r["text"] for r in Lake(spark, lake["root"]).read("documents").select("id", "text").collect()}
    for (a, b), cnt in trans.items():
        ids = re.findall(r"^  (\S+)  \[", blocks[f"{a} -> {b}"], re.M)
        flipped = {r["id"] for r in rows if (r["o"] or "kept", r["n"] or "kept") == (a, b)}
        assert len(ids) == min(cnt, 5) and set(ids) <= flipped, (a, b)
        for i in ids:
            text = re.search(rf"^  {re.escape(i)}  .*\n    text: (.*)$", blocks[f"{a} -> {b}"], re.M).group(1)
            assert text == re.sub(r"[ \t\n\r\f\v]+", " ", docs[i][:300])  # as Java's \s: ASCII whitespace only
    # the French document is kept now: its line shows the language it was rejected for
    assert re.search(r"^--- langid:fr -> kept\n  web/w-fr  \[web\]  lang=fr lang_score=", audit, re.M)


def test_06_history_time_travel_and_maintenance(lake):
    import deltalake

    out = run_notebook("06_delta_history_and_maintenance.py", lake["root"])["out"]
    dt = deltalake.DeltaTable(os.path.join(lake["root"], "metrics"))
    rows, last = dt.to_pyarrow_table().num_rows, dt.version()
    native = "table backend: delta-spark" in out
    assert native == (os.environ.get("LMR_TABLE_BACKEND", "auto") != "delta-rs")
    n = len(dt.history()) - (1 if native else 0)  # the notebook's own OPTIMIZE is one more version
    assert f"metrics: {n} versions, 0.." in out
    # version 0 is the first stage's one metrics row; the latest has every stage run's row
    assert re.search(rf"^metrics at version 0: 1 rows; at version {last - (1 if native else 0)}: {rows} rows$", out,
                     re.M)
    if native:
        before = int(re.search(r"^metrics: (\d+) data files before OPTIMIZE, 1 after; (\d+) rows$", out, re.M).group(1))
        assert before == rows > 1  # one file per appended row before; the same rows in one file after
        assert dt.history(1)[0]["operation"] == "OPTIMIZE"
        assert "VACUUM RETAIN 168 HOURS DRY RUN would delete 0 files" in out
