"""Turning raw source units (a JSONL line, a text file or paragraph, a CSV or Parquet row) into validated records.

Pure Python, no Spark: the ingest job calls these from inside `mapInArrow` tasks, and tests call them directly.
Every unit yields exactly one output: a document or a quarantine entry with a reason, so nothing is dropped.

Quarantine reasons:
    invalid_utf8        bytes that do not decode as UTF-8
    invalid_unicode     JSON escapes that decode to lone surrogates (text not representable as UTF-8)
    invalid_json        a JSONL line that does not parse
    not_an_object       a JSONL line that parses to something other than an object
    missing_text_field  the text field is absent (or null / a missing CSV column)
    text_not_string     the text field is a number, list, object or boolean
    empty_text          text that is empty or whitespace only
    too_large           text longer than `max_doc_bytes` UTF-8 bytes
    blank_line          an empty line inside a JSONL file
    duplicate_id        (assigned by the job) an id already seen earlier in the same run
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
from dataclasses import dataclass, field

DEFAULT_MAX_DOC_BYTES = 1 << 20
DEFAULT_RAW_PAYLOAD_MAX_BYTES = 64 << 10


@dataclass
class SourceSpec:
    """One entry of conf/sources.yaml."""
    name: str
    domain: str
    format: str                      # jsonl | text | parquet | csv
    path: str                        # file, folder or glob
    text_field: str = "text"
    id_field: str | None = None
    url_field: str | None = None
    text_mode: str = "file"          # text format: one document per "file" or per blank-line "paragraph"
    csv_delimiter: str = ","
    extra: dict = field(default_factory=dict)

    FORMATS = ("jsonl", "text", "parquet", "csv")
    FIELDS = ("name", "domain", "format", "path", "text_field", "id_field", "url_field", "text_mode",
              "csv_delimiter")

    @classmethod
    def from_dict(cls, d: dict, defaults: dict | None = None) -> "SourceSpec":
        d = {**(defaults or {}), **d}
        missing = [k for k in ("name", "domain", "format", "path") if not d.get(k)]
        if missing:
            raise ValueError(f"source {d.get('name', '?')!r} lacks {', '.join(missing)}")
        unknown = sorted(set(d) - set(cls.FIELDS))
        if unknown:
            raise ValueError(f"source {d['name']!r}: unknown key(s) {', '.join(unknown)}")
        fmt = str(d["format"]).lower()
        if fmt not in cls.FORMATS:
            raise ValueError(f"source {d['name']!r}: format must be one of {', '.join(cls.FORMATS)}, got {fmt!r}")
        if d.get("text_mode", "file") not in ("file", "paragraph"):
            raise ValueError(f"source {d['name']!r}: text_mode must be file or paragraph")
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", str(d["name"])):
            raise ValueError(f"source name {d['name']!r} may only hold letters, digits, '_', '.', '-'")
        return cls(**{k: d[k] for k in cls.FIELDS if k in d and d[k] is not None} | {"format": fmt})


@dataclass
class Limits:
    max_doc_bytes: int = DEFAULT_MAX_DOC_BYTES
    raw_payload_max_bytes: int = DEFAULT_RAW_PAYLOAD_MAX_BYTES


def stable_id(source: str, rel_file: str, position: int) -> str:
    """Id for a record the source gives no id to: source name + file (relative to the source root) + line/row."""
    h = hashlib.sha1(f"{source}\x00{rel_file}\x00{position}".encode()).hexdigest()[:20]
    return f"{source}/{h}"


def given_id(source: str, value) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    s = str(value).strip()
    return f"{source}/{s}" if s else None


def _unit(kind, **kw):
    kw["kind"] = kind
    return kw


def validate_text(text, limits: Limits):
    """(reason, detail) for a text value that cannot be a document, else (None, None)."""
    if text is None:
        return "missing_text_field", "text field is null"
    if not isinstance(text, str):
        return "text_not_string", f"text field is {type(text).__name__}"
    if not text.strip():
        return "empty_text", f"{len(text)} whitespace characters" if text else "empty string"
    try:
        n = len(text.encode("utf-8"))
    except UnicodeEncodeError as e:
        return "invalid_unicode", f"unencodable character at {e.start}"
    if n > limits.max_doc_bytes:
        return "too_large", f"{n} bytes > max_doc_bytes {limits.max_doc_bytes}"
    return None, None


def make_document(spec: SourceSpec, text: str, id_value, url, meta: dict, trace: dict, fallback_pos: int,
                  rel_file: str) -> dict:
    doc_id = given_id(spec.name, id_value) if spec.id_field else None
    if doc_id is None:
        doc_id = stable_id(spec.name, rel_file, fallback_pos)
    b = text.encode("utf-8")
    return _unit("doc", id=doc_id, text=text, url=None if url is None else str(url),
                 meta=json.dumps(meta, ensure_ascii=False, sort_keys=True, default=str), trace=trace,
                 n_bytes=len(b), text_sha256=hashlib.sha256(b).hexdigest())


def make_quarantine(spec: SourceSpec, reason: str, detail: str, raw: bytes, trace: dict, limits: Limits,
                    rel_file: str, position: int, doc_id: str | None = None) -> dict:
    return _unit("quarantine", id=doc_id, reason=reason, detail=detail,
                 raw=raw[: limits.raw_payload_max_bytes], raw_length=len(raw),
                 raw_truncated=len(raw) > limits.raw_payload_max_bytes, trace=trace,
                 quarantine_id=stable_id(spec.name, rel_file, position))


def _trace(file, line=None, row=None, byte_offset=None):
    return {"file": file, "line": line, "row": row, "byte_offset": byte_offset}


def _text_fields_to_record(spec, obj: dict, raw: bytes, trace, limits, rel_file, pos):
    if spec.text_field not in obj:
        return make_quarantine(spec, "missing_text_field", f"no field {spec.text_field!r}", raw, trace, limits,
                               rel_file, pos)
    text = obj[spec.text_field]
    reason, detail = validate_text(text, limits)
    id_value = obj.get(spec.id_field) if spec.id_field else None
    if reason:
        qid = given_id(spec.name, id_value) if spec.id_field else None
        return make_quarantine(spec, reason, detail, raw, trace, limits, rel_file, pos, qid)
    url = obj.get(spec.url_field) if spec.url_field else None
    meta = {k: v for k, v in obj.items() if k not in (spec.text_field, spec.id_field, spec.url_field)}
    return make_document(spec, text, id_value, url, meta, trace, pos, rel_file)


# ---- JSONL -------------------------------------------------------------------------------------------------------
def parse_jsonl_line(spec: SourceSpec, raw: bytes, file: str, rel_file: str, line: int, offset: int,
                     limits: Limits) -> dict:
    trace = _trace(file, line=line, byte_offset=offset)
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    if not raw.strip():
        return make_quarantine(spec, "blank_line", "empty line", raw, trace, limits, rel_file, line)
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return make_quarantine(spec, "invalid_utf8", f"invalid byte at {e.start}", raw, trace, limits, rel_file, line)
    try:
        obj = json.loads(s)
    except ValueError as e:
        return make_quarantine(spec, "invalid_json", str(e)[:200], raw, trace, limits, rel_file, line)
    if not isinstance(obj, dict):
        return make_quarantine(spec, "not_an_object", f"JSON {type(obj).__name__}", raw, trace, limits, rel_file,
                               line)
    return _text_fields_to_record(spec, obj, raw, trace, limits, rel_file, line)


def count_line_starts(path: str, start: int, end: int, size: int, block: int = 1 << 22) -> int:
    """Number of lines that start at a byte position in [start, end) of an uncompressed file of `size` bytes.
    A line starts at 0 and right after every '\\n' that is not the file's last byte."""
    if start >= size or start >= end:
        return 0
    n = 1 if start == 0 else 0
    lo, hi = max(start - 1, 0), min(end - 1, size - 1)  # newline positions p with start <= p+1 < min(end, size)
    with open(path, "rb") as f:
        f.seek(lo)
        remaining = hi - lo
        while remaining > 0:
            buf = f.read(min(block, remaining))
            if not buf:
                break
            n += buf.count(b"\n")
            remaining -= len(buf)
    return n


def iter_jsonl_chunk(spec: SourceSpec, path: str, file: str, rel_file: str, start: int, end: int,
                     line_base: int, limits: Limits):
    """Records for the lines that start in [start, end) (end < 0: to the end). Gzip files are one chunk."""
    if path.endswith(".gz"):
        opener = gzip.open(path, "rb")
        start, end = 0, -1
    else:
        opener = open(path, "rb")
    with opener as f:
        pos = 0
        if start > 0:
            f.seek(start - 1)
            skipped = f.readline()  # the rest of the line that began before `start`
            pos = start - 1 + len(skipped)
        line = line_base
        while end < 0 or pos < end:
            raw = f.readline()
            if not raw:
                break
            body = raw[:-1] if raw.endswith(b"\n") else raw
            line += 1
            yield parse_jsonl_line(spec, body, file, rel_file, line, pos, limits)
            pos += len(raw)


# ---- plain text -----------------------------------------------------------------------------------------------------
_BLANK_SPLIT = re.compile(rb"\n[ \t\r\f\v]*\n(?:[ \t\r\f\v]*\n)*")


def iter_text_file(spec: SourceSpec, path: str, file: str, rel_file: str, limits: Limits):
    with open(path, "rb") as f:
        data = f.read()
    if spec.text_mode == "file":
        yield _text_unit(spec, data, file, rel_file, 1, 0, limits, position=0)
        return
    pos = 0
    for m in list(_BLANK_SPLIT.finditer(data)) + [None]:
        end = m.start() if m else len(data)
        piece = data[pos:end]
        if piece.strip():
            line = data.count(b"\n", 0, pos) + 1
            lead = len(piece) - len(piece.lstrip(b"\n"))
            yield _text_unit(spec, piece.strip(b"\n"), file, rel_file, line + lead, pos + lead, limits,
                             position=line + lead)
        if m is None:
            break
        pos = m.end()


def _text_unit(spec, raw: bytes, file, rel_file, line, offset, limits, position):
    trace = _trace(file, line=line, byte_offset=offset)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return make_quarantine(spec, "invalid_utf8", f"invalid byte at {e.start}", raw, trace, limits, rel_file,
                               position)
    reason, detail = validate_text(text, limits)
    if reason:
        return make_quarantine(spec, reason, detail, raw, trace, limits, rel_file, position)
    return make_document(spec, text, None, None, {"file_name": rel_file}, trace, position, rel_file)


# ---- CSV --------------------------------------------------------------------------------------------------------------
def iter_csv_file(spec: SourceSpec, path: str, file: str, rel_file: str, limits: Limits):
    import csv

    with open(path, "rb") as f:
        data = f.read().decode("utf-8", errors="surrogateescape")
    if data.startswith("\ufeff"):
        data = data[1:]
    reader = csv.reader(io.StringIO(data, newline=""), delimiter=spec.csv_delimiter)
    header = None
    row_no = 0
    start_line = 1
    for values in reader:
        if header is None:
            header = values
            start_line = reader.line_num + 1
            continue
        row_no += 1
        trace = _trace(file, line=start_line, row=row_no)
        start_line = reader.line_num + 1
        raw_text = spec.csv_delimiter.join(values)
        raw = raw_text.encode("utf-8", errors="surrogateescape")
        if any(_has_surrogate(v) for v in values):
            yield make_quarantine(spec, "invalid_utf8", "row holds bytes that are not UTF-8", raw, trace, limits,
                                  rel_file, row_no)
            continue
        if len(values) != len(header):
            if not any(v.strip() for v in values):
                yield make_quarantine(spec, "empty_text", "empty CSV row", raw, trace, limits, rel_file, row_no)
                continue
        obj = {h: (values[i] if i < len(values) else None) for i, h in enumerate(header)}
        if spec.text_field in obj and obj[spec.text_field] is None:
            obj.pop(spec.text_field)
        yield _text_fields_to_record(spec, obj, raw, trace, limits, rel_file, row_no)


def _has_surrogate(s: str) -> bool:
    return any("\udc80" <= c <= "\udcff" for c in s) if s and not s.isascii() else False


# ---- Parquet ------------------------------------------------------------------------------------------------------------
def iter_parquet_row_group(spec: SourceSpec, path: str, file: str, rel_file: str, row_group: int, row_base: int,
                           limits: Limits):
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    table = pf.read_row_group(row_group)
    if spec.text_field not in table.column_names:
        for i in range(table.num_rows):
            row = row_base + i + 1
            trace = _trace(file, row=row)
            raw = json.dumps(table.slice(i, 1).to_pylist()[0], default=str, ensure_ascii=False).encode()
            yield make_quarantine(spec, "missing_text_field", f"no column {spec.text_field!r}", raw, trace,
                                  limits, rel_file, row)
        return
    for i, obj in enumerate(table.to_pylist()):
        row = row_base + i + 1
        trace = _trace(file, row=row)
        value = obj.get(spec.text_field)
        raw = value.encode("utf-8", errors="surrogatepass") if isinstance(value, str) else \
            json.dumps(obj, default=str, ensure_ascii=False).encode("utf-8", errors="surrogatepass")
        if isinstance(value, bytes):
            try:
                obj[spec.text_field] = value.decode("utf-8")
            except UnicodeDecodeError as e:
                yield make_quarantine(spec, "invalid_utf8", f"invalid byte at {e.start}", value, trace, limits,
                                      rel_file, row)
                continue
        if value is None:
            obj.pop(spec.text_field)
        yield _text_fields_to_record(spec, obj, raw, trace, limits, rel_file, row)
