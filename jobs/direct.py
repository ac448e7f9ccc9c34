"""Tables whose Parquet files the Python workers write themselves, for stages whose output is their input's text.

Spark's own writer makes every text cross from the Python worker into the JVM (Arrow), become rows, and be
encoded to Parquet there; a stage with two or three outputs also caches its whole result to write it two or three
times. Where the lake is local and delta-rs commits it, a stage can instead let each task write its rows straight into
one Parquet file per output table (pyarrow, the table's Arrow schema) and return only narrow rows: the files it
wrote and the counts the stage reports. The driver then commits each table's write folder in one Delta transaction,
exactly as it commits the files of Spark's writer, so readers see the same tables.

    folders = WriteFolders(ctx.lake, {"doc": "documents", "quarantine": "quarantine"})
    rows = frame.mapInArrow(worker(folders.paths, ...), META_DDL).collect()   # the worker: part_stem(), pyarrow
    folders.keep_only(("doc", part) for ...)                                  # drop files of failed attempts
    folders.commit(ctx.run, mode, schemas)

A task attempt names its file after its partition and attempt number (`part_stem`), so a failed or speculative
attempt never shares a file with the one that succeeded; `keep_only` deletes every file that no returned row names.
A run that dies leaves uncommitted `w-*` folders, which the next run of the stage removes (`remove_uncommitted`).
"""
from __future__ import annotations

import os
import shutil

from jobs.cli import UserError


def enabled(ctx, key: str = "writer") -> bool:
    """`<stage>.writer`: auto (the default) = the workers write the Parquet files of a local lake and the driver
    commits them (delta-spark or delta-rs); spark = Spark's writer."""
    mode = ctx.params.get(key, "auto")
    if mode not in ("auto", "spark"):
        raise UserError(f"{ctx.stage.name}.{key} must be auto or spark (got {mode!r})")
    return mode == "auto" and "://" not in ctx.lake.root


def part_stem() -> str:
    """The file name stem of this task attempt: its partition and attempt number (the pid outside Spark)."""
    from pyspark import TaskContext

    tc = TaskContext.get()
    return f"part-{tc.partitionId():05d}-a{tc.attemptNumber()}" if tc else f"part-{os.getpid()}"


class WriteFolders:
    """One fresh write folder per output table; `paths` (role -> absolute folder) goes to the workers."""

    def __init__(self, lake, tables: dict[str, str]):
        self.tables = dict(tables)  # role -> table name
        self.dirs, self.paths = {}, {}
        for role, table in self.tables.items():
            self.dirs[role], self.paths[role] = lake.new_write_folder(table)
            os.makedirs(self.paths[role])

    def discard(self) -> None:
        for p in self.paths.values():
            shutil.rmtree(p, ignore_errors=True)

    def keep_only(self, files) -> None:
        """Delete every file of the folders that is not one of `files` ((role, file name) pairs)."""
        keep = set(files)
        for role, folder in self.paths.items():
            for fn in os.listdir(folder):
                if (role, fn) not in keep:
                    os.remove(os.path.join(folder, fn))

    def commit(self, run, mode: str, schemas: dict, seconds_data: dict | None = None) -> None:
        """Commit every folder, in the order the tables were given (`StageRun.commit_folder`)."""
        for role, table in self.tables.items():
            run.commit_folder(table, self.dirs[role], mode, (lambda s=schemas[role]: s),
                              seconds_data=(seconds_data or {}).get(role, 0.0))


def file_schema(df):
    """The Arrow schema a worker writes a DataFrame's rows with: Spark's, nullability flags included, as Spark's own
    writer keeps them (a `lit()` column is NOT NULL in both), so the table's Delta schema does not depend on the
    writer (tests compare the Delta schemas of both writers)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(df.schema)


def select(batch, cols: list[str], schema):
    """Columns `cols` of an Arrow batch, cast to the table's file `schema` (in that order)."""
    import pyarrow as pa

    return pa.RecordBatch.from_arrays([batch.column(c).cast(f.type) for c, f in zip(cols, schema)], schema=schema)


_ARROW_OF = {"string": "string", "bigint": "int64", "int": "int32", "double": "float64", "boolean": "bool_"}


def meta_schema(ddl: str):
    """The Arrow schema of a flat Spark DDL of the types workers return ("kind string, docs bigint, ..."), so the
    narrow rows a worker yields match the mapInArrow schema declared with the same DDL."""
    import pyarrow as pa

    fields = []
    for item in ddl.split(","):
        name, typ = item.split()
        fields.append((name, getattr(pa, _ARROW_OF[typ])()))
    return pa.schema(fields)


def meta_batch(rows: list[dict], ddl: str):
    """`rows` (dicts; missing keys are nulls) as one Arrow batch of `meta_schema(ddl)`."""
    import pyarrow as pa

    return pa.RecordBatch.from_pylist(rows, schema=meta_schema(ddl))


class TaskFiles:
    """Inside a worker: this task attempt's Parquet file in each role's write folder, opened on the first rows."""

    def __init__(self, paths: dict, schemas: dict, compression: str = "snappy"):
        self.paths, self.schemas, self.compression = paths, schemas, compression
        self.stem = part_stem()
        self.writers, self.rows = {}, {}

    def write(self, role: str, batch) -> None:
        if not batch.num_rows:
            return
        if role not in self.writers:
            import pyarrow.parquet as pq

            self.writers[role] = pq.ParquetWriter(os.path.join(self.paths[role], self.stem + ".parquet"),
                                                  self.schemas[role], compression=self.compression)
            self.rows[role] = 0
        self.writers[role].write_batch(batch)
        self.rows[role] += batch.num_rows

    def close(self) -> list[dict]:
        """Close every file; one row per file written: {kind: file, tbl: role, part: file name, docs: rows}."""
        for w in self.writers.values():
            w.close()
        return [{"kind": "file", "tbl": role, "part": self.stem + ".parquet", "docs": self.rows[role]}
                for role in self.writers]


class AuditHeap:
    """Inside a worker: the `k` smallest ids per reason of this task's rows, each kept as a JSON row (text cut to
    `text_chars`, maps as dicts, bytes as {"__bytes__": hex}) for `audit_sample` on the driver: the audit file
    then equals StageRun.write_audit's sample of the committed table without reading it again."""

    def __init__(self, k: int, text_chars: int = 2000):
        self.k, self.text_chars, self.heaps = k, text_chars, {}

    def offer(self, batch, reason_col: str) -> None:
        import heapq
        import json

        import pyarrow as pa

        if self.k <= 0 or not batch.num_rows:
            return
        maps = [f.name for f in batch.schema if pa.types.is_map(f.type)]
        ids, reasons = batch.column("id").to_pylist(), batch.column(reason_col).to_pylist()
        for i, (doc_id, reason) in enumerate(zip(ids, reasons)):
            heap = self.heaps.setdefault(reason, [])  # a max-heap of inverted keys: the largest kept id on top
            if len(heap) == self.k and doc_id >= heap[0][1]:
                continue
            row = batch.slice(i, 1).to_pylist()[0]
            for c in maps:
                row[c] = dict(row[c] or [])
            if isinstance(row.get("text"), str):
                row["text"] = row["text"][:self.text_chars]
            item = (_Desc(doc_id), doc_id, json.dumps(row, ensure_ascii=False, default=_raw_json))
            if len(heap) < self.k:
                heapq.heappush(heap, item)
            else:
                heapq.heapreplace(heap, item)

    def rows(self) -> list[dict]:
        """{kind: audit, reason, id, row (JSON)} for every kept candidate."""
        return [{"kind": "audit", "reason": reason, "id": doc_id, "row": row}
                for reason, heap in self.heaps.items() for _, doc_id, row in heap]


def audit_sample(rows: list[dict], per_reason: int) -> list[dict]:
    """On the driver: the `per_reason` smallest ids per reason out of every task's AuditHeap rows, as rows (bytes
    restored), for StageRun.write_audit_rows."""
    import json

    def restore(v):
        if isinstance(v, dict):
            if set(v) == {"__bytes__"}:
                return bytes.fromhex(v["__bytes__"])
            return {k: restore(x) for k, x in v.items()}
        return v

    by_reason: dict = {}
    for r in rows:
        by_reason.setdefault(r["reason"], []).append(r)
    out = []
    for reason, rs in by_reason.items():
        out += [restore(json.loads(r["row"])) for r in sorted(rs, key=lambda r: r["id"])[:per_reason]]
    return out


class _Desc:
    """A heap key that orders strings in reverse, so `heapq` keeps the largest of the smallest ids on top."""
    __slots__ = ("s",)

    def __init__(self, s):
        self.s = s

    def __lt__(self, other):
        return self.s > other.s


def _raw_json(v):
    if isinstance(v, (bytes, bytearray)):
        return {"__bytes__": bytes(v).hex()}
    return str(v)


# ---- reads: the workers read a plain table's Parquet files themselves ---------------------------------------------
# Spark's reader decodes every text into a JVM row and hands it back to the Python worker through Arrow; a stage
# whose Python worker needs the text anyway (dedup's keys and write passes) can read the files with pyarrow instead.
READ_BATCH_ROWS = 8192


def plain_files(lake, name: str, version: int | None, columns: list[str], schema) -> list[dict] | None:
    """The data files of a table snapshot as units for `pack_tasks` ({task_id, path, n_bytes}), where reading
    those files with pyarrow gives the table: a local lake, no reader features (deletion vectors, column mapping),
    no partition columns, plain paths, and every file's columns castable to `schema` (checked on each file's
    footer). None otherwise: the stage then reads through Spark."""
    if "://" in lake.root:
        return None
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from jobs.tables import _PLAIN_PATH

        dt = lake._dt(name, version)
        proto = dt.protocol()
        if proto.min_reader_version != 1 or proto.reader_features or dt.metadata().partition_columns:
            return None
        adds = pa.table(dt.get_add_actions(flatten=True)).select(["path", "size_bytes"]).to_pylist()
        if not all(_PLAIN_PATH.match(a["path"] or "") for a in adds):
            return None
        units = []
        for i, a in enumerate(sorted(adds, key=lambda a: a["path"])):
            path = os.path.join(lake.path(name), a["path"])
            have = pq.read_schema(path)
            for c, f in zip(columns, schema):
                if c in have.names:
                    pa.array([], have.field(c).type).cast(f.type)  # raises if the file's type does not cast
            units.append({"task_id": i, "path": path, "n_bytes": int(a["size_bytes"])})
        return units
    except Exception:  # noqa: BLE001 - any doubt: Spark's reader
        return None


# What opening one file costs, in bytes of reading (Spark's openCostInBytes is 4 MB for a JVM reader; a file here
# costs a stat, an open and the reader's set-up in the Python worker: a few ms, some 256 KB of parsing)
OPEN_COST_BYTES = 256 << 10
MAX_PARTITION_BYTES = 128 << 20  # most bytes one Spark task reads (Spark's maxPartitionBytes)


def pack_tasks(tasks, parallelism: int, max_bytes: int = MAX_PARTITION_BYTES,
               open_cost: int = OPEN_COST_BYTES) -> list[list[dict]]:
    """Group tasks (files, byte ranges, row groups) into Spark partitions by bytes: each task weighs its bytes plus
    an open cost (as Spark plans file scans), a partition holds at most `max_bytes` unless one task alone is bigger,
    and the number of partitions is a multiple of `parallelism` so that no core idles in the last wave. Tasks are
    placed largest first on the lightest partition (LPT), which keeps the partitions within one task of each other.
    2,000 small files then make a few Spark tasks instead of 2,000, each of which paid a Python worker round trip."""
    if not tasks:
        return []
    par = max(1, parallelism)
    weights = {t["task_id"]: t.get("n_bytes", 0) + open_cost for t in tasks}
    n = -(-sum(weights.values()) // max_bytes)  # ceil: the fewest partitions under max_bytes
    n = min(len(tasks), -(-n // par) * par)     # rounded up to whole waves of `par` tasks
    loads = [0] * n
    groups: list[list[dict]] = [[] for _ in range(n)]
    for t in sorted(tasks, key=lambda t: (-weights[t["task_id"]], t["task_id"])):
        i = min(range(n), key=lambda k: (loads[k], k))
        groups[i].append(t)
        loads[i] += weights[t["task_id"]]
    return [sorted(g, key=lambda t: t["task_id"]) for g in groups if g]


def file_frame(spark, units: list[dict]):
    """DataFrame[path string]: one Spark partition per group of `units` packed by bytes (`pack_tasks`)."""
    groups = pack_tasks(units, spark.sparkContext.defaultParallelism)
    rows = [[(u["path"],) for u in g] for g in groups]
    rdd = spark.sparkContext.parallelize(rows, max(1, len(rows))).flatMap(lambda g: g)
    return spark.createDataFrame(rdd, "path string")


def read_files(batches, columns: list[str], schema):
    """Inside a worker: the rows of every file named by the `path` rows of `batches`, as Arrow batches of
    `schema` (columns a file lacks are nulls, as Delta reads them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([f.with_nullable(True) for f in schema])
    for b in batches:
        for path in b.column("path").to_pylist():
            pf = pq.ParquetFile(path)
            have = set(pf.schema_arrow.names)
            for fb in pf.iter_batches(batch_size=READ_BATCH_ROWS, columns=[c for c in columns if c in have]):
                yield pa.RecordBatch.from_arrays(
                    [fb.column(c).cast(f.type) if c in have else pa.nulls(fb.num_rows, f.type)
                     for c, f in zip(columns, schema)], schema=schema)
