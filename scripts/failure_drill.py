"""Failure drill for `jobs/dedup.py` on a real Spark standalone cluster (1 master + 2 workers on loopback).

    python scripts/failure_drill.py [--workdir DIR] [--scenarios all|NAME,NAME] [--keep]

Builds a lake whose `filtered` table holds a few hundred real-text documents (passages of the bundled plays and
prose in data/sample/books) with planted exact, near and transitive duplicates, runs dedup once in local mode as
the reference, then on a fresh copy of that lake per scenario:

  cluster           plain cluster run
  executor-kill     SIGKILL an executor JVM that is running tasks part-way; Spark must retry and finish
  driver-kill       SIGKILL the driver (spark-submit JVM + Python driver) while executors write `deduped`, re-run
  die-after-deduped the driver exits (LMR_FAIL_AFTER_WRITE=deduped) right after committing `deduped`, then re-run
  die-after-dups    the same right after committing `duplicates` (before the metrics row), then re-run

After every scenario the lake is checked with delta-rs only (no Spark): `deduped` and `duplicates` equal the
reference (ids, cluster_id, kept_id, method); ids unique, the two tables disjoint and together exactly the input
ids; one `dedup` metrics row with docs_in == docs_out + docs_rejected matching the tables; each output table and
`metrics` have exactly one commit (a re-run never appends twice). Exit 0 when every scenario passes.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cluster import REPO, StandaloneCluster  # noqa: E402

SCENARIOS = ("cluster", "executor-kill", "driver-kill", "die-after-deduped", "die-after-dups")
DEDUP_ARGS = ["--bands", "32", "--rows", "4"]   # high recall at the planted similarities (0.81 .. 0.95)
WORDS_PER_DOC = 200


# ---- the corpus ---------------------------------------------------------------------------------------------------
def _book_words() -> list[list[str]]:
    books = []
    folder = os.path.join(REPO, "data", "sample", "books")
    for fn in sorted(os.listdir(folder)):
        with open(os.path.join(folder, fn), encoding="utf-8") as f:
            w = f.read().split()
        if len(w) >= 10 * WORDS_PER_DOC:
            books.append(w)
    return books


def _substitute(rng, words, k=None, positions=None):
    w = list(words)
    for i in positions if positions is not None else rng.sample(range(len(w)), k):
        w[i] = f"zq{rng.randrange(10 ** 9)}"
    return w


def planted_corpus(n_base: int = 240, seed: int = 8) -> tuple[list[dict], dict]:
    """(rows, expected) where expected maps every id that must be removed to (method, kept_id)."""
    from jobs.schema import document_row

    rng = random.Random(seed)
    windows = []
    for b, words in enumerate(_book_words()):
        for start in range(0, len(words) - WORDS_PER_DOC + 1, WORDS_PER_DOC):
            windows.append(words[start:start + WORDS_PER_DOC])
    base = rng.sample(windows, n_base)
    rows = [document_row(f"d{i:04d}", " ".join(w), source="books", domain="books") for i, w in enumerate(base)]
    expected = {}
    i = 0
    for j in range(48):            # near duplicates, 1 or 2 words changed: Jaccard of 5-shingles 0.90 .. 0.95
        src = base[i]
        rows.append(document_row(f"d{i:04d}-near", " ".join(_substitute(rng, src, 1 + j % 2)),
                                 source="books", domain="books"))
        expected[f"d{i:04d}-near"] = ("minhash", f"d{i:04d}")
        i += 1
    for j in range(16):            # exact duplicates after normalisation (case, whitespace)
        txt = " ".join(base[i])
        rows.append(document_row(f"d{i:04d}-copy", txt.upper() if j % 2 else "  " + txt.replace(" ", "\n "),
                                 source="books", domain="books"))
        expected[f"d{i:04d}-copy"] = ("exact", f"d{i:04d}")
        i += 1
    for j in range(8):             # chains a ~ b ~ c (0.81 each) with a, c below the threshold: one cluster
        b_ = _substitute(rng, base[i], positions=[10, 30, 50, 70])
        c_ = _substitute(rng, b_, positions=[110, 130, 150, 170])
        rows += [document_row(f"d{i:04d}-chain1", " ".join(b_), source="books", domain="books"),
                 document_row(f"d{i:04d}-chain2", " ".join(c_), source="books", domain="books")]
        expected[f"d{i:04d}-chain1"] = ("minhash", f"d{i:04d}")
        expected[f"d{i:04d}-chain2"] = ("minhash", f"d{i:04d}")
        i += 1
    for j in range(32):            # distant variants (25 of 200 words changed, Jaccard ~0.3): must stay
        rows.append(document_row(f"d{i:04d}-far", " ".join(_substitute(rng, base[i], 25)),
                                 source="books", domain="books"))
        i += 1
    rows.sort(key=lambda r: r["id"])
    rng.shuffle(rows)
    return rows, expected


def build_lake(spark, lake_root: str) -> dict:
    """Write the planted corpus as the lake's `filtered` table (3 files); return the expected removals."""
    from jobs.schema import documents_df
    from jobs.tables import Lake

    rows, expected = planted_corpus()
    Lake(spark, lake_root).write(documents_df(spark, rows).repartition(3), "filtered")
    return expected


# ---- checks with delta-rs only ------------------------------------------------------------------------------------
def _table(lake_root: str, name: str, columns=None):
    from deltalake import DeltaTable

    return DeltaTable(os.path.join(lake_root, name)).to_pyarrow_table(columns=columns).to_pylist()


def outputs(lake_root: str) -> dict:
    """The dedup result as plain data: sorted deduped ids and sorted duplicates rows."""
    ded = sorted(r["id"] for r in _table(lake_root, "deduped", ["id"]))
    dup = sorted((r["id"], r["cluster_id"], r["kept_id"], r["method"])
                 for r in _table(lake_root, "duplicates", ["id", "cluster_id", "kept_id", "method"]))
    return {"deduped": ded, "duplicates": dup}


def delta_log(lake_root: str, name: str) -> list[dict]:
    from deltalake import DeltaTable

    return sorted(DeltaTable(os.path.join(lake_root, name)).history(), key=lambda h: h["version"])


def orphan_files(lake_root: str, name: str) -> int:
    """Parquet files under the table folder that its snapshot does not reference (a write the driver never
    committed): invisible to every Delta reader, removable with VACUUM."""
    from deltalake import DeltaTable

    table_dir = os.path.join(lake_root, name)
    from urllib.parse import unquote, urlparse

    live = {os.path.realpath(unquote(urlparse(u).path) if "://" in u else u)
            for u in DeltaTable(table_dir).file_uris()}
    n = 0
    for dirpath, dirnames, files in os.walk(table_dir):
        dirnames[:] = [d for d in dirnames if d != "_delta_log"]
        n += sum(1 for fn in files if fn.endswith(".parquet")
                 and os.path.realpath(os.path.join(dirpath, fn)) not in live)
    return n


def _parquet_count(folder: str) -> int:
    return sum(fn.endswith(".parquet") for _, _, files in os.walk(folder) for fn in files)


def check_lake(lake_root: str, reference: dict | None = None, expected: dict | None = None) -> dict:
    """Assert the lake is consistent after dedup (see module doc); return figures for the report."""
    inp = [r["id"] for r in _table(lake_root, "filtered", ["id"])]
    out = outputs(lake_root)
    ded, dup_ids = out["deduped"], [r[0] for r in out["duplicates"]]
    assert len(set(inp)) == len(inp), "input ids not unique"
    assert len(set(ded)) == len(ded), "duplicated id in deduped"
    assert len(set(dup_ids)) == len(dup_ids), "duplicated id in duplicates"
    assert not set(ded) & set(dup_ids), "an id is in both deduped and duplicates"
    assert set(ded) | set(dup_ids) == set(inp), (
        f"lost {len(set(inp) - set(ded) - set(dup_ids))} / invented {len(set(ded) | set(dup_ids) - set(inp))} ids")
    assert {r[2] for r in out["duplicates"]} <= set(ded), "a kept_id is not in deduped"
    if reference is not None:
        assert out == reference, "deduped/duplicates differ from the reference run"
    if expected is not None:
        got = {i: (m, k) for i, _, k, m in out["duplicates"]}
        assert got == expected, f"planted duplicates: missing {sorted(set(expected) - set(got))[:5]}, " \
                                f"extra {sorted(set(got) - set(expected))[:5]}"
    metrics = [r for r in _table(lake_root, "metrics") if r["stage"] == "dedup"]
    assert len(metrics) == 1, f"{len(metrics)} dedup metrics rows"
    m = metrics[0]
    assert m["docs_in"] == m["docs_out"] + m["docs_rejected"], "conservation invariant violated"
    assert (m["docs_in"], m["docs_out"], m["docs_rejected"]) == (len(inp), len(ded), len(dup_ids)), \
        "metrics row does not match the tables"
    commits = {}
    for name in ("deduped", "duplicates", "metrics"):
        log = delta_log(lake_root, name)
        apps = [h.get("lmrefinery.app_id") for h in log]
        assert len(apps) == len(set(apps)), f"{name}: the same transaction committed twice"
        assert len(log) == 1, f"{name}: {len(log)} commits, expected exactly 1"
        commits[name] = len(log)
    return {"docs_in": m["docs_in"], "docs_out": m["docs_out"], "docs_rejected": m["docs_rejected"],
            "reasons": dict(m["reasons"]), "commits": commits,
            "orphan_files": {t: orphan_files(lake_root, t) for t in ("deduped", "duplicates", "metrics")}}


# ---- scenarios ----------------------------------------------------------------------------------------------------
def _lmr_lines(sub) -> list[str]:
    return [line.split("] ", 1)[-1] for line in sub.log().splitlines() if "[lmrefinery" in line]


def wait_for_job(sub, pred, timeout: float = 600):
    """Poll the driver's REST API (every 0.1 s) until `pred(jobs)` returns something; return it, or None if the
    driver ended first. `jobs` is the UI's job list (name, status) of the run so far."""
    deadline = time.time() + timeout
    while time.time() < deadline and sub.returncode is None:
        jobs = sub.api("jobs")
        if jobs:
            hit = pred(jobs)
            if hit:
                return hit
        time.sleep(0.1)
    return None


def _n_done(jobs) -> int:
    return sum(1 for j in jobs if j["status"] == "SUCCEEDED")


def _running(jobs) -> list[str]:
    return [j["name"] for j in jobs if j["status"] == "RUNNING"]


def _expect_rc(sub, want: int, what: str) -> None:
    if sub.returncode != want:
        tail = "\n".join(sub.log().splitlines()[-15:])
        raise AssertionError(f"{what} exited {sub.returncode}, expected {want}; driver log {sub.log_path}:\n{tail}")


def run_scenario(name: str, cluster: StandaloneCluster, lake: str, kill_after_jobs: int = 4,
                 res: dict | None = None) -> dict:
    """Run one scenario on `lake` (a fresh copy holding only `filtered`); fill and return `res`, what happened."""
    args = ["--lake", lake] + DEDUP_ARGS
    res = {"scenario": name} if res is None else res
    t0 = time.time()
    if name == "cluster":
        s = cluster.submit("jobs/dedup.py", args)
        res["first_rc"] = s.wait(timeout=900)
        res["first_wall_s"] = s.wall_s
    elif name == "executor-kill":
        s = cluster.submit("jobs/dedup.py", args, ui=True)

        def busy_executor(jobs):  # a job running after `kill_after_jobs` finished, and an executor with tasks
            if _n_done(jobs) < kill_after_jobs or not _running(jobs):
                return None
            busy = [e["id"] for e in (s.api("executors") or []) if e["id"] != "driver" and e.get("activeTasks")]
            return (_n_done(jobs), _running(jobs)[0], busy[0]) if busy else None

        hit = wait_for_job(s, busy_executor)
        if hit is None:
            raise AssertionError("the job ended before an executor could be killed")
        pid = cluster.executor_pids()[hit[2]]
        os.kill(pid, 9)
        res["killed"] = (f"executor {hit[2]} (pid {pid}, running tasks) with SIGKILL while Spark job '{hit[1]}' "
                         f"ran, after {hit[0]} jobs had succeeded, {time.time() - t0:.1f}s into the run")
        res["first_rc"] = s.wait(timeout=900)
        res["first_wall_s"] = s.wall_s
        res["executors_launched"] = len(cluster.executors_launched(s.cluster_app_id()))
    elif name == "driver-kill":
        s = cluster.submit("jobs/dedup.py", args, ui=True)

        def table_write(jobs):  # `deduped`'s Parquet files are on disk but not committed (else: just committed)
            folder = os.path.join(lake, "deduped")
            if os.path.isdir(os.path.join(folder, "_delta_log")):
                return _n_done(jobs), "after the deduped commit, before duplicates"
            if os.path.isdir(folder) and _parquet_count(folder):
                return _n_done(jobs), f"with {_parquet_count(folder)} Parquet files of deduped written, uncommitted"
            return None

        hit = wait_for_job(s, table_write)
        if hit is None:
            raise AssertionError("the job ended before the driver could be killed")
        s.kill()
        res["killed"] = (f"driver (spark-submit JVM + Python driver) with SIGKILL {hit[1]}, after {hit[0]} "
                         f"Spark jobs had succeeded, {time.time() - t0:.1f}s into the run")
        res["first_rc"] = s.returncode
        res["first_wall_s"] = s.wall_s
    elif name in ("die-after-deduped", "die-after-dups"):
        table = "deduped" if name == "die-after-deduped" else "duplicates"
        s = cluster.submit("jobs/dedup.py", args, env={"LMR_FAIL_AFTER_WRITE": table})
        res["first_rc"] = s.wait(timeout=900)
        res["first_wall_s"] = s.wall_s
        res["killed"] = f"driver exited 137 right after committing {table} (LMR_FAIL_AFTER_WRITE)"
    else:
        raise ValueError(f"unknown scenario {name!r}")
    res["first_log"] = _lmr_lines(s)[-3:]
    want = {"cluster": 0, "executor-kill": 0, "driver-kill": -9}.get(name, 137)
    _expect_rc(s, want, "first run")
    if name != "cluster" and name != "executor-kill":
        res["commits_after_kill"] = {t: len(delta_log(lake, t)) if os.path.isdir(os.path.join(lake, t, "_delta_log"))
                                     else 0 for t in ("deduped", "duplicates", "metrics")}
        res["orphan_files_after_kill"] = {t: orphan_files(lake, t) if os.path.isdir(os.path.join(lake, t, "_delta_log"))
                                          else _parquet_count(os.path.join(lake, t)) for t in ("deduped", "duplicates")}
        r = cluster.submit("jobs/dedup.py", args)
        res["rerun_rc"] = r.wait(timeout=900)
        _expect_rc(r, 0, "re-run")
        res["rerun_wall_s"] = r.wall_s
        res["rerun_log"] = [x for x in _lmr_lines(r) if "not written again" in x or "docs in" in x]
    res["wall_s"] = round(time.time() - t0, 1)
    return res


def summary_line(res: dict) -> str:
    line = f"drill: {res['scenario']:<17} {'PASS' if res.get('ok') else 'FAIL'}"
    if res.get("killed"):
        line += f" | killed: {res['killed']}"
    if "first_rc" in res:
        line += f" | first run exit {res['first_rc']} after {res.get('first_wall_s')}s"
    if "executors_launched" in res:
        line += f", {res['executors_launched']} executors launched for 2 slots"
    if "rerun_rc" in res:
        skipped = sum("not written again" in x for x in res.get("rerun_log", []))
        line += f" | re-run exit {res['rerun_rc']} after {res.get('rerun_wall_s')}s, {skipped} table write(s) skipped"
    c = res.get("check")
    if c:
        line += (f" | deduped={c['docs_out']} duplicates={c['docs_rejected']} of {c['docs_in']}, = reference; "
                 f"commits deduped/duplicates/metrics={c['commits']['deduped']}/{c['commits']['duplicates']}/"
                 f"{c['commits']['metrics']}; uncommitted files left={sum(c['orphan_files'].values())}")
    if res.get("error"):
        line += f" | {res['error'].splitlines()[0]}"
    return line


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="failure_drill", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--workdir", default=None,
                   help="folder for the lakes and cluster logs, kept afterwards; a base lake and reference left there "
                        "by an earlier drill are reused (default: a temp dir, removed unless --keep)")
    p.add_argument("--scenarios", default="all", help=f"comma-separated subset of: {', '.join(SCENARIOS)}")
    p.add_argument("--kill-after-jobs", type=int, default=4,
                   help="executor-kill: kill once this many Spark jobs of the run have succeeded (default 4); "
                        "driver-kill always strikes while `deduped`'s files are being written")
    p.add_argument("--keep", action="store_true", help="keep the work folder (lakes, logs) afterwards")
    args = p.parse_args(argv)
    names = list(SCENARIOS) if args.scenarios == "all" else [s.strip() for s in args.scenarios.split(",")]
    bad = [n for n in names if n not in SCENARIOS]
    if bad:
        print(f"failure_drill: error: unknown scenario {bad[0]!r} (choose from {', '.join(SCENARIOS)})",
              file=sys.stderr)
        return 2
    work = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="lmr-drill-"))
    os.makedirs(work, exist_ok=True)
    t_all = time.time()

    # the base lake and the local-mode reference (in-process local[2] Spark)
    from jobs.dedup import main as dedup_main
    from jobs.session import get_spark

    base, ref_lake = os.path.join(work, "base"), os.path.join(work, "reference")
    expected = {i: tuple(v) for i, v in planted_corpus()[1].items()}
    t0 = time.time()
    reused = os.path.isdir(os.path.join(ref_lake, "metrics"))
    if not reused:   # else reuse the work folder's lake and reference from an earlier drill
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(ref_lake, ignore_errors=True)
        spark = get_spark("lmr-drill-local", master="local[2]", conf={
            "spark.sql.shuffle.partitions": "4", "spark.ui.enabled": "false", "spark.driver.memory": "1g"})
        build_lake(spark, base)
        shutil.copytree(base, ref_lake)
        t0 = time.time()
        assert dedup_main(["--lake", ref_lake] + DEDUP_ARGS) == 0
        spark.stop()
    local_s = time.time() - t0
    reference = outputs(ref_lake)
    ref_fig = check_lake(ref_lake, expected=expected)
    print(f"drill: lake {base}: filtered={ref_fig['docs_in']} documents; local-mode reference run "
          f"{'reused' if reused else f'{local_s:.1f}s'}: deduped={ref_fig['docs_out']} "
          f"duplicates={ref_fig['docs_rejected']} "
          f"{ref_fig['reasons']} (planted duplicates all found, nothing else removed)", flush=True)

    failures, results = 0, []
    cluster = StandaloneCluster(os.path.join(work, "cluster"))
    t0 = time.time()
    cluster.start()
    print(f"drill: standalone cluster {cluster.master_url} with 2 workers (1 core, 1g each) up in "
          f"{time.time() - t0:.1f}s", flush=True)
    try:
        for name in names:
            lake = os.path.join(work, f"lake-{name}")
            shutil.rmtree(lake, ignore_errors=True)
            shutil.copytree(base, lake)
            res = {"scenario": name}
            try:
                run_scenario(name, cluster, lake, args.kill_after_jobs, res)
                res["check"] = check_lake(lake, reference=reference)
                res["ok"] = True
            except AssertionError as e:
                res.update(ok=False, error=str(e))
                failures += 1
            results.append(res)
            print(f"drill: {name}: {'PASS' if res['ok'] else 'FAIL'}", flush=True)
            print(json.dumps(res, indent=2, default=str), flush=True)
    finally:
        killed = cluster.stop()
        print("drill: cluster stopped, no process left"
              + (f" ({len(killed)} SIGKILLed after the grace period)" if killed else ""), flush=True)
    for res in results:
        print(summary_line(res), flush=True)
    print(f"drill: {len(names) - failures}/{len(names)} scenarios passed in {time.time() - t_all:.0f}s"
          + ("" if args.keep or args.workdir else "; work folder removed"), flush=True)
    if not args.keep and not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    # end without the native destructors: deltalake + pyarrow in one process sometimes aborted at exit with
    # rc 134 after all the work was done (see udfs.common.exit_process)
    from udfs.common import exit_process  # noqa: E402

    exit_process(main() or 0)
