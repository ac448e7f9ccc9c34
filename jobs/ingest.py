"""Ingest: raw JSONL / plain text / Parquet / CSV sources -> the `documents` and `quarantine` Delta tables.

Files are cut into units of work (byte ranges of uncompressed JSONL, whole gzip/text/CSV files, Parquet row groups),
packed by bytes into Spark tasks (`pack_tasks`); each task parses its records in Python (`udfs/records.py`).
Every raw unit becomes exactly one row: a document, or a quarantine entry with its reason, raw payload and trace.

Two writers give the same rows (`ingest.writer`): by default (a local lake, either table backend) each task writes
its documents and quarantine rows straight into Parquet files of the two tables' write folders and returns only a
key per document, so the text never crosses into the JVM and is read once, written once (`write_direct`); with a
lake on object storage, or `writer: spark`, the tasks return Arrow batches to Spark's writer (`write_with_spark`).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import glob
import time

from jobs import direct, storage
from jobs.cli import UserError, run_main
from jobs.config import load_yaml
from jobs.runner import Flag, Stage, stage_main
from jobs.schema import (DOCUMENT_COLUMNS, QUARANTINE_DDL, TRACE_DDL, document_arrow_schema, estimate_tokens,
                         estimate_tokens_arrow, estimate_tokens_col, quarantine_arrow_schema)
from jobs.session import REPO_ROOT
from jobs.stage import log

DESCRIPTION = """\
Read raw sources into the `documents` table; records that fail validation go to `quarantine`.

Sources come from a YAML file (--sources, default from conf/pipeline.yaml: conf/sources.yaml) or from one
source given by flags (--input, --format, --source, --domain). Formats: jsonl (also .jsonl.gz), text (one
document per file or per blank-line separated paragraph), parquet, csv (header row required), warc (.warc,
.warc.gz: each 2xx HTML response record becomes a document of the page's main text, extracted with trafilatura
under a per-page time limit, ingest.html; other records are counted per kind in metrics extra.skipped_records).

Ids: `<source>/<value of --id-field>` when the source gives one, else `<source>/<sha1(source, file, line/row)>`;
stable across re-runs. No single record can end the job: each one becomes a document or a quarantine row with
a reason (invalid_utf8, invalid_unicode, invalid_json, too_deep, not_an_object, invalid_csv, missing_text_field,
text_not_string, empty_text, too_large, invalid_record, unreadable_file, duplicate_id; see udfs/records.py).
Blank lines are not records: they are counted (metrics extra.blank_lines), so
lines = documents + quarantined + blank. A UTF-8 BOM at the start of a file is removed. Lines are read with a
length limit (ingest.max_line_bytes, default 8 x max_doc_bytes), so memory stays bounded on any input.
A re-run on unchanged files with the same config is skipped (see the metrics table); --force runs again.

examples:
  python jobs/ingest.py --lake ./lake --sources conf/sources.yaml
  python jobs/ingest.py --lake ./lake --input 'dumps/*.jsonl.gz' --format jsonl --source crawl --domain web \\
      --id-field doc_id --url-field url
"""

FORMAT_SUFFIXES = {
    "jsonl": (".jsonl", ".jsonl.gz", ".json", ".ndjson", ".ndjson.gz"),
    "text": (".txt", ".md", ".text"),
    "parquet": (".parquet",),
    "csv": (".csv", ".tsv"),
    "warc": (".warc", ".warc.gz"),
}

UNIT_DDL = (
    "kind string, id string, text string, url string, meta string, "
    f"trace {TRACE_DDL}, n_bytes bigint, text_sha256 string, reason string, detail string, raw binary, "
    "raw_length bigint, raw_truncated boolean, quarantine_id string, source string, domain string, "
    "order_file string, order_pos bigint, task_id int"
)
TASK_DDL = ("task_id int, source_idx int, fmt string, path string, file string, rel_file string, start bigint, "
            "end bigint, line_base bigint, row_group int, row_base bigint")


# ---- sources and tasks (driver side: file metadata only) --------------------------------------------------------------
def resolve_path(path: str) -> str:
    if storage.is_remote(path):
        return path
    if os.path.isabs(path) or glob.has_magic(path) is False and os.path.exists(path):
        return path
    if glob.glob(path):
        return path
    return os.path.join(REPO_ROOT, path)


def list_files(spec) -> list[tuple[str, str]]:
    """(absolute path, path relative to the source root) of every input file of a source, sorted."""
    pattern = resolve_path(spec.path)
    if storage.is_remote(pattern):
        return list_remote_files(spec, pattern)
    if os.path.isdir(pattern):
        root = pattern
        files = [os.path.join(d, f) for d, _, fs in os.walk(pattern) for f in fs
                 if f.endswith(FORMAT_SUFFIXES[spec.format]) and not f.startswith((".", "_"))]
    else:
        root = os.path.dirname(pattern.split("*")[0].split("?")[0].split("[")[0]) or "."
        files = [f for f in glob.glob(pattern, recursive=True) if os.path.isfile(f)]
    if not files:
        raise UserError(f"source {spec.name!r}: no input file matches {spec.path!r}")
    out = []
    for f in sorted(os.path.abspath(x) for x in files):
        if not os.access(f, os.R_OK):
            raise UserError(f"source {spec.name!r}: cannot read {f} (permission denied)")
        out.append((f, os.path.relpath(f, os.path.abspath(root))))
    return out


def list_remote_files(spec, pattern: str) -> list[tuple[str, str]]:
    """`list_files` for an s3:// source: every object under a prefix (with the format's suffix), or the objects
    matching a glob (`*` may span '/', as in `s3://bucket/crawl/*.jsonl`)."""
    import fnmatch

    storage.check_supported(pattern, f"source {spec.name!r}:")
    magic = [i for i, ch in enumerate(pattern) if ch in "*?["]
    if magic:
        root = pattern[:magic[0]].rsplit("/", 1)[0]
        files = [f for f in storage.list_files(root) if fnmatch.fnmatchcase(f, pattern)]
    else:
        root = pattern.rstrip("/")
        files = [f for f in storage.list_files(root)
                 if f == root or (f.endswith(FORMAT_SUFFIXES[spec.format])
                                  and not f.rsplit("/", 1)[1].startswith((".", "_")))]
        if files == [root]:
            root = root.rsplit("/", 1)[0]
    if not files:
        raise UserError(f"source {spec.name!r}: no input object matches {spec.path!r}")
    return [(f, f[len(root):].lstrip("/")) for f in sorted(files)]


def display_path(path: str) -> str:
    if storage.is_remote(path):
        return path
    rel = os.path.relpath(path, REPO_ROOT)
    return path if rel.startswith("..") else rel


def load_sources(args, cfg):
    from udfs.records import SourceSpec

    if args.input:
        missing = [f for f in ("format", "source", "domain") if not getattr(args, f)]
        if missing:
            raise UserError(f"--input needs --{' --'.join(missing)}")
        d = {"name": args.source, "domain": args.domain, "format": args.format, "path": args.input,
             "text_field": args.text_field, "id_field": args.id_field, "url_field": args.url_field,
             "text_mode": args.text_mode or cfg.get("text_mode", "file")}
        try:
            return [SourceSpec.from_dict(d)]
        except ValueError as e:
            raise UserError(str(e))
    path = args.sources or cfg.get("sources") or "conf/sources.yaml"
    path = path if os.path.exists(path) else os.path.join(REPO_ROOT, path)
    data = load_yaml(path)
    entries = data.get("sources")
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{path}: expected a non-empty list under 'sources'")
    specs = []
    for e in entries:
        try:
            specs.append(SourceSpec.from_dict(e, {"text_mode": cfg.get("text_mode", "file")}))
        except (ValueError, TypeError) as ex:
            raise UserError(f"{path}: {ex}")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise UserError(f"{path}: source names must be unique")
    return specs


def plan_tasks(specs, chunk_bytes: int):
    import pyarrow.parquet as pq

    tasks, fingerprint, total_bytes = [], [], 0
    for si, spec in enumerate(specs):
        for path, rel in list_files(spec):
            size, mtime = storage.stat(path)
            total_bytes += size
            fingerprint.append([spec.name, display_path(path), size, int(mtime)])
            base = dict(source_idx=si, fmt=spec.format, path=path, file=display_path(path), rel_file=rel, start=0,
                        end=-1, line_base=0, row_group=0, row_base=0)
            if spec.format in ("jsonl", "warc") and not path.endswith(".gz") and size > chunk_bytes:
                for start in range(0, size, chunk_bytes):
                    end = min(start + chunk_bytes, size)
                    tasks.append({**base, "start": start, "end": end, "n_bytes": end - start})
            elif spec.format == "parquet":
                try:
                    md = pq.ParquetFile(storage.open_input(path) if storage.is_remote(path) else path).metadata
                except Exception as e:
                    raise UserError(f"source {spec.name!r}: cannot read Parquet file {path}: {e}")
                row_base = 0
                for rg in range(md.num_row_groups):
                    tasks.append({**base, "row_group": rg, "row_base": row_base,
                                  "n_bytes": md.row_group(rg).total_byte_size})
                    row_base += md.row_group(rg).num_rows
            else:
                tasks.append({**base, "n_bytes": size})
    for i, t in enumerate(tasks):
        t["task_id"] = i
    return tasks, fingerprint, total_bytes


# pack_tasks and its byte constants live in jobs.direct, which table readers share; ingest plans with them too
OPEN_COST_BYTES, MAX_PARTITION_BYTES, pack_tasks = direct.OPEN_COST_BYTES, direct.MAX_PARTITION_BYTES, direct.pack_tasks


def task_frame(spark, tasks, max_bytes: int = MAX_PARTITION_BYTES):
    """The tasks as a DataFrame, one Spark partition per group of `pack_tasks`."""
    cols = [c.split()[0] for c in TASK_DDL.split(", ")]
    groups = pack_tasks(tasks, spark.sparkContext.defaultParallelism, max_bytes)
    rows = [[tuple(t[c] for c in cols) for t in g] for g in groups]
    rdd = spark.sparkContext.parallelize(rows, max(1, len(rows))).flatMap(lambda g: g)
    return spark.createDataFrame(rdd, TASK_DDL)


def assign_line_bases(spark, tasks):
    """Line numbers of chunked JSONL files: count line starts per chunk in Spark, prefix-sum per file."""
    chunked = [t for t in tasks if t["fmt"] == "jsonl" and t["end"] >= 0]
    if not chunked:
        return

    def count(batches):
        import pyarrow as pa

        from udfs import fileio
        from udfs.records import count_line_starts

        for b in batches:
            ids, counts = [], []
            for t in b.to_pylist():
                ids.append(t["task_id"])
                counts.append(count_line_starts(t["path"], t["start"], t["end"], fileio.size(t["path"])))
            yield pa.RecordBatch.from_pydict({"task_id": pa.array(ids, pa.int32()), "n": pa.array(counts, pa.int64())})

    counts = {r["task_id"]: r["n"] for r in task_frame(spark, chunked).mapInArrow(count, "task_id int, n bigint")
              .collect()}
    running = {}
    for t in sorted(chunked, key=lambda t: (t["path"], t["start"])):
        t["line_base"] = running.get(t["path"], 0)
        running[t["path"]] = t["line_base"] + counts[t["task_id"]]


def unit_order_pos(u: dict) -> int:
    """Position of a unit inside its file, for ordering and for "first seen at": byte offset, else row, else line."""
    tr = u["trace"]
    return tr["byte_offset"] if tr["byte_offset"] is not None else (
        tr["row"] if tr["row"] is not None else tr["line"] or 0)


def tagged_units(batches, specs, limits):
    """Every unit of the task rows in `batches`, tagged with its source, domain, task and position in its file.
    Blank lines and WARC records that are not pages (`skip` units) are not stored: each task yields one `blank`
    unit, and one `skipped` unit per kind of record, holding their count in `n_bytes`."""
    from udfs import records as R

    for b in batches:
        for t in b.to_pylist():
            spec = specs[t["source_idx"]]
            counted: dict = {}  # ("blank", None) | ("skipped", kind of WARC record) -> units
            for u in R.iter_task_units(spec, t, limits):
                if u["kind"] in ("blank", "skip"):
                    key = ("blank", None) if u["kind"] == "blank" else ("skipped", u["reason"])
                    counted[key] = counted.get(key, 0) + 1
                    continue
                u["source"], u["domain"], u["task_id"] = spec.name, spec.domain, t["task_id"]
                u["order_file"] = t["file"]
                u["order_pos"] = unit_order_pos(u)
                yield u
            for (kind, reason), n in sorted(counted.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
                yield {"kind": kind, "reason": reason, "n_bytes": n, "source": spec.name, "domain": spec.domain,
                       "task_id": t["task_id"], "order_file": t["file"], "order_pos": t["start"]}


def batched_units(units, batch_rows: int, batch_bytes: int):
    """Lists of units of at most `batch_rows` rows or about `batch_bytes` bytes of text / raw payload."""
    rows, size = [], 0
    for u in units:
        rows.append(u)
        size += u.get("n_bytes") or u.get("raw_length") or 0
        if len(rows) >= batch_rows or size >= batch_bytes:
            yield rows
            rows, size = [], 0
    if rows:
        yield rows


def parse_tasks_fn(specs, limits, batch_rows: int = 2000, batch_bytes: int = 64 << 20):
    """The function run inside `mapInArrow`: task rows in, unit rows (documents, quarantine, blank counts) out."""
    from udfs.records import unit_arrow_schema

    schema = unit_arrow_schema()

    def run(batches):
        from udfs import records as R

        for rows in batched_units(tagged_units(batches, specs, limits), batch_rows, batch_bytes):
            yield R.rows_to_batch(rows, schema, limits)

    return run


def original_bytes(specs, limits, by_id, wanted: dict) -> dict:
    """{(task_id, order_pos): the raw bytes of that unit's line / row}, re-read from the task's file, for
    duplicate-id rows (documents do not carry their raw bytes; duplicates are rare). `wanted`: task_id -> positions."""
    from udfs import records as R

    found = {}
    for tid, positions in wanted.items():
        t = by_id[tid]
        left = set(positions)
        for u in R.iter_task_units(specs[t["source_idx"]], t, limits, keep_raw=True):
            pos = unit_order_pos(u) if u["kind"] == "doc" else None
            if pos in left:
                found[(tid, pos)] = u["raw"]
                left.discard(pos)
                if not left:
                    break
    return found


def duplicate_raw_fn(specs, limits, tasks):
    """mapInArrow over duplicate-id rows (grouped by task): give every row the original bytes of its line / row."""
    by_id = {t["task_id"]: t for t in tasks}

    def run(batches):
        import pyarrow as pa

        raw_max = limits.raw_payload_max_bytes
        for b in batches:
            rows = b.to_pylist()
            wanted = {}
            for r in rows:
                wanted.setdefault(r["task_id"], set()).add(r["order_pos"])
            found = original_bytes(specs, limits, by_id, wanted)
            raws = [found.get((r["task_id"], r["order_pos"])) for r in rows]
            raws = [x if x is not None else r["text"].encode("utf-8") for x, r in zip(raws, rows)]
            yield pa.RecordBatch.from_pydict({
                **{c: b.column(c) for c in b.schema.names if c != "text"},
                "raw": pa.array([x[:raw_max] for x in raws], pa.binary()),
                "raw_length": pa.array([len(x) for x in raws], pa.int64()),
                "raw_truncated": pa.array([len(x) > raw_max for x in raws], pa.bool_()),
            })

    return run


# ---- the direct writer: workers parse and write the tables' Parquet files themselves --------------------------------
# What the workers return instead of the data: one `key` row per document (for duplicate ids), one `file` row per
# Parquet file written, `stat` rows of counts per (table, source, reason). A few narrow rows per document, so the
# text crosses from Python to the JVM not at all.
META_DDL = ("kind string, tbl string, part string, id string, order_file string, order_pos bigint, line bigint, "
            "row bigint, task_id int, part_row bigint, source string, reason string, n bigint, b bigint, t bigint, "
            "detail string")


def _meta_schema():
    return direct.meta_schema(META_DDL)


def _meta_batch(rows: list[dict]):
    return direct.meta_batch(rows, META_DDL)


def _key_batch(units, docs, part: str, base: int):
    """The `key` META rows of a batch of documents: their id and position, and their row in file `part`."""
    import pyarrow as pa

    schema, n = _meta_schema(), units.num_rows
    trace = units.column("trace")
    cols = {"kind": pa.array(["key"] * n, pa.string()), "part": pa.array([part] * n, pa.string()),
            "id": units.column("id"), "order_file": units.column("order_file"),
            "order_pos": units.column("order_pos"), "line": trace.field("line"), "row": trace.field("row"),
            "task_id": units.column("task_id"), "part_row": pa.array(range(base, base + n), pa.int64()),
            "source": units.column("source"), "t": docs.column("n_tokens_est")}
    return pa.RecordBatch.from_arrays([cols[f.name] if f.name in cols else pa.nulls(n, f.type) for f in schema],
                                      schema=schema)


def _table_batch(units, tbl: str, schema, ingest_run: str):
    """The rows of one table (`documents` or `quarantine`) from a batch of unit rows of that kind, in the table's
    column order and Arrow types."""
    import pyarrow as pa

    n = units.num_rows
    cols = {name: units.column(name) for name in units.schema.names}
    cols["ingest_run"] = pa.array([ingest_run] * n, pa.string())
    if tbl == "doc":
        cols["n_tokens_est"] = estimate_tokens_arrow(cols["n_bytes"])
    return pa.RecordBatch.from_arrays([cols[f.name].cast(f.type) for f in schema], schema=schema)


def parse_write_fn(specs, limits, folders: dict, schemas: dict, ingest_run: str, batch_rows: int = 2000,
                   batch_bytes: int = 32 << 20):
    """mapInArrow over task rows: parse every unit (`udfs/records.py`), write documents and quarantine rows into
    this task's Parquet file of each table's write folder (`folders`: doc / quarantine -> path) and return only
    META rows. A failed attempt's file has its own name (attempt number) and is never committed."""
    from udfs.records import unit_arrow_schema

    unit_schema = unit_arrow_schema()

    def run(batches):
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from udfs import records as R

        stem = direct.part_stem()
        writers, written, stats = {}, {"doc": 0, "quarantine": 0}, {}

        def flush(rows):
            batch = R.rows_to_batch(rows, unit_schema, limits)
            kinds = batch.column("kind")
            for tbl in ("doc", "quarantine"):
                sel = batch.filter(pc.equal(kinds, tbl))
                if not sel.num_rows:
                    continue
                if tbl not in writers:
                    writers[tbl] = pq.ParquetWriter(os.path.join(folders[tbl], stem + ".parquet"), schemas[tbl],
                                                    compression="snappy")
                out = _table_batch(sel, tbl, schemas[tbl], ingest_run)
                writers[tbl].write_batch(out)
                sources, reasons = sel.column("source").to_pylist(), sel.column("reason").to_pylist()
                sizes = sel.column("n_bytes" if tbl == "doc" else "raw_length").to_pylist()
                tokens = out.column("n_tokens_est").to_pylist() if tbl == "doc" else [0] * len(sizes)
                details = sel.column("detail").to_pylist()
                for src, rsn, size, tok, det in zip(sources, reasons, sizes, tokens, details):
                    st = stats.get((tbl, src, rsn))
                    if st is None:
                        st = stats[(tbl, src, rsn)] = [0, 0, 0, det]
                    st[0] += 1
                    st[1] += size or 0
                    st[2] += tok or 0
                if tbl == "doc":
                    yield _key_batch(sel, out, stem + ".parquet", written["doc"])
                written[tbl] += sel.num_rows

        def records(units):  # blank-line and skipped-record counts go to the stats, not into a table
            for u in units:
                if u["kind"] in ("blank", "skipped"):
                    stats.setdefault((u["kind"], u["source"], u["reason"]), [0, 0, 0, None])[0] += u["n_bytes"]
                else:
                    yield u

        for rows in batched_units(records(tagged_units(batches, specs, limits)), batch_rows, batch_bytes):
            yield from flush(rows)
        for w in writers.values():
            w.close()
        out = [{"kind": "file", "tbl": tbl, "part": stem + ".parquet", "n": written[tbl]} for tbl in writers]
        out += [{"kind": "stat", "tbl": tbl, "source": src, "reason": rsn, "n": v[0], "b": v[1], "t": v[2],
                 "detail": v[3]} for (tbl, src, rsn), v in stats.items()]
        if out:
            yield _meta_batch(out)

    return run


def drop_duplicates_fn(specs, limits, tasks, folders: dict, schemas: dict, ingest_run: str):
    """mapInArrow over the key rows of later duplicate ids, one partition per documents file holding some: write
    that file again without them (`<part>.k.parquet`; the driver deletes the original), and write them to a
    quarantine file as `duplicate_id` rows with the original bytes of their line / row and where the id was first
    seen. Returns META rows (`file` with `detail` = the file it replaces, `stat` per source)."""
    by_id = {t["task_id"]: t for t in tasks}

    def run(batches):
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        raw_max = limits.raw_payload_max_bytes
        keys = [r for b in batches for r in b.to_pylist()]
        if not keys:
            return
        stem = direct.part_stem()
        by_part = {}
        for r in keys:
            by_part.setdefault(r["part"], []).append(r)
        q_parts, out, stats = [], [], {}
        for part, rows in sorted(by_part.items()):
            docs = pq.read_table(os.path.join(folders["doc"], part), schema=schemas["doc"])
            drop = pa.array(sorted(r["part_row"] for r in rows), pa.int64())
            mask = pc.is_in(pa.array(range(docs.num_rows), pa.int64()), value_set=drop)
            kept, gone = docs.filter(pc.invert(mask)), docs.filter(mask)
            new_part = part[: -len(".parquet")] + f".k-{stem}.parquet"
            if kept.num_rows:
                pq.write_table(kept, os.path.join(folders["doc"], new_part), compression="snappy")
            out.append({"kind": "file", "tbl": "doc", "part": new_part if kept.num_rows else None,
                        "n": kept.num_rows, "detail": part})
            info = {r["part_row"]: r for r in rows}
            order = sorted(info)  # `gone` keeps the file's row order
            wanted = {}
            for pr in order:
                wanted.setdefault(info[pr]["task_id"], set()).add(info[pr]["order_pos"])
            found = original_bytes(specs, limits, by_id, wanted)
            texts = gone.column("text").to_pylist()
            raws = [found.get((info[pr]["task_id"], info[pr]["order_pos"])) or texts[i].encode("utf-8")
                    for i, pr in enumerate(order)]
            q_parts.append(pa.table({
                "quarantine_id": [f"{info[pr]['id']}#dup@{info[pr]['order_file']}:{info[pr]['order_pos']}"
                                  for pr in order],
                "id": gone.column("id"), "source": gone.column("source"), "domain": gone.column("domain"),
                "reason": ["duplicate_id"] * gone.num_rows,
                "detail": [f"first seen at {info[pr]['detail']}" for pr in order],
                "raw": pa.array([x[:raw_max] for x in raws], pa.binary()),
                "raw_length": pa.array([len(x) for x in raws], pa.int64()),
                "raw_truncated": [len(x) > raw_max for x in raws],
                "trace": gone.column("trace"), "ingest_run": [ingest_run] * gone.num_rows,
            }).cast(schemas["quarantine"]))
            for src, tok, raw in zip(gone.column("source").to_pylist(), gone.column("n_tokens_est").to_pylist(), raws):
                st = stats.setdefault(src, [0, 0, 0])
                st[0] += 1
                st[1] += len(raw)
                st[2] += tok or 0
        q_part = f"dup-{stem}.parquet"
        pq.write_table(pa.concat_tables(q_parts), os.path.join(folders["quarantine"], q_part), compression="snappy")
        out.append({"kind": "file", "tbl": "quarantine", "part": q_part, "n": sum(t.num_rows for t in q_parts)})
        out += [{"kind": "stat", "tbl": "dup", "source": src, "reason": "duplicate_id", "n": v[0], "b": v[1],
                 "t": v[2]} for src, v in stats.items()]
        yield _meta_batch(out)

    return run


def check_text_field(specs, unit_stats) -> None:
    """A source whose every record lacks its text field is a configuration error, not bad data: one line naming
    the fields its records do have, before anything is written."""
    by_source: dict = {}
    for r in unit_stats:
        if r["kind"] in ("doc", "quarantine"):
            by_source.setdefault(r["source"], []).append(r)
    for spec in specs:
        rows = by_source.get(spec.name, [])
        if rows and all(r["kind"] == "quarantine" and r["reason"] == "missing_text_field" for r in rows):
            detail = next((r["detail"] for r in rows if r["detail"]), "")
            raise UserError(f"source {spec.name!r}: no record has the text field {spec.text_field!r} ({detail}); "
                            f"set text_field for this source (--text-field, or text_field: in the sources file)")


def resolve_limits(args, cfg):
    from udfs.records import Limits
    from udfs.warc import HtmlOptions

    try:
        return Limits(max_doc_bytes=int(args.max_doc_bytes or cfg.get("max_doc_bytes", 1 << 20)),
                      raw_payload_max_bytes=int(cfg.get("raw_payload_max_bytes", 64 << 10)),
                      max_line_bytes=None if cfg.get("max_line_bytes") is None else int(cfg["max_line_bytes"]),
                      max_json_depth=int(cfg.get("max_json_depth", 100)),
                      max_skip_bytes=int(cfg.get("max_skip_bytes", 64 << 20)),
                      html=HtmlOptions(**(cfg.get("html") or {})))
    except (TypeError, ValueError) as e:
        raise UserError(f"ingest limits: {e}")


# ---- the stage --------------------------------------------------------------------------------------------------------
def prepare(ctx) -> None:
    """Sources, limits and the task plan from file metadata only (no Spark): the files' names, sizes and mtimes
    identify the run, so a re-run on unchanged files is skipped before any Spark job."""
    args, cfg = ctx.args, ctx.params
    specs = load_sources(args, cfg)
    limits = resolve_limits(args, cfg)
    tasks, fingerprint, total_bytes = plan_tasks(specs, int(cfg.get("chunk_bytes", 32 << 20)))
    max_task_bytes = int(cfg.get("max_task_bytes", MAX_PARTITION_BYTES))
    if max_task_bytes < 1:
        raise UserError(f"ingest.max_task_bytes must be >= 1, got {max_task_bytes}")
    ctx.state.update(specs=specs, limits=limits, tasks=tasks, fingerprint=fingerprint, total_bytes=total_bytes,
                     max_task_bytes=max_task_bytes)
    ctx.run_config = {"sources": [s.__dict__ for s in specs], "limits": limits.__dict__, "append": args.append}
    ctx.extra_key = fingerprint


def plan(ctx) -> None:
    from pyspark.sql import functions as F

    spark, lake, run, args = ctx.spark, ctx.lake, ctx.run, ctx.args
    st = ctx.state
    specs, tasks, fingerprint, total_bytes = st["specs"], st["tasks"], st["fingerprint"], st["total_bytes"]
    out_t, q_t = ctx.tables["output_table"], ctx.tables["quarantine_table"]
    n_parts = len(pack_tasks(tasks, spark.sparkContext.defaultParallelism, st["max_task_bytes"]))
    use_direct = direct.enabled(ctx)
    log(f"ingest: {len(specs)} source(s), {len(fingerprint)} file(s), {total_bytes / 1e6:.1f} MB: {len(tasks)} "
        f"unit(s) of work in {n_parts} Spark task(s); "
        + ("the workers write the Parquet files" if use_direct else "Spark writes the Parquet files"))

    assign_line_bases(spark, tasks)
    # Same value for every attempt of the same run key, so a restarted run can find what an attempt committed.
    ingest_run = f"ingest-{run.config_hash}"
    mode = "append" if args.append else "overwrite"
    stats = (write_direct if use_direct else write_with_spark)(ctx, ingest_run, mode)

    seconds = max(time.time() - run._t0, 1e-9)
    docs_out, q_rows, blank_lines = stats["docs"], stats["quarantined"], stats["blank_lines"]
    skipped = stats["skipped_records"]
    extra = {
        "input_files": len(fingerprint), "input_bytes": total_bytes, "tasks": len(tasks),
        "parse_failure_rate": (stats["parse_failures"] / (docs_out + q_rows)) if docs_out + q_rows else 0.0,
        "duplicate_ids": stats["reasons"].get("duplicate_id", 0), "blank_lines": blank_lines,
        "input_units": docs_out + q_rows + blank_lines + sum(skipped.values()), "skipped_records": skipped,
        "docs_per_s": (docs_out + q_rows) / seconds, "mb_per_s": total_bytes / 1e6 / seconds,
        "per_source": stats["per_source"], "quarantine_table": q_t,
    }
    run.finish(docs_in=docs_out + q_rows, docs_out=docs_out, docs_rejected=q_rows,
               tokens_in=stats["tokens_out"] + stats["quarantined_tokens"], tokens_out=stats["tokens_out"],
               reasons=stats["reasons"], extra=extra, output_table=out_t)
    if q_rows:
        path = run.write_audit(lake.read(q_t).where(F.col("ingest_run") == ingest_run), q_t,
                               order_col="quarantine_id")
        log(f"ingest: audit sample of quarantined records: {path}")
    log(f"ingest: {docs_out} documents -> {lake.path(out_t)}; {q_rows} quarantined -> {lake.path(q_t)}; "
        f"{extra['mb_per_s']:.2f} MB/s")
    return 0


def write_direct(ctx, ingest_run: str, mode: str) -> dict:
    """One Spark job parses and writes both tables' files (`parse_write_fn`); a shuffle of the narrow key rows finds
    duplicate ids; only the documents files holding later duplicates are written again (`drop_duplicates_fn`).
    The counts come from the workers' stat rows, so nothing committed is read back."""
    from pyspark.sql import functions as F

    spark, lake, run = ctx.spark, ctx.lake, ctx.run
    specs, limits, tasks = ctx.state["specs"], ctx.state["limits"], ctx.state["tasks"]
    out_t, q_t = ctx.tables["output_table"], ctx.tables["quarantine_table"]
    schemas = {"doc": document_arrow_schema(), "quarantine": quarantine_arrow_schema()}
    folders = direct.WriteFolders(lake, {"doc": out_t, "quarantine": q_t})
    t0 = time.perf_counter()
    try:
        worker = parse_write_fn(specs, limits, folders.paths, schemas, ingest_run)
        meta = task_frame(spark, tasks, ctx.state["max_task_bytes"]).mapInArrow(worker, META_DDL).persist()
        small = [r.asDict() for r in meta.where(F.col("kind") != "key").collect()]
        check_text_field(specs, [{"kind": r["tbl"], "source": r["source"], "reason": r["reason"],
                                  "detail": r["detail"]} for r in small if r["kind"] == "stat"])
        keys = meta.where(F.col("kind") == "key")
        dup_ids = duplicate_ids(keys, F.col("line"), F.col("row"))
        if not dup_ids.isEmpty():  # limit(1).count() took one stage more
            later = (keys.join(dup_ids, "id").where(is_later_duplicate())
                     .withColumn("detail", first_seen_at()).drop("_first"))
            small += [r.asDict() for r in later.repartition("part").mapInArrow(
                drop_duplicates_fn(specs, limits, tasks, folders.paths, schemas, ingest_run), META_DDL).collect()]
        meta.unpersist()
    except BaseException:
        folders.discard()
        raise
    files = [r for r in small if r["kind"] == "file"]
    replaced = {("doc", r["detail"]) for r in files if r["tbl"] == "doc" and r["detail"]}
    # replaced documents files, and files of failed task attempts, go
    folders.keep_only({(r["tbl"], r["part"]) for r in files if r["part"]} - replaced)
    folders.commit(run, mode, schemas, seconds_data={"doc": time.perf_counter() - t0})

    stats = [r for r in small if r["kind"] == "stat"]
    docs_by_source, quarantined = {}, {}
    for r in stats:  # later duplicates were counted as documents by the parse job, then moved to quarantine
        if r["tbl"] in ("doc", "dup"):
            sign = 1 if r["tbl"] == "doc" else -1
            d, t = docs_by_source.get(r["source"], (0, 0))
            docs_by_source[r["source"]] = (d + sign * int(r["n"]), t + sign * int(r["t"]))
        if r["tbl"] in ("quarantine", "dup"):
            n, b = quarantined.get((r["source"], r["reason"]), (0, 0))
            quarantined[(r["source"], r["reason"])] = (n + int(r["n"]), b + int(r["b"]))
    out = count_summary({k: v for k, v in docs_by_source.items() if v[0]}, quarantined)
    out["blank_lines"] = sum(int(r["n"]) for r in stats if r["tbl"] == "blank")
    out["skipped_records"] = skipped_counts((r["reason"], r["n"]) for r in stats if r["tbl"] == "skipped")
    return out


def skipped_counts(pairs) -> dict:
    """{reason: records} of the WARC records that are not pages, sorted by reason."""
    out: dict = {}
    for reason, n in pairs:
        out[reason] = out.get(reason, 0) + int(n or 0)
    return dict(sorted(out.items()))


def duplicate_ids(docs, line, row):
    """(id, _first) of every id that more than one document has; `_first` is its earliest position (file, then
    byte offset / row / line). `line`, `row`: the documents' line and row columns."""
    from pyspark.sql import functions as F

    first_key = F.struct("order_file", "order_pos", line.alias("line"), row.alias("row"))
    return (docs.groupBy("id").agg(F.count(F.lit(1)).alias("_n"), F.min(first_key).alias("_first"))
            .where(F.col("_n") > 1).select("id", "_first"))


def is_later_duplicate():
    """After a join with `duplicate_ids`: the document is not the one at its id's first position."""
    from pyspark.sql import functions as F

    return (F.col("order_file") != F.col("_first.order_file")) | (F.col("order_pos") != F.col("_first.order_pos"))


def first_seen_at():
    """`file:line` (or `file:row N`) of the id's first position, for the duplicate's quarantine detail."""
    from pyspark.sql import functions as F

    return F.concat(F.col("_first.order_file"), F.lit(":"),
                    F.coalesce(F.col("_first.line").cast("string"),
                               F.concat(F.lit("row "), F.col("_first.row").cast("string"))))


def write_with_spark(ctx, ingest_run: str, mode: str) -> dict:
    """The documents and quarantine tables through Spark's own writer (`writer: spark`, object storage): the units are
    cached, duplicate ids found with a join, and the counts read back from what was committed."""
    from pyspark.sql import functions as F

    spark, lake, run = ctx.spark, ctx.lake, ctx.run
    specs, limits, tasks = ctx.state["specs"], ctx.state["limits"], ctx.state["tasks"]
    out_t, q_t = ctx.tables["output_table"], ctx.tables["quarantine_table"]
    units = task_frame(spark, tasks, ctx.state["max_task_bytes"]).mapInArrow(parse_tasks_fn(specs, limits), UNIT_DDL)
    units = units.persist()

    docs = units.where(F.col("kind") == "doc")
    dup_cached = duplicate_ids(docs, F.col("trace.line"), F.col("trace.row")).persist()
    # Usually few: broadcast them, so the two writes below do not shuffle every document's text for the join.
    if dup_cached.count() <= BROADCAST_DUP_IDS:
        dup_ids = F.broadcast(dup_cached)
    docs = docs.join(dup_ids, "id", "left").withColumn(
        "_is_dup", F.col("_first").isNotNull() & is_later_duplicate())
    run_id = F.lit(ingest_run)
    documents = (docs.where(~F.col("_is_dup"))
                 .withColumn("n_tokens_est", estimate_tokens_col(F.col("n_bytes")))
                 .withColumn("ingest_run", run_id)
                 .select(*DOCUMENT_COLUMNS))
    dup_rows = (docs.where(F.col("_is_dup"))
                .select("id", "source", "domain", "trace", "order_file", "order_pos", "task_id", "text",
                        F.lit("duplicate_id").alias("reason"),
                        F.concat(F.lit("first seen at "), first_seen_at()).alias("detail"),
                        F.concat(F.col("id"), F.lit("#dup@"), F.col("order_file"), F.lit(":"),
                                 F.col("order_pos").cast("string")).alias("quarantine_id")))
    # the later record's original bytes (its JSONL line / CSV row), re-read from its file
    dup_q = (dup_rows.repartition("task_id").sortWithinPartitions("task_id", "order_pos")
             .mapInArrow(duplicate_raw_fn(specs, limits, tasks), DUP_DDL))
    q_cols = [c.split()[0] for c in QUARANTINE_DDL.split(", ")]
    quarantine = (units.where(F.col("kind") == "quarantine").unionByName(dup_q, allowMissingColumns=True)
                  .withColumn("ingest_run", run_id).select(*q_cols))
    # one small pass over the cached units: blank lines, and sources that yielded no document at all
    unit_stats = (units.groupBy("source", "kind", "reason")
                  .agg(F.count(F.lit(1)).alias("n"), F.sum("n_bytes").alias("b"), F.first("detail").alias("detail"))
                  .collect())
    check_text_field(specs, unit_stats)

    run.write(documents, out_t, mode=mode)
    run.write(quarantine, q_t, mode=mode)
    units.unpersist()
    dup_cached.unpersist()
    # Counts come from what was committed: this run's files only.
    stats = units_written_stats(lake, out_t, q_t, ingest_run)
    stats["blank_lines"] = sum(int(r["b"] or 0) for r in unit_stats if r["kind"] == "blank")
    stats["skipped_records"] = skipped_counts((r["reason"], r["b"]) for r in unit_stats if r["kind"] == "skipped")
    return stats


DUP_DDL = (f"id string, source string, domain string, trace {TRACE_DDL}, order_file string, order_pos bigint, "
           "task_id int, reason string, detail string, quarantine_id string, raw binary, raw_length bigint, "
           "raw_truncated boolean")
BROADCAST_DUP_IDS = 200_000  # duplicate ids up to this many are broadcast to the join, else shuffled
PARSE_FAILURES = ("invalid_json", "invalid_utf8", "invalid_unicode", "not_an_object")


def units_written_stats(lake, out_t, q_t, ingest_run) -> dict:
    from pyspark.sql import functions as F

    docs = lake.read(out_t).where(F.col("ingest_run") == ingest_run)
    quar = lake.read(q_t).where(F.col("ingest_run") == ingest_run)
    docs_by_source = {r["source"]: (int(r["d"]), int(r["t"] or 0))
                      for r in docs.groupBy("source").agg(F.count(F.lit(1)).alias("d"),
                                                          F.sum("n_tokens_est").alias("t")).collect()}
    quarantined = {(r["source"], r["reason"]): (int(r["n"]), int(r["b"] or 0))
                   for r in quar.groupBy("source", "reason").agg(F.count(F.lit(1)).alias("n"),
                                                                 F.sum("raw_length").alias("b")).collect()}
    return count_summary(docs_by_source, quarantined)


def count_summary(docs_by_source: dict, quarantined: dict) -> dict:
    """A run's counts from {source: (documents, tokens)} and {(source, reason): (rows, raw bytes)} (both writers);
    a quarantined group's tokens are estimated from its raw bytes."""
    per_source = {src: {"docs": d, "tokens": t} for src, (d, t) in docs_by_source.items()}
    reasons, q_tokens = {}, 0
    for (src, reason), (n, b) in quarantined.items():
        reasons[reason] = reasons.get(reason, 0) + n
        q_tokens += estimate_tokens(b)
        per_source.setdefault(src, {"docs": 0, "tokens": 0})[f"quarantined_{reason}"] = n
    return {"docs": sum(v["docs"] for v in per_source.values()),
            "tokens_out": sum(v["tokens"] for v in per_source.values()),
            "quarantined": sum(reasons.values()), "quarantined_tokens": q_tokens, "reasons": reasons,
            "parse_failures": sum(reasons.get(k, 0) for k in PARSE_FAILURES), "per_source": per_source}


STAGE = Stage(
    name="ingest", doc=DESCRIPTION, input_table=None,
    outputs={"output_table": "documents", "quarantine_table": "quarantine"},
    flags=[Flag("--sources", "sources", "YAML file listing sources (default: ingest.sources in the pipeline config)"),
           Flag("--input", None, "one source: a file, folder or glob (instead of --sources)"),
           Flag("--format", None, "format of --input", choices=("jsonl", "text", "parquet", "csv", "warc")),
           Flag("--source", None, "source name for --input (letters, digits, _ . -); part of every id"),
           Flag("--domain", None, "domain of --input (used by the mixture stage)"),
           Flag("--text-field", None, "field / column holding the text (default text)", default="text"),
           Flag("--id-field", None, "field / column holding a record id (default: none, hash)"),
           Flag("--url-field", None, "field / column holding the URL (default: none)"),
           Flag("--text-mode", None, "text format: one document per file or per blank-line separated paragraph",
                choices=("file", "paragraph")),
           Flag("--max-doc-bytes", None, "quarantine documents larger than this many UTF-8 bytes (default 1048576)",
                type=int),
           Flag("--append", None, "append to the documents/quarantine tables instead of replacing them",
                store_true=True, default=False)],
    prepare=prepare, plan=plan)
main = stage_main(STAGE)


if __name__ == "__main__":
    from udfs.common import exit_process

    exit_process(run_main("ingest", main))
