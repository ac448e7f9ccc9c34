"""What every stage does around its own logic: run identity, skip-if-finished, idempotent writes, metrics,
the conservation invariant and the audit sample.

    run = StageRun(lake, "filter", config=cfg["filter"], input_table="documents",
                   output_tables=["filtered", "rejected"], force=args.force)
    if run.already_done():
        return 0
    run.write(kept_df, "filtered"); run.write(rejected_df, "rejected")
    run.finish(docs_in=..., docs_out=..., docs_rejected=..., tokens_in=..., tokens_out=..., reasons={...})
    run.write_audit(rejected_df, "rejected")
"""
from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
import uuid

from jobs import storage
from jobs.config import config_hash
from jobs.leases import Leases
from jobs.tables import Lake, WriteResult, remove_uncommitted

METRICS_TABLE = "metrics"
# The pipeline's stages in order: jobs/pipeline.py runs them, the report orders its sections by them.
PIPELINE = ["ingest", "filter", "dedup", "decontaminate", "mix", "pack"]


class InvariantError(RuntimeError):
    pass


def _logger():
    import logging

    logger = logging.getLogger("lmrefinery")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[lmrefinery %(asctime)s] %(message)s", datefmt="%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def log(msg: str) -> None:
    """One progress line on stderr: `[lmrefinery HH:MM:SS] msg` (the `lmrefinery` logger, level INFO)."""
    logger = _logger()
    logger.handlers[0].stream = sys.stderr  # follow a replaced sys.stderr (pytest's capture, notebooks)
    logger.info(msg)


class StageRun:
    def __init__(self, lake: Lake, stage: str, config, input_table: str | None, output_tables: list[str],
                 force: bool = False, input_version: int | None = None, extra_key=None,
                 extra_leases: list[str] | None = None):
        self.lake = lake
        self.stage = stage
        self.started_at = dt.datetime.now(dt.timezone.utc)
        self._t0 = time.time()
        self.run_id = f"{stage}-{self.started_at.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.input_table = input_table
        self.input_version = input_version if input_version is not None else (
            lake.version(input_table) if input_table else None)
        self.output_tables = list(output_tables)
        self.config = config
        self.config_hash = config_hash({"stage": stage, "config": config, "outputs": self.output_tables,
                                        "extra": extra_key})
        self.run_key = f"{stage}|{input_table}@{self.input_version}|{self.config_hash}"
        self.force = force
        self.outputs: dict[str, int] = {}
        self.writes: dict[str, WriteResult] = {}
        self.leases = Leases(lake.root, self.run_id, stage)
        self.lease_names = self.output_tables + list(extra_leases or [])

    # ---- concurrency and leftovers --------------------------------------------------------------------------
    def hold(self) -> None:
        """Take the write lease of every output (one line naming the other run if a live one holds it), then
        remove what dead runs left in those tables: write folders that no commit references."""
        if all(n in self.leases.held for n in self.lease_names):
            return
        self.leases.acquire(self.lease_names)
        pause = float(os.environ.get("LMR_PAUSE_AFTER_LEASE", "0") or 0)  # concurrency drill: hold the lease a while
        if pause > 0:
            log(f"{self.stage}: LMR_PAUSE_AFTER_LEASE={pause}: holding the leases of {', '.join(self.lease_names)}")
            time.sleep(pause)
        for t in self.output_tables:
            gone = remove_uncommitted(self.lake.path(t))
            if gone:
                log(f"{self.stage}: removed {len(gone)} uncommitted write folder(s) of dead runs from {t}")

    def release(self) -> None:
        self.leases.release()

    # ---- restart safety -------------------------------------------------------------------------------------
    def already_done(self, quiet: bool = False) -> dict | None:
        """The metrics row of an earlier run with the same input version and config whose outputs are still the
        tables' current versions, else None. `--force` always runs. Takes the write leases first (`hold`), so
        that the answer stays true while this run works; they are released again when the run is done."""
        self.hold()
        row = self._done_row(quiet)
        if row is not None:
            self.release()
        return row

    def _done_row(self, quiet: bool) -> dict | None:
        if self.force or not self.lake.exists(METRICS_TABLE):
            return None
        rows = self.lake.read_arrow(METRICS_TABLE).to_pylist()
        for row in reversed(sorted(rows, key=lambda r: r["started_at"])):
            if row.get("run_key") != self.run_key:
                continue
            outputs = dict(row.get("outputs") or [])
            if all(self.lake.version(t) == v for t, v in outputs.items()):
                if not quiet:
                    what = (f"{self.input_table}@{self.input_version}" if self.input_table else "these sources")
                    log(f"{self.stage}: already done for {what} with this config "
                        f"(run {row['run_id']}); skipping. Use --force to run again.")
                return row
        return None

    def outputs_committed(self) -> bool:
        """Whether every output table's latest commit is this run's (an earlier attempt committed them all and
        died before its metrics row): then nothing needs computing again."""
        if not self.output_tables or self.force:
            return False
        for t in self.output_tables:
            app = self.app_id(t)
            if (not self.lake.exists(t) or self.lake.txn_version(t, app) is None
                    or not self.lake.latest_commit_is(t, app)):
                return False
            self.outputs[t] = self.lake.version(t)
        return True

    def app_id(self, table: str) -> str:
        key = self.run_key if not self.force else f"{self.run_key}|{self.run_id}"
        return f"lmrefinery|{key}|{table}"

    def write(self, df, table: str, mode: str = "overwrite") -> WriteResult:
        self.hold()
        return self._written(table, self.lake.write(df, table, mode=mode, app_id=self.app_id(table)))

    def commit_folder(self, table: str, batch_dir: str, mode: str, empty_schema, seconds_data: float = 0.0
                      ) -> WriteResult:
        """Commit a write folder that Python workers filled (`Lake.new_write_folder`), with the same transaction,
        skip and drill semantics as `write`; when this run's output is already committed the folder is removed."""
        self.hold()
        app_id = self.app_id(table)
        if self.lake.already_written(table, mode, app_id):
            storage.rmtree(storage.join(self.lake.path(table), batch_dir))
            res = WriteResult(table, self.lake.version(table), True, 0, 0)
        else:
            res = self.lake.commit_folder(table, batch_dir, mode, app_id, empty_schema=empty_schema,
                                          seconds_data=seconds_data)
        return self._written(table, res)

    def _written(self, table: str, res: WriteResult) -> WriteResult:
        if os.environ.get("LMR_FAIL_AFTER_WRITE") == table:  # failure drill: die between two commits
            log(f"{self.stage}: LMR_FAIL_AFTER_WRITE={table}: exiting after committing {table}")
            os._exit(137)
        if res.skipped:
            log(f"{self.stage}: {table} already holds this run's output (version {res.version}); not written again")
        self.outputs[table] = res.version
        self.writes[table] = res
        return res

    # ---- reporting ------------------------------------------------------------------------------------------
    def finish(self, docs_in: int, docs_out: int, docs_rejected: int, tokens_in: int | None = None,
               tokens_out: int | None = None, reasons: dict | None = None, extra: dict | None = None,
               output_table: str | None = None) -> dict:
        """Check `docs_in == docs_out + docs_rejected`, then append one row to `metrics`."""
        if docs_in != docs_out + docs_rejected:
            raise InvariantError(f"{self.stage}: conservation violated: docs_in={docs_in} != docs_out={docs_out} "
                                 f"+ docs_rejected={docs_rejected}")
        output_table = output_table or (self.output_tables[0] if self.output_tables else None)
        seconds = time.time() - self._t0
        row = {
            "stage": self.stage, "run_id": self.run_id, "run_key": self.run_key, "started_at": self.started_at,
            "seconds": float(seconds),
            "input_table": self.input_table, "input_version": self.input_version,
            "output_table": output_table, "output_version": self.outputs.get(output_table),
            "outputs": {k: int(v) for k, v in self.outputs.items()},
            "docs_in": int(docs_in), "docs_out": int(docs_out), "docs_rejected": int(docs_rejected),
            "tokens_in": None if tokens_in is None else int(tokens_in),
            "tokens_out": None if tokens_out is None else int(tokens_out),
            "doc_acceptance": (docs_out / docs_in) if docs_in else None,
            "token_acceptance": (tokens_out / tokens_in) if tokens_in else None,
            "reasons": {str(k): int(v) for k, v in (reasons or {}).items()},
            "config_hash": self.config_hash,
            "extra": json.dumps({**(extra or {}), "timings": self.timings(seconds)}, sort_keys=True, default=str),
        }
        _append_metrics(self.lake, row, app_id=f"lmrefinery|{self.run_id}|metrics")
        self.release()
        log(_summary(row))
        t = self.timings(seconds)
        log(f"{self.stage}: time: Spark session {t['session_s']:.1f}s (before the stage clock), table writes "
            f"{t['write_data_s']:.1f}s (with the computing Spark defers to them), Delta commits {t['commit_s']:.2f}s, "
            f"everything else {t['compute_s']:.1f}s")
        return row

    session_seconds = 0.0  # set by the runner: getting the Spark session (0 when one was already running)

    def timings(self, seconds: float) -> dict:
        """Where the stage's time went: the session start (outside `seconds`), the table writes (which include the
        computing Spark defers to them), the Delta commits and the rest (planning, counting, collecting), for the
        metrics row (`extra.timings`)."""
        data = sum(w.seconds_data for w in self.writes.values())
        commit = sum(w.seconds_commit for w in self.writes.values())
        return {"session_s": round(self.session_seconds, 3), "write_data_s": round(data, 3),
                "commit_s": round(commit, 3), "compute_s": round(max(seconds - data - commit, 0.0), 3),
                "writes": {t: [round(w.seconds_data, 3), round(w.seconds_commit, 3)] for t, w in self.writes.items()}}

    def write_audit(self, df, table: str, reason_col: str = "reason", per_reason: int = 5,
                    order_col: str = "id", text_chars: int = 2000) -> str:
        """A few records per reason, as JSONL at <lake>/audit/<table>.jsonl, for people to read."""
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        w = Window.partitionBy(reason_col).orderBy(order_col)
        sample = df.withColumn("_rank", F.row_number().over(w)).where(F.col("_rank") <= per_reason).drop("_rank")
        if "text" in sample.columns:
            sample = sample.withColumn("text", F.substring("text", 1, text_chars))

        rows = [r.asDict(recursive=True) for r in sample.collect()]
        return self.write_audit_rows(rows, table, reason_col, order_col, text_chars)

    def write_audit_rows(self, rows: list[dict], table: str, reason_col: str = "reason", order_col: str = "id",
                         text_chars: int = 2000) -> str:
        """The audit file from sampled rows (plain dicts): sorted by reason and id, raw bytes shown as text."""
        def readable(v):  # raw payloads are shown as text; undecodable bytes as \xNN escapes
            if isinstance(v, (bytes, bytearray)):
                return bytes(v[:text_chars]).decode("utf-8", errors="backslashreplace")
            if isinstance(v, dict):
                return {k: readable(x) for k, x in v.items()}
            return v

        lines = sorted((readable(r) for r in rows), key=lambda r: (str(r.get(reason_col)), str(r.get(order_col))))
        path = storage.join(self.lake.root, "audit", f"{table}.jsonl")
        storage.write_bytes(path, "".join(json.dumps({"run_id": self.run_id, **row}, ensure_ascii=False,
                                                     default=str) + "\n" for row in lines).encode("utf-8"))
        return path


METRICS_SCHEMA_DDL = (
    "stage string, run_id string, run_key string, started_at timestamp, seconds double, "
    "input_table string, input_version bigint, output_table string, output_version bigint, "
    "outputs map<string,bigint>, docs_in bigint, docs_out bigint, docs_rejected bigint, tokens_in bigint, "
    "tokens_out bigint, doc_acceptance double, token_acceptance double, reasons map<string,bigint>, "
    "config_hash string, extra string"
)


def metrics_arrow_schema():
    """METRICS_SCHEMA_DDL as an Arrow schema (tests check it equals Spark's)."""
    import pyarrow as pa

    s, i64, f64, m = pa.string(), pa.int64(), pa.float64(), pa.map_(pa.string(), pa.int64())
    return pa.schema([("stage", s), ("run_id", s), ("run_key", s), ("started_at", pa.timestamp("us", tz="UTC")),
                      ("seconds", f64), ("input_table", s), ("input_version", i64), ("output_table", s),
                      ("output_version", i64), ("outputs", m), ("docs_in", i64), ("docs_out", i64),
                      ("docs_rejected", i64), ("tokens_in", i64), ("tokens_out", i64), ("doc_acceptance", f64),
                      ("token_acceptance", f64), ("reasons", m), ("config_hash", s), ("extra", s)])


def _append_metrics(lake: Lake, row: dict, app_id: str) -> None:
    """One row appended to `metrics`. On a local lake the driver writes the one-row Parquet file itself and
    commits it (no Spark job: that job cost a stage 0.3-1.8 s)."""
    if "://" in lake.root:
        df = lake.spark.createDataFrame([row], schema=METRICS_SCHEMA_DDL).coalesce(1)
        lake.write(df, METRICS_TABLE, mode="append", app_id=app_id)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    if lake.already_written(METRICS_TABLE, "append", app_id):
        return
    schema = metrics_arrow_schema()
    batch_dir, folder = lake.new_write_folder(METRICS_TABLE)
    os.makedirs(folder)
    table = pa.Table.from_pylist([{**row, "outputs": list(row["outputs"].items()),
                                   "reasons": list(row["reasons"].items())}], schema=schema)
    pq.write_table(table, os.path.join(folder, "part-00000.parquet"))
    lake.commit_folder(METRICS_TABLE, batch_dir, "append", app_id, empty_schema=lambda: schema)


def _summary(row: dict) -> str:
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.2f}%"

    reasons = ", ".join(f"{k}={v}" for k, v in sorted(row["reasons"].items(), key=lambda kv: -kv[1])[:8])
    return (f"{row['stage']}: {row['docs_in']} docs in -> {row['docs_out']} out, {row['docs_rejected']} rejected "
            f"(doc acceptance {pct(row['doc_acceptance'])}, token acceptance {pct(row['token_acceptance'])}) "
            f"in {row['seconds']:.1f}s" + (f"; reasons: {reasons}" if reasons else ""))


def count_docs_tokens(df, token_col: str = "n_tokens_est") -> tuple[int, int]:
    from pyspark.sql import functions as F

    r = df.agg(F.count(F.lit(1)).alias("d"), F.coalesce(F.sum(token_col), F.lit(0)).alias("t")).collect()[0]
    return int(r["d"]), int(r["t"])
