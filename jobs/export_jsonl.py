"""Export any lake table to sharded JSONL: one independently parseable JSON object per line.

Rows go to shard `pmod(xxhash64(id), shards)` and are sorted by `id` inside each shard, so the files depend only on
the table's content, never on Spark's partitioning. Executors write each shard under a temporary name and rename it
when complete; the driver then writes `manifest.json` (files, line counts, bytes, sha256) the same way.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import json
import math
import time

from jobs.cli import UserError, base_parser, run_main
from jobs.session import get_spark
from jobs.stage import StageRun, log
from jobs.tables import Lake

DESCRIPTION = """\
Write a lake table as JSONL shards `part-NNNNN.jsonl` plus `manifest.json` into --out.

Order is deterministic: shard = xxhash64(id) mod --shards, rows sorted by id inside a shard; the same table and
options give byte-identical files whatever the number of Spark partitions. Binary columns are written as base64,
timestamps as ISO-8601, maps as objects. Files are written under a temporary name and renamed when complete; stale
shards of an earlier export into the same folder are removed.

example:
  python jobs/export_jsonl.py --lake ./lake --table filtered --out ./out/filtered_jsonl
"""

RESULT_DDL = "shard int, file string, lines bigint, bytes bigint, sha256 string"


def build_parser():
    p = base_parser("export_jsonl", DESCRIPTION)
    p.add_argument("--table", required=True, help="table to export (e.g. documents, filtered, mixed)")
    p.add_argument("--out", required=True, help="output folder (created; must be reachable by all executors)")
    p.add_argument("--version", type=int, default=None, help="table version to export (default latest)")
    p.add_argument("--shards", type=int, default=None,
                   help="number of shards (default: ceil(rows / --rows-per-shard))")
    p.add_argument("--rows-per-shard", type=int, default=100_000, help="used when --shards is not given")
    p.add_argument("--order-by", default="id", help="column that orders rows within a shard (default id)")
    p.add_argument("--columns", default=None, help="comma-separated columns to export (default all)")
    return p


def _json_default(o):
    import base64
    import datetime as dt
    import decimal

    if isinstance(o, (bytes, bytearray)):
        return base64.b64encode(bytes(o)).decode("ascii")
    if isinstance(o, (dt.datetime, dt.date)):
        return o.isoformat()
    if isinstance(o, decimal.Decimal):
        return str(o)
    raise TypeError(f"cannot serialise {type(o).__name__}")


def _plain(value, arrow_type):
    """Arrow maps arrive from to_pylist() as lists of (key, value) pairs; write them as JSON objects."""
    import pyarrow as pa

    if value is None:
        return None
    if pa.types.is_map(arrow_type):
        return {str(k): _plain(v, arrow_type.item_type) for k, v in value}
    if pa.types.is_struct(arrow_type):
        return {f.name: _plain(value.get(f.name), f.type) for f in arrow_type}
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return [_plain(v, arrow_type.value_type) for v in value]
    return value


def shard_writer(out_dir: str, token: str):
    def write(batches):
        import hashlib

        import pyarrow as pa

        state = {"shard": None}

        def close():
            if state["shard"] is None:
                return None
            state["fh"].close()
            final = os.path.join(out_dir, f"part-{state['shard']:05d}.jsonl")
            os.replace(state["tmp"], final)
            return (state["shard"], os.path.basename(final), state["lines"], state["bytes"],
                    state["sha"].hexdigest())

        results = []
        for b in batches:
            types = {f.name: f.type for f in b.schema}
            shards = b.column("_shard").to_pylist()
            cols = [c for c in b.schema.names if c != "_shard"]
            for shard, row in zip(shards, b.select(cols).to_pylist()):
                if shard != state["shard"]:
                    done = close()
                    if done:
                        results.append(done)
                    tmp = os.path.join(out_dir, f".part-{shard:05d}.jsonl.tmp-{token}")
                    state.update(shard=shard, tmp=tmp, fh=open(tmp, "wb"), lines=0, bytes=0, sha=hashlib.sha256())
                line = (json.dumps({k: _plain(row[k], types[k]) for k in cols}, ensure_ascii=False,
                                   default=_json_default) + "\n").encode("utf-8")
                state["fh"].write(line)
                state["sha"].update(line)
                state["lines"] += 1
                state["bytes"] += len(line)
        done = close()
        if done:
            results.append(done)
        if results:
            yield pa.RecordBatch.from_pylist(
                [dict(zip(["shard", "file", "lines", "bytes", "sha256"], r)) for r in results],
                schema=pa.schema([("shard", pa.int32()), ("file", pa.string()), ("lines", pa.int64()),
                                  ("bytes", pa.int64()), ("sha256", pa.string())]))

    return write


def export(lake: Lake, table: str, out_dir: str, version=None, shards=None, rows_per_shard=100_000,
           order_by="id", columns=None) -> dict:
    from pyspark.sql import functions as F

    df = lake.read(table, version)
    if columns:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise UserError(f"table {table!r} has no column(s) {', '.join(missing)}")
        df = df.select(*columns)
    if order_by not in df.columns:
        raise UserError(f"table {table!r} has no column {order_by!r} to order by (use --order-by)")
    rows = df.count()
    n = shards or max(1, math.ceil(rows / rows_per_shard))
    if n < 1:
        raise UserError("--shards must be >= 1")
    os.makedirs(out_dir, exist_ok=True)
    token = f"{int(time.time())}{os.getpid()}"
    key = F.col(order_by).cast("string")
    sharded = (df.withColumn("_shard", F.pmod(F.xxhash64(key), F.lit(n)).cast("int"))
               .repartition(n, "_shard").sortWithinPartitions("_shard", order_by))
    results = sorted(sharded.mapInArrow(shard_writer(os.path.abspath(out_dir), token), RESULT_DDL).collect(),
                     key=lambda r: r["shard"])
    written = {r["file"] for r in results}
    for fn in os.listdir(out_dir):  # stale shards of an earlier export, and leftovers of killed tasks
        if (fn.startswith("part-") and fn.endswith(".jsonl") and fn not in written) or ".jsonl.tmp-" in fn:
            os.remove(os.path.join(out_dir, fn))
    manifest = {
        "table": table, "table_version": version if version is not None else lake.version(table),
        "lake": lake.root, "rows": rows, "shards": n, "order_by": order_by, "columns": df.columns,
        "files": [{"file": r["file"], "lines": r["lines"], "bytes": r["bytes"], "sha256": r["sha256"]}
                  for r in results],
    }
    if sum(r["lines"] for r in results) != rows:
        raise RuntimeError(f"export wrote {sum(r['lines'] for r in results)} lines for {rows} rows")
    tmp = os.path.join(out_dir, ".manifest.json.tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, os.path.join(out_dir, "manifest.json"))
    return manifest


def main(argv=None):
    args = build_parser().parse_args(argv)
    spark = get_spark("lmrefinery-export", master=args.master)
    lake = Lake(spark, args.lake)
    if not lake.exists(args.table):
        raise UserError(f"table '{args.table}' not found under lake {lake.root}")
    columns = [c.strip() for c in args.columns.split(",")] if args.columns else None
    run = StageRun(lake, "export_jsonl", {"out": os.path.abspath(args.out), "shards": args.shards,
                                          "columns": columns, "order_by": args.order_by},
                   args.table, [], force=True, input_version=args.version)
    m = export(lake, args.table, args.out, args.version, args.shards, args.rows_per_shard, args.order_by, columns)
    run.finish(docs_in=m["rows"], docs_out=m["rows"], docs_rejected=0,
               extra={"out": os.path.abspath(args.out), "files": len(m["files"])})
    log(f"export_jsonl: {m['rows']} rows of {args.table}@{m['table_version']} -> {len(m['files'])} file(s) in "
        f"{os.path.abspath(args.out)}")
    return 0


if __name__ == "__main__":
    from udfs.common import exit_process

    exit_process(run_main("export_jsonl", main))
