"""The record schema shared by `documents` and every table downstream (see shared design)."""
from __future__ import annotations

import hashlib

TRACE_DDL = "struct<file:string,line:bigint,row:bigint,byte_offset:bigint>"

DOCUMENT_DDL = (
    "id string, text string, source string, domain string, url string, meta string, "
    f"trace {TRACE_DDL}, n_bytes bigint, n_tokens_est bigint, text_sha256 string, ingest_run string"
)

DOCUMENT_COLUMNS = ["id", "text", "source", "domain", "url", "meta", "trace", "n_bytes", "n_tokens_est",
                    "text_sha256", "ingest_run"]

QUARANTINE_DDL = (
    "quarantine_id string, id string, source string, domain string, reason string, detail string, "
    f"raw binary, raw_length bigint, raw_truncated boolean, trace {TRACE_DDL}, ingest_run string"
)


def _arrow_types():
    import pyarrow as pa

    s, i64 = pa.string(), pa.int64()
    trace = pa.struct([("file", s), ("line", i64), ("row", i64), ("byte_offset", i64)])
    return pa, s, i64, trace


def document_arrow_schema():
    """DOCUMENT_DDL as an Arrow schema, for files that Python workers write (tests check it equals Spark's)."""
    pa, s, i64, trace = _arrow_types()
    return pa.schema([("id", s), ("text", s), ("source", s), ("domain", s), ("url", s), ("meta", s), ("trace", trace),
                      ("n_bytes", i64), ("n_tokens_est", i64), ("text_sha256", s), ("ingest_run", s)])


def quarantine_arrow_schema():
    """QUARANTINE_DDL as an Arrow schema."""
    pa, s, i64, trace = _arrow_types()
    return pa.schema([("quarantine_id", s), ("id", s), ("source", s), ("domain", s), ("reason", s), ("detail", s),
                      ("raw", pa.binary()), ("raw_length", i64), ("raw_truncated", pa.bool_()), ("trace", trace),
                      ("ingest_run", s)])


def estimate_tokens(n_bytes: int) -> int:
    """Cheap token estimate used before tokenisation (~4 UTF-8 bytes per BPE token on English text)."""
    return (int(n_bytes) + 3) // 4


def estimate_tokens_arrow(n_bytes):
    """`estimate_tokens` over an Arrow integer array (integer division)."""
    import pyarrow.compute as pc

    return pc.divide(pc.add(n_bytes, 3), 4)


def estimate_tokens_col(n_bytes_col):
    """`estimate_tokens` as a Spark column expression."""
    from pyspark.sql import functions as F

    return F.floor((n_bytes_col + 3) / 4).cast("bigint")


def document_row(id: str, text: str, source: str = "test", domain: str = "web", url=None, meta: str = "{}",
                 trace=None, ingest_run: str = "manual") -> dict:
    """A complete `documents` row with derived columns filled in (used by tests and small tools)."""
    b = text.encode("utf-8")
    return {"id": id, "text": text, "source": source, "domain": domain, "url": url, "meta": meta,
            "trace": trace or {"file": None, "line": None, "row": None, "byte_offset": None},
            "n_bytes": len(b), "n_tokens_est": estimate_tokens(len(b)),
            "text_sha256": hashlib.sha256(b).hexdigest(), "ingest_run": ingest_run}


def documents_df(spark, rows: list[dict]):
    """A DataFrame with the documents schema from `document_row` dicts."""
    return spark.createDataFrame([tuple(r[c] for c in DOCUMENT_COLUMNS) for r in rows], schema=DOCUMENT_DDL)
