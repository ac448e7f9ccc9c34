#!/usr/bin/env python3
"""Content digest of a lake: one sha256 per table (rows in a canonical order, every column) and per packed file.

    python scripts/lake_digest.py --lake LAKE            # print the digest as JSON
    python scripts/lake_digest.py --lake LAKE --write F  # write it to F (tests/data/sample_digest.json)
    python scripts/lake_digest.py --lake s3://bucket/lake --input-root s3://inputs/   # a lake on object storage

`--input-root P` removes the prefix P wherever a value holds it (the input file names that ingest records),
so a lake ingested from a copy of the inputs elsewhere (a bucket) digests like one ingested from the repository.

Used to show that a refactoring leaves the bundled sample's tables and shards byte for byte the same: run the
pipeline (`jobs/pipeline.py --no-train`) with the old and the new code and compare the two digests
(tests/test_pipeline.py compares against the committed one). The `metrics` table (timestamps, run ids, seconds)
and `manifest.json` (run ids) are left out, and so is the `ingest_run` column (it hashes the input files' mtimes);
the manifest's per-file sha256 is what is compared for the shards.
Reads with delta-rs, no Spark.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SKIP_TABLES = {"metrics"}
# run identity, not content: ingest_run carries the hash of the input files' names, sizes and mtimes
SKIP_COLUMNS = {"ingest_run"}


_INPUT_ROOT = None


def _canon(v):
    if isinstance(v, str) and _INPUT_ROOT:
        return v.replace(_INPUT_ROOT, "")
    if isinstance(v, (bytes, bytearray)):
        return {"hex": bytes(v).hex()}
    if isinstance(v, dict):
        return {k: _canon(x) for k, x in sorted(v.items())}
    if isinstance(v, (list, tuple)):
        return [_canon(x) for x in v]
    if isinstance(v, float):
        return repr(v)
    return v


def table_digest(path: str) -> dict:
    from deltalake import DeltaTable

    from jobs import storage

    t = DeltaTable(path, storage_options=storage.delta_storage_options(path)).to_pyarrow_table()
    cols = sorted(c for c in t.column_names if c not in SKIP_COLUMNS)
    lines = sorted(json.dumps(_canon({c: r[c] for c in cols}), sort_keys=True, ensure_ascii=False, default=str)
                   for r in t.to_pylist())
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8", "surrogatepass") + b"\n")
    return {"rows": len(lines), "columns": cols, "sha256": h.hexdigest()}


def lake_digest(root: str, input_root: str | None = None) -> dict:
    global _INPUT_ROOT
    from jobs import storage

    _INPUT_ROOT = input_root
    out = {"tables": {}, "packed": {}}
    for name in sorted(storage.listdir(root)):
        if name in SKIP_TABLES or not storage.isdir(storage.join(root, name, "_delta_log")):
            continue
        out["tables"][name] = table_digest(storage.join(root, name))
    manifest = storage.join(root, "packed", "manifest.json")
    if storage.exists(manifest):
        m = json.loads(storage.read_bytes(manifest))
        out["packed"] = {name: meta["sha256"] for name, meta in sorted(m["files"].items())}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lake", required=True)
    p.add_argument("--write", default=None, help="write the digest to this JSON file")
    p.add_argument("--input-root", default=None, help="prefix stripped from recorded input file names")
    args = p.parse_args(argv)
    d = lake_digest(args.lake, args.input_root)
    text = json.dumps(d, indent=1, sort_keys=True) + "\n"
    if args.write:
        with open(args.write, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    # end without the native destructors: deltalake + pyarrow in one process sometimes aborted at exit with
    # rc 134 after all the work was done (see udfs.common.exit_process)
    from udfs.common import exit_process  # noqa: E402

    exit_process(main() or 0)
