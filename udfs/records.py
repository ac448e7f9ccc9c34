"""Turning raw source units (a JSONL line, a text file or paragraph, a CSV or Parquet row) into validated records.

Pure Python, no Spark: the ingest job calls these from inside `mapInArrow` tasks, and tests call them directly.
Every unit yields exactly one output: a document, a quarantine entry with a reason, or (for an empty line) a
`blank` marker that the job counts but does not store, so nothing is dropped silently:

    input lines (or rows, or paragraphs) = documents + quarantined + blank

Nothing a single record holds can end a task: every per-record step runs under a catch-all that turns a failure
into a quarantine entry (`invalid_record`, with the exception named), and `units_to_batches` falls back to one row
at a time when a batch cannot be converted to Arrow. Memory per task is bounded whatever the input: lines are read
with a length limit (`Limits.max_line_bytes`), an over-long line is skipped in bounded pieces, and a compressed
stream that runs `max_skip_bytes` past the limit without a newline (a decompression bomb) is abandoned.

Quarantine reasons:
    invalid_utf8        bytes that do not decode as UTF-8
    invalid_unicode     JSON escapes that decode to lone surrogates (text not representable as UTF-8)
    invalid_json        a JSONL line that does not parse
    too_deep            a JSONL line nested deeper than `max_json_depth` (checked before parsing)
    not_an_object       a JSONL line that parses to something other than an object
    invalid_csv         a CSV row with broken quoting (including a quote still open at end of file)
    missing_text_field  the text field is absent (or null / a missing CSV column)
    text_not_string     the text field is a number, list, object or boolean
    empty_text          text that is empty or whitespace only
    too_large           text longer than `max_doc_bytes` UTF-8 bytes, or a line / file longer than `max_line_bytes`
    invalid_record      any other failure of one record (the detail names the exception)
    unreadable_file     the file could not be read further (I/O error, corrupt gzip); the records before it stay
    duplicate_id        (assigned by the job) an id already seen earlier in the same run
WARC files (udfs/warc.py) add warc:truncated, warc:corrupt, extract:timeout, extract:empty, extract:error, and
`skip` units for records that are not pages (requests, redirects, non-HTML answers), counted per kind like blanks.
A UTF-8 byte order mark at the start of a file is removed. Blank lines are not records (see above).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import re
import zlib
from dataclasses import dataclass, field

from udfs import fileio

DEFAULT_MAX_DOC_BYTES = 1 << 20
DEFAULT_RAW_PAYLOAD_MAX_BYTES = 64 << 10
DEFAULT_MAX_JSON_DEPTH = 100      # well under CPython's recursion limit (1000) that json.loads would hit
DEFAULT_MAX_SKIP_BYTES = 64 << 20  # a compressed stream is abandoned this far past max_line_bytes with no newline
BOM = b"\xef\xbb\xbf"
_SKIP_PIECE = 1 << 20


@dataclass
class SourceSpec:
    """One entry of conf/sources.yaml."""
    name: str
    domain: str
    format: str                      # jsonl | text | parquet | csv | warc
    path: str                        # file, folder or glob
    text_field: str = "text"
    id_field: str | None = None
    url_field: str | None = None
    text_mode: str = "file"          # text format: one document per "file" or per blank-line "paragraph"
    csv_delimiter: str = ","
    extra: dict = field(default_factory=dict)

    FORMATS = ("jsonl", "text", "parquet", "csv", "warc")
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
        if len(str(d.get("csv_delimiter", ","))) != 1:
            raise ValueError(f"source {d['name']!r}: csv_delimiter must be one character")
        return cls(**{k: d[k] for k in cls.FIELDS if k in d and d[k] is not None} | {"format": fmt})


@dataclass
class Limits:
    max_doc_bytes: int = DEFAULT_MAX_DOC_BYTES
    raw_payload_max_bytes: int = DEFAULT_RAW_PAYLOAD_MAX_BYTES
    max_line_bytes: int | None = None          # None: 8 x max_doc_bytes (JSON escapes can grow text up to 6x)
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    max_skip_bytes: int = DEFAULT_MAX_SKIP_BYTES
    html: object = None                        # udfs.warc.HtmlOptions for WARC sources (None: its defaults)

    def __post_init__(self):
        if self.max_line_bytes is None:
            self.max_line_bytes = 8 * self.max_doc_bytes + (64 << 10)


def stable_id(source: str, rel_file: str, position: int) -> str:
    """Id for a record the source gives no id to: source name + file (relative to the source root) + line/row."""
    h = hashlib.sha1(f"{source}\x00{rel_file}\x00{position}".encode("utf-8", "surrogateescape")).hexdigest()[:20]
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


def _safe_str(s):
    """A string Arrow can store (lone surrogates escaped); None stays None."""
    if s is None or s.isascii():
        return s
    return s.encode("utf-8", "backslashreplace").decode("utf-8")


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
                    rel_file: str, position: int, doc_id: str | None = None, raw_length: int | None = None) -> dict:
    """A quarantine entry; `raw_length` is given when `raw` is only the head of a longer unit."""
    n = len(raw) if raw_length is None else raw_length
    return _unit("quarantine", id=_safe_str(doc_id), reason=reason, detail=_safe_str(detail),
                 raw=bytes(raw[: limits.raw_payload_max_bytes]), raw_length=n,
                 raw_truncated=n > min(len(raw), limits.raw_payload_max_bytes), trace=trace,
                 quarantine_id=stable_id(spec.name, rel_file, position))


def _blank(trace):
    return _unit("blank", trace=trace)


def _trace(file, line=None, row=None, byte_offset=None):
    return {"file": _safe_str(file), "line": line, "row": row, "byte_offset": byte_offset}


def _guarded(build, spec, raw, trace, limits, rel_file, pos):
    """build() for one record; any exception becomes that record's quarantine entry instead of ending the task."""
    try:
        unit = build()
        if unit["kind"] == "doc":
            # id, url and meta come from the input too: a lone surrogate there cannot be stored either
            for key in ("id", "url", "meta"):
                if unit[key] is not None and not unit[key].isascii():
                    try:
                        unit[key].encode("utf-8")
                    except UnicodeEncodeError as e:
                        return make_quarantine(spec, "invalid_unicode", f"unencodable character in {key} at "
                                               f"{e.start}", raw, trace, limits, rel_file, pos)
        return unit
    except Exception as e:  # noqa: BLE001 - by design: one record must never end the task
        return make_quarantine(spec, "invalid_record", f"{type(e).__name__}: {e}"[:300], raw, trace, limits,
                               rel_file, pos)


def _text_fields_to_record(spec, obj: dict, raw: bytes, trace, limits, rel_file, pos):
    if spec.text_field not in obj:
        names = [str(k) for k in list(obj)[:20]]
        return make_quarantine(spec, "missing_text_field", f"no field {spec.text_field!r}; fields: "
                               f"{', '.join(names) or 'none'}", raw, trace, limits, rel_file, pos)
    text = obj[spec.text_field]
    reason, detail = validate_text(text, limits)
    id_value = obj.get(spec.id_field) if spec.id_field else None
    if reason:
        qid = given_id(spec.name, id_value) if spec.id_field else None
        return make_quarantine(spec, reason, detail, raw, trace, limits, rel_file, pos, qid)
    url = obj.get(spec.url_field) if spec.url_field else None
    meta = {k: v for k, v in obj.items() if k not in (spec.text_field, spec.id_field, spec.url_field)}
    return make_document(spec, text, id_value, url, meta, trace, pos, rel_file)


# ---- bounded line reading -----------------------------------------------------------------------------------------
class LineTooLong:
    """What `read_line` returns for a line over the limit: its head, its length without the newline, the bytes
    consumed from the stream (with the newline) and whether the rest of the line was read."""
    __slots__ = ("head", "length", "consumed", "complete")

    def __init__(self, head: bytes, consumed: int, complete: bool, newline: bool):
        self.head, self.consumed, self.complete = head, consumed, complete
        self.length = consumed - 1 if newline else consumed


def read_line(f, limit: int, head_bytes: int, max_skip: int | None):
    """The next line of binary stream `f` (with its '\\n'), b'' at EOF, or a LineTooLong when it is longer than
    `limit` bytes: then the rest of the line is read in 1 MiB pieces and thrown away (memory stays bounded), and
    with `max_skip` set, reading stops `max_skip` bytes past the limit (`complete` False: the stream is abandoned)."""
    raw = f.readline(limit + 1)
    if len(raw) <= limit or raw.endswith(b"\n"):
        return raw
    head, n = raw[:head_bytes], len(raw)
    del raw
    while True:
        piece = f.readline(_SKIP_PIECE)
        n += len(piece)
        if not piece or piece.endswith(b"\n"):
            return LineTooLong(head, n, True, piece.endswith(b"\n"))
        if max_skip is not None and n - limit > max_skip:
            return LineTooLong(head, n, False, False)


def skip_partial_line(f, stop: int) -> int:
    """Skip the rest of the line `f` is in, reading no further than `stop` bytes; bytes skipped."""
    n = 0
    while n < stop:
        piece = f.readline(min(_SKIP_PIECE, stop - n))
        n += len(piece)
        if not piece or piece.endswith(b"\n"):
            break
    return n


# ---- JSONL -------------------------------------------------------------------------------------------------------
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)


def json_depth(s: str, limit: int) -> int:
    """Nesting depth of JSON text `s` if it may exceed `limit`, else 0 (cheap: counts brackets first).
    Brackets inside strings do not count."""
    if s.count("[") + s.count("{") <= limit:
        return 0
    import numpy as np

    body = _JSON_STRING.sub("", s).encode("utf-8", "surrogatepass")
    b = np.frombuffer(body, np.uint8)
    step = ((b == 0x5B) | (b == 0x7B)).astype(np.int32) - ((b == 0x5D) | (b == 0x7D)).astype(np.int32)
    return int(np.cumsum(step).max()) if len(step) else 0


def parse_jsonl_line(spec: SourceSpec, raw: bytes, file: str, rel_file: str, line: int, offset: int,
                     limits: Limits) -> dict:
    trace = _trace(file, line=line, byte_offset=offset)
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    if not raw.strip():
        return _blank(trace)
    return _guarded(lambda: _parse_jsonl(spec, raw, trace, rel_file, line, limits), spec, raw, trace, limits,
                    rel_file, line)


def _parse_jsonl(spec, raw, trace, rel_file, line, limits):
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return make_quarantine(spec, "invalid_utf8", f"invalid byte at {e.start}", raw, trace, limits, rel_file, line)
    depth = json_depth(s, limits.max_json_depth)
    if depth > limits.max_json_depth:
        return make_quarantine(spec, "too_deep", f"nesting depth {depth} > max_json_depth {limits.max_json_depth}",
                               raw, trace, limits, rel_file, line)
    try:
        obj = json.loads(s)
    except (ValueError, RecursionError) as e:
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
    with fileio.open_input(path) as f:
        f.seek(lo)
        remaining = hi - lo
        while remaining > 0:
            buf = f.read(min(block, remaining))
            if not buf:
                break
            n += buf.count(b"\n")
            remaining -= len(buf)
    return n


def _open_source(path: str):
    if not path.endswith(".gz"):
        return fileio.open_input(path)
    if not fileio.is_remote(path):
        return gzip.open(path, "rb")
    return _ClosingGzip(fileio.open_input(path))


class _ClosingGzip(gzip.GzipFile):
    """A GzipFile over an object-store file that closes that file too (gzip.open does so for a local path)."""

    def __init__(self, raw):
        super().__init__(fileobj=raw, mode="rb")
        self._raw = raw

    def close(self):
        try:
            super().close()
        finally:
            self._raw.close()


def iter_jsonl_chunk(spec: SourceSpec, path: str, file: str, rel_file: str, start: int, end: int,
                     line_base: int, limits: Limits, keep_raw: bool = False):
    """Records for the lines that start in [start, end) (end < 0: to the end). Gzip files are one chunk.
    keep_raw: documents also carry their line's bytes under "raw" (used to quarantine duplicate ids)."""
    compressed = path.endswith(".gz")
    if compressed:
        start, end = 0, -1
    with _open_source(path) as f:
        pos = 0
        if start > 0:
            f.seek(start - 1)
            # the rest of the line that began before `start`; past `end` this chunk holds no line start at all
            pos = start - 1 + skip_partial_line(f, end - start + 1)
        line = line_base
        while end < 0 or pos < end:
            raw = read_line(f, limits.max_line_bytes, limits.raw_payload_max_bytes,
                            limits.max_skip_bytes if compressed else None)
            if isinstance(raw, LineTooLong):
                line += 1
                trace = _trace(file, line=line, byte_offset=pos)
                detail = f"line of {raw.length} bytes > max_line_bytes {limits.max_line_bytes}"
                if not raw.complete:
                    detail = (f"line of more than {raw.length} bytes without a newline (> max_line_bytes "
                              f"{limits.max_line_bytes} + max_skip_bytes {limits.max_skip_bytes}); the rest of "
                              f"the file is not read")
                yield make_quarantine(spec, "too_large", detail, raw.head, trace, limits, rel_file, line,
                                      raw_length=raw.length)
                if not raw.complete:
                    return
                pos += raw.consumed
                continue
            if not raw:
                break
            body = raw[:-1] if raw.endswith(b"\n") else raw
            if pos == 0 and body.startswith(BOM):
                body = body[len(BOM):]
            line += 1
            unit = parse_jsonl_line(spec, body, file, rel_file, line, pos, limits)
            if keep_raw and unit["kind"] == "doc":
                unit["raw"] = body[:-1] if body.endswith(b"\r") else body
            yield unit
            pos += len(raw)


# ---- plain text -----------------------------------------------------------------------------------------------------
_BLANK_BYTES = b" \t\r\f\v"


def iter_text_file(spec: SourceSpec, path: str, file: str, rel_file: str, limits: Limits, keep_raw: bool = False):
    if spec.text_mode == "file":
        yield _text_file_unit(spec, path, file, rel_file, limits, keep_raw)
        return
    # paragraph mode, streamed line by line: a paragraph ends at a line holding only whitespace
    with fileio.open_input(path) as f:
        pos, line = 0, 0
        para, para_line, para_pos, para_len = [], 0, 0, 0
        while True:
            raw = read_line(f, limits.max_line_bytes, limits.raw_payload_max_bytes, None)
            long_line = isinstance(raw, LineTooLong)
            if not long_line and not raw:
                break
            line += 1
            n = raw.consumed if long_line else len(raw)
            body = b"" if long_line else (raw[:-1] if raw.endswith(b"\n") else raw)
            if pos == 0 and body.startswith(BOM):
                body = body[len(BOM):]
            if not long_line and not body.strip(_BLANK_BYTES):
                if para:
                    yield _paragraph_unit(spec, para, para_len, file, rel_file, para_line, para_pos, limits,
                                          keep_raw)
                    para, para_len = [], 0
            else:
                if not para:
                    para_line, para_pos = line, pos
                para_len += n
                # past the line limit only the length is kept: the paragraph is quarantined as too_large
                para.append(raw.head if long_line else body)
                if long_line:
                    para_len += limits.max_line_bytes + 1  # mark as over-long whatever the head holds
            pos += n
        if para:
            yield _paragraph_unit(spec, para, para_len, file, rel_file, para_line, para_pos, limits, keep_raw)


def _paragraph_unit(spec, lines, length, file, rel_file, line, offset, limits, keep_raw):
    if length > limits.max_line_bytes:
        trace = _trace(file, line=line, byte_offset=offset)
        return make_quarantine(spec, "too_large", f"paragraph of more than {limits.max_line_bytes} bytes",
                               b"\n".join(lines)[: limits.raw_payload_max_bytes], trace, limits, rel_file, line,
                               raw_length=length)
    return _text_unit(spec, b"\n".join(lines), file, rel_file, line, offset, limits, position=line,
                      keep_raw=keep_raw)


def _text_file_unit(spec, path, file, rel_file, limits, keep_raw):
    size = fileio.size(path)
    with fileio.open_input(path) as f:
        if size > limits.max_line_bytes:  # do not read a huge file into memory just to reject it
            head = f.read(limits.raw_payload_max_bytes)
            trace = _trace(file, line=1, byte_offset=0)
            return make_quarantine(spec, "too_large", f"file of {size} bytes > max_line_bytes "
                                   f"{limits.max_line_bytes}", head, trace, limits, rel_file, 0, raw_length=size)
        data = f.read()
    if data.startswith(BOM):
        data = data[len(BOM):]
    return _text_unit(spec, data, file, rel_file, 1, 0, limits, position=0, keep_raw=keep_raw)


def _text_unit(spec, raw: bytes, file, rel_file, line, offset, limits, position, keep_raw=False):
    trace = _trace(file, line=line, byte_offset=offset)

    def build():
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            return make_quarantine(spec, "invalid_utf8", f"invalid byte at {e.start}", raw, trace, limits, rel_file,
                                   position)
        reason, detail = validate_text(text, limits)
        if reason:
            return make_quarantine(spec, reason, detail, raw, trace, limits, rel_file, position)
        return make_document(spec, text, None, None, {"file_name": rel_file}, trace, position, rel_file)

    unit = _guarded(build, spec, raw, trace, limits, rel_file, position)
    if keep_raw and unit["kind"] == "doc":
        unit["raw"] = raw
    return unit


# ---- CSV --------------------------------------------------------------------------------------------------------------
def iter_csv_file(spec: SourceSpec, path: str, file: str, rel_file: str, limits: Limits, keep_raw: bool = False):
    """Rows of a CSV file with a header, streamed; quarantine entries carry the row's original bytes.
    Quoting is strict: a malformed quote or one still open at end of file quarantines the row (invalid_csv)."""
    import csv

    csv.field_size_limit(max(limits.max_line_bytes, 1 << 17))
    consumed = []          # (raw bytes, length, over-long) of the physical lines the reader took for this row
    state = {"pos": 0}

    def lines():
        with fileio.open_input(path) as f:
            while True:
                raw = read_line(f, limits.max_line_bytes, limits.raw_payload_max_bytes, None)
                if isinstance(raw, LineTooLong):
                    consumed.append((raw.head, raw.consumed, True))
                    state["pos"] += raw.consumed
                    yield "\n"  # stands in for the line; the row it belongs to is quarantined as too_large
                    continue
                if not raw:
                    return
                if state["pos"] == 0 and raw.startswith(BOM):
                    raw = raw[len(BOM):]
                consumed.append((raw, len(raw), False))
                state["pos"] += len(raw)
                yield raw.decode("utf-8", errors="surrogateescape")

    reader = csv.reader(lines(), delimiter=spec.csv_delimiter, strict=True)
    header, row_no, line_no = None, 0, 0
    while True:
        consumed.clear()
        start_line = line_no + 1
        error = None
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            values, error = None, str(e)
        line_no += len(consumed)
        raw = b"".join(c[0] for c in consumed).rstrip(b"\r\n")
        too_long = any(c[2] for c in consumed)
        if header is None:
            if values is None or too_long:
                trace = _trace(file, line=start_line, row=0)
                yield make_quarantine(spec, "invalid_csv", f"header row unreadable ({error or 'too long'}); "
                                      "file not read", raw, trace, limits, rel_file, 0)
                return
            if not values:
                continue  # blank lines before the header
            header = values
            continue
        if values == [] and not too_long:
            yield _blank(_trace(file, line=start_line))
            continue
        row_no += 1
        trace = _trace(file, line=start_line, row=row_no)
        if too_long:
            yield make_quarantine(spec, "too_large", f"row holds a line longer than max_line_bytes "
                                  f"{limits.max_line_bytes}", raw, trace, limits, rel_file, row_no,
                                  raw_length=sum(c[1] for c in consumed))
            continue
        if error is not None:
            if "unexpected end of data" in error:
                error = "quote still open at end of file"
            yield make_quarantine(spec, "invalid_csv", error[:200], raw, trace, limits, rel_file, row_no)
            continue
        yield _guarded(lambda: _csv_row(spec, header, values, raw, trace, limits, rel_file, row_no, keep_raw),
                       spec, raw, trace, limits, rel_file, row_no)


def _csv_row(spec, header, values, raw, trace, limits, rel_file, row_no, keep_raw):
    if any(_has_surrogate(v) for v in values):
        return make_quarantine(spec, "invalid_utf8", "row holds bytes that are not UTF-8", raw, trace, limits,
                               rel_file, row_no)
    if len(values) != len(header) and not any(v.strip() for v in values):
        return make_quarantine(spec, "empty_text", "empty CSV row", raw, trace, limits, rel_file, row_no)
    obj = {h: (values[i] if i < len(values) else None) for i, h in enumerate(header)}
    if spec.text_field in obj and obj[spec.text_field] is None:
        obj.pop(spec.text_field)
    unit = _text_fields_to_record(spec, obj, raw, trace, limits, rel_file, row_no)
    if keep_raw and unit["kind"] == "doc":
        unit["raw"] = raw
    return unit


def _has_surrogate(s: str) -> bool:
    return any("\udc80" <= c <= "\udcff" for c in s) if s and not s.isascii() else False


# ---- Parquet ------------------------------------------------------------------------------------------------------------
def iter_parquet_row_group(spec: SourceSpec, path: str, file: str, rel_file: str, row_group: int, row_base: int,
                           limits: Limits, keep_raw: bool = False):
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(fileio.open_input(path) if fileio.is_remote(path) else path)
    table = pf.read_row_group(row_group)
    if spec.text_field not in table.column_names:
        cols = ", ".join(table.column_names[:20])
        for i in range(table.num_rows):
            row = row_base + i + 1
            trace = _trace(file, row=row)
            raw = json.dumps(table.slice(i, 1).to_pylist()[0], default=str, ensure_ascii=False).encode(
                "utf-8", errors="surrogatepass")
            yield make_quarantine(spec, "missing_text_field", f"no column {spec.text_field!r} (columns: {cols})",
                                  raw, trace, limits, rel_file, row)
        return
    for i, obj in enumerate(table.to_pylist()):
        row = row_base + i + 1
        trace = _trace(file, row=row)
        value = obj.get(spec.text_field)
        try:
            raw = value.encode("utf-8", errors="surrogatepass") if isinstance(value, str) else \
                json.dumps(obj, default=str, ensure_ascii=False).encode("utf-8", errors="surrogatepass")
        except Exception as e:  # noqa: BLE001 - e.g. a value json cannot serialise
            raw = repr(obj).encode("utf-8", errors="backslashreplace")[: limits.raw_payload_max_bytes]
            yield make_quarantine(spec, "invalid_record", f"{type(e).__name__}: {e}"[:300], raw, trace, limits,
                                  rel_file, row)
            continue
        yield _guarded(lambda: _parquet_row(spec, obj, value, raw, trace, limits, rel_file, row, keep_raw),
                       spec, raw, trace, limits, rel_file, row)


def _parquet_row(spec, obj, value, raw, trace, limits, rel_file, row, keep_raw):
    if isinstance(value, bytes):
        try:
            obj[spec.text_field] = value.decode("utf-8")
        except UnicodeDecodeError as e:
            return make_quarantine(spec, "invalid_utf8", f"invalid byte at {e.start}", value, trace, limits,
                                   rel_file, row)
    if value is None:
        obj.pop(spec.text_field)
    unit = _text_fields_to_record(spec, obj, raw, trace, limits, rel_file, row)
    if keep_raw and unit["kind"] == "doc":
        unit["raw"] = raw
    return unit


# ---- WARC records (reading, HTTP and extraction live in udfs/warc.py) ------------------------------------------------
def iter_warc_units(spec, path: str, file: str, rel_file: str, start: int, end: int, limits, keep_raw: bool = False):
    """One unit per WARC record whose header starts in [start, end) (end < 0: to the end of the file): a document,
    a quarantine entry, or a `skip` unit with the record's kind (see udfs/warc.py)."""
    from udfs import warc as W

    opts = limits.html or W.HtmlOptions()
    extractor = W.extractor_version()
    f = fileio.open_input(path)
    size = fileio.size(path)
    try:
        if start > 0 and not path.endswith(".gz"):
            start = W.find_record_start(f, start, size)
            if end >= 0 and start >= end:
                return
            f.seek(start)
        for offset, headers, block, more, declared, error in W.iter_warc_records(
                f, start, end, opts.max_html_bytes + (64 << 10), size, path.endswith(".gz")):
            trace = _trace(file, byte_offset=offset)
            if error is not None:
                yield make_quarantine(spec, error[0], error[1], block, trace, limits, rel_file, offset,
                                      raw_length=max(declared, len(block)))
                return
            yield _guarded(lambda: _record_unit(spec, headers, block, more, trace, limits, opts, extractor,
                                                rel_file, offset, keep_raw),
                           spec, block, trace, limits, rel_file, offset)
    finally:
        f.close()


def _record_unit(spec, headers, block, more, trace, limits, opts, extractor, rel_file, offset, keep_raw):
    from udfs import warc as W

    kind = W.classify(headers, block, more, opts)
    if kind[0] == "skip":
        return {"kind": "skip", "reason": kind[1], "trace": trace}
    record_id = W.record_uuid(headers.get("warc-record-id"))
    qid = given_id(spec.name, record_id)
    if kind[0] == "quarantine":
        return make_quarantine(spec, kind[1], kind[2], block, trace, limits, rel_file, offset, doc_id=qid)
    _, status, mime, header_charset, body = kind
    html, charset = W.decode_html(body, header_charset)
    url = headers.get("warc-target-uri") or None
    text, reason, detail = W.extract_text(html, url, opts)
    if reason is None:
        reason, detail = validate_text(text, limits)
    if reason is not None:
        return make_quarantine(spec, reason, detail, body, trace, limits, rel_file, offset, doc_id=qid)
    meta = {"warc_record_id": headers.get("warc-record-id"), "warc_date": headers.get("warc-date"),
            "http_status": status, "content_type": mime or None, "charset": charset, "extractor": extractor,
            "html_bytes": len(body)}
    doc = make_document(spec, text, None, url, meta, trace, offset, rel_file)
    if qid is not None:
        doc["id"] = qid
    if keep_raw:
        doc["raw"] = block
    return doc


# ---- one task: reader choice, failures of the file itself, Arrow batches ------------------------------------------------
def iter_task_units(spec: SourceSpec, task: dict, limits: Limits, keep_raw: bool = False):
    """Units of one ingest task (a JSONL byte range, a whole file, a Parquet row group). A failure of the file
    itself (I/O error, corrupt gzip, a reader bug) ends with one `unreadable_file` entry after the units read so far."""
    t = task
    try:
        if t["fmt"] == "jsonl":
            units = iter_jsonl_chunk(spec, t["path"], t["file"], t["rel_file"], t["start"], t["end"], t["line_base"],
                                     limits, keep_raw)
        elif t["fmt"] == "text":
            units = iter_text_file(spec, t["path"], t["file"], t["rel_file"], limits, keep_raw)
        elif t["fmt"] == "csv":
            units = iter_csv_file(spec, t["path"], t["file"], t["rel_file"], limits, keep_raw)
        elif t["fmt"] == "warc":
            units = iter_warc_units(spec, t["path"], t["file"], t["rel_file"], t["start"], t["end"], limits, keep_raw)
        else:
            units = iter_parquet_row_group(spec, t["path"], t["file"], t["rel_file"], t["row_group"], t["row_base"],
                                           limits, keep_raw)
        yield from units
    except Exception as e:  # noqa: BLE001 - OSError, EOFError, zlib.error, BadGzipFile, ArrowInvalid, ...
        kind = "I/O error" if isinstance(e, (OSError, EOFError, zlib.error, gzip.BadGzipFile)) else "reader error"
        yield make_quarantine(spec, "unreadable_file", f"{kind}: {type(e).__name__}: {e}"[:300], b"",
                              _trace(t["file"], byte_offset=t["start"]), limits, t["rel_file"], -1 - t["start"])


def unit_arrow_schema():
    """Arrow schema of the units a task emits (the job checks it equals its Spark DDL)."""
    import pyarrow as pa

    s, i64 = pa.string(), pa.int64()
    trace = pa.struct([("file", s), ("line", i64), ("row", i64), ("byte_offset", i64)])
    return pa.schema([("kind", s), ("id", s), ("text", s), ("url", s), ("meta", s), ("trace", trace),
                      ("n_bytes", i64), ("text_sha256", s), ("reason", s), ("detail", s), ("raw", pa.binary()),
                      ("raw_length", i64), ("raw_truncated", pa.bool_()), ("quarantine_id", s), ("source", s),
                      ("domain", s), ("order_file", s), ("order_pos", i64), ("task_id", pa.int32())])


def rows_to_batch(rows: list[dict], schema, limits: Limits):
    """An Arrow batch of unit rows. Should one row still be unrepresentable, it alone becomes an
    `invalid_record` quarantine entry (found by converting row by row) instead of failing the whole batch."""
    import pyarrow as pa

    try:
        return pa.RecordBatch.from_pylist(rows, schema=schema)
    except Exception:  # noqa: BLE001
        fixed = []
        for r in rows:
            try:
                pa.RecordBatch.from_pylist([r], schema=schema)
                fixed.append(r)
            except Exception as e:  # noqa: BLE001
                raw = r.get("raw")
                if not isinstance(raw, bytes):
                    raw = str(r.get("text") or "").encode("utf-8", "backslashreplace")
                tr = r.get("trace") or {}
                fixed.append({**{k: r.get(k) for k in ("source", "domain", "order_file", "order_pos", "task_id")},
                              "kind": "quarantine", "id": _safe_str(r.get("id")) if isinstance(r.get("id"), str)
                              else None, "reason": "invalid_record",
                              "detail": _safe_str(f"{type(e).__name__}: {e}"[:300]),
                              "raw": raw[: limits.raw_payload_max_bytes], "raw_length": len(raw),
                              "raw_truncated": len(raw) > limits.raw_payload_max_bytes,
                              "trace": {k: tr.get(k) for k in ("file", "line", "row", "byte_offset")},
                              "quarantine_id": r.get("quarantine_id") or f"{r.get('source')}/invalid@"
                              f"{r.get('order_file')}:{r.get('order_pos')}"})
        return pa.RecordBatch.from_pylist(fixed, schema=schema)
