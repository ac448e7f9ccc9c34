"""WARC files -> documents: records read with warcio, main text of HTML pages extracted with trafilatura.

Pure Python, no Spark: `udfs.records.iter_warc_units` builds on it inside the ingest job's tasks, and
tests call it directly. Every WARC record gives exactly one unit, so that

    records in the file = documents + quarantined + skipped

* a `response` record of an HTTP 2xx answer with an HTML content type is a document: `text` is the page's main
  text, `url` the WARC-Target-URI, `meta` the record id, date, HTTP status, content type, charset and extractor;
  its trace is the file and the record's byte offset (of its gzip member in a .warc.gz);
* any other record is `skipped` with its kind and counted, not stored (the metrics row's `extra.skipped_records`):
    warc:warcinfo, warc:request, warc:metadata, warc:revisit, warc:resource, warc:conversion, warc:continuation
                      records that are not crawl answers
    warc:not_http     a response record whose block is not an HTTP message (dns:, ftp:)
    warc:status_1xx / warc:status_3xx / warc:status_4xx / warc:status_5xx    answers that hold no page
    warc:not_html     a 2xx answer of another content type (PDF, image, JSON, robots.txt)
* a record that cannot give a document is quarantined, with its head as raw payload:
    warc:truncated    the file ends inside the record (block shorter than its Content-Length, or a cut gzip member);
                      the records before it are kept
    warc:corrupt      bytes that do not parse as a WARC record header (the rest of the file cannot be found) or
                      an HTTP message that does not parse (broken status line, chunked encoding, compression)
    extract:timeout   the extractor ran past `timeout_s` on the page
    extract:empty     the extractor found no main text (a navigation page, a redirect stub, an empty body)
    extract:error     the extractor raised
    too_large         an HTML body over `max_html_bytes`, or extracted text over max_doc_bytes

The time limit is SIGALRM-based (`signal.setitimer`), which holds where the extractor runs on the process's main
thread, as it does in a PySpark Python worker; elsewhere pages run without a limit. The alarm repeats until the
page ends and a page whose alarm fired is a timeout, even where Python swallowed the raise (see `_Alarm`). trafilatura runs with
`deduplicate=False`: its deduplication remembers earlier pages of the same process, which would make a page's text
depend on which pages shared its Spark task (not deterministic).
"""
from __future__ import annotations

import codecs
import re
import signal
import threading
import zlib
from dataclasses import dataclass

HTML_TYPES = ("text/html", "application/xhtml+xml", "application/vnd.wap.xhtml+xml")
DEFAULT_MAX_HTML_BYTES = 8 << 20
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.I)
_HEADER_END = re.compile(rb"\r?\n\r?\n")


@dataclass
class HtmlOptions:
    """How HTML pages become text (ingest.html in conf/pipeline.yaml)."""
    extractor: str = "trafilatura"
    timeout_s: float = 1.0             # per page; 0 = no limit (datatrove's Trafilatura default is 1 s too)
    favor_precision: bool = True       # FineWeb: less text, but less boilerplate
    include_tables: bool = True
    max_html_bytes: int = DEFAULT_MAX_HTML_BYTES

    def __post_init__(self):
        if self.extractor != "trafilatura":
            raise ValueError(f"ingest.html.extractor must be trafilatura, got {self.extractor!r}")
        if float(self.timeout_s) < 0:
            raise ValueError(f"ingest.html.timeout_s must be >= 0, got {self.timeout_s}")
        if int(self.max_html_bytes) < 1:
            raise ValueError(f"ingest.html.max_html_bytes must be >= 1, got {self.max_html_bytes}")


class ExtractTimeout(BaseException):
    """A BaseException, so that the extractor's own `except Exception:` blocks cannot swallow it."""


class _Alarm:
    """State of the per-page timer. The alarm fires again every `_REPEAT_S` after the limit: a raise can land where
    Python ignores exceptions (a weakref callback or __del__ run by the garbage collector prints "Exception ignored"
    and goes on), and a page must not then run on unbounded. `fired` has the last word: a page whose alarm fired is
    a timeout even when every raise was swallowed. `active` goes False as the first statement of every handler and
    of the finally clause: a plain attribute store, with no point before it where CPython runs signal handlers, so
    no raise can escape the function once the page is over."""
    active = False
    fired = False


_REPEAT_S = 0.02


def _on_alarm(signum, frame):
    if _Alarm.active:
        _Alarm.fired = True
        raise ExtractTimeout()


def extractor_version() -> str:
    import trafilatura

    return f"trafilatura {trafilatura.__version__}"


def extract_text(html: str, url: str | None, opts: HtmlOptions) -> tuple[str | None, str | None, str]:
    """(text, None, "") or (None, reason, detail) for one page."""
    import trafilatura

    limit = float(opts.timeout_s)
    timed = limit > 0 and threading.current_thread() is threading.main_thread()
    old = None
    text = None
    outcome: tuple[str, str] | None = None
    _Alarm.fired = False
    if timed:
        old = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        if timed:  # armed inside the try: a tiny limit can fire as setitimer returns
            _Alarm.active = True
            signal.setitimer(signal.ITIMER_REAL, limit, _REPEAT_S)
        text = trafilatura.extract(html, url=url, favor_precision=opts.favor_precision,
                                   include_tables=opts.include_tables, include_comments=False,
                                   include_images=False, deduplicate=False, with_metadata=False,
                                   output_format="txt")
    except ExtractTimeout:
        _Alarm.active = False
    except RecursionError as e:
        _Alarm.active = False
        outcome = ("extract:error", f"RecursionError: {e}"[:300])
    except Exception as e:  # noqa: BLE001 - one page must never end the task
        _Alarm.active = False
        outcome = ("extract:error", f"{type(e).__name__}: {e}"[:300])
    finally:
        _Alarm.active = False
        if timed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
    if _Alarm.fired:
        return None, "extract:timeout", f"no result after {limit:g} s"
    if outcome:
        return None, outcome[0], outcome[1]
    if not text or not text.strip():
        return None, "extract:empty", f"no main text in {len(html)} characters of HTML"
    return text, None, ""


# ---- HTTP messages inside response records --------------------------------------------------------------------------
class HttpError(Exception):
    pass


def parse_http(block: bytes) -> tuple[int, dict, bytes]:
    """(status, {lower-case header: value}, body) of an HTTP response message; raises HttpError."""
    m = _HEADER_END.search(block)
    head, body = (block[:m.start()], block[m.end():]) if m else (block, b"")
    lines = head.decode("iso-8859-1").splitlines()
    if not lines or not lines[0].startswith("HTTP/"):
        raise HttpError(f"no HTTP status line: {lines[0][:80] if lines else ''!r}")
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise HttpError(f"bad HTTP status line: {lines[0][:80]!r}")
    headers: dict = {}
    for line in lines[1:]:
        k, sep, v = line.partition(":")
        if sep:
            headers[k.strip().lower()] = v.strip()
    return int(parts[1]), headers, body


def dechunk(body: bytes, limit: int) -> bytes:
    out, pos = bytearray(), 0
    while True:
        nl = body.find(b"\n", pos)
        if nl < 0:
            raise HttpError("chunked body without a final chunk")
        size_s = body[pos:nl].split(b";")[0].strip()
        try:
            size = int(size_s, 16)
        except ValueError:
            raise HttpError(f"bad chunk size {size_s[:20]!r}")
        if size == 0:
            return bytes(out)
        out += body[nl + 1:nl + 1 + size]
        if len(out) > limit:
            return bytes(out)
        pos = nl + 1 + size
        pos = pos + 2 if body[pos:pos + 2] == b"\r\n" else pos + 1 if body[pos:pos + 1] == b"\n" else pos


def decode_body(body: bytes, headers: dict, limit: int) -> bytes:
    """The body without transfer and content encodings (Common Crawl stores them removed; other crawlers not)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = dechunk(body, limit)
    enc = headers.get("content-encoding", "").lower().strip()
    if enc in ("gzip", "x-gzip", "deflate"):
        d = zlib.decompressobj(zlib.MAX_WBITS | 32 if enc != "deflate" else zlib.MAX_WBITS)
        try:
            out = d.decompress(body, limit + 1)
        except zlib.error:
            if enc != "deflate":
                raise HttpError(f"body does not decompress as {enc}")
            try:  # raw deflate, as some servers send
                out = zlib.decompressobj(-zlib.MAX_WBITS).decompress(body, limit + 1)
            except zlib.error:
                raise HttpError("body does not decompress as deflate")
        return out
    if enc not in ("", "identity", "none"):
        raise HttpError(f"unsupported Content-Encoding {enc!r}")
    return body


def _mime_and_charset(content_type: str) -> tuple[str, str | None]:
    parts = [p.strip() for p in content_type.split(";")]
    charset = None
    for p in parts[1:]:
        k, _, v = p.partition("=")
        if k.strip().lower() == "charset" and v.strip():
            charset = v.strip().strip("\"'")
    return parts[0].lower(), charset


def _codec(name: str | None) -> str | None:
    if not name:
        return None
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def decode_html(body: bytes, header_charset: str | None) -> tuple[str, str]:
    """(text, charset used): the HTTP header's charset, else a <meta> charset, else UTF-8 if it decodes, else
    windows-1252 (what browsers assume for unlabelled Western pages)."""
    for name in (_codec(header_charset), _codec(_sniff_meta(body))):
        if name:
            return body.decode(name, errors="replace"), name
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return body.decode("cp1252", errors="replace"), "cp1252"


def _sniff_meta(body: bytes) -> str | None:
    m = _META_CHARSET.search(body[:4096])
    return m.group(1).decode("ascii", "replace") if m else None


def looks_like_html(body: bytes) -> bool:
    head = body[:1024].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html")) or b"<html" in head


# ---- WARC records ---------------------------------------------------------------------------------------------------
def record_uuid(record_id: str | None) -> str | None:
    if not record_id:
        return None
    s = record_id.strip().strip("<>")
    return s[len("urn:uuid:"):] if s.lower().startswith("urn:uuid:") else s


def _read_block(stream, limit: int) -> tuple[bytes, bool]:
    """(up to `limit` bytes of the record block, whether more followed)."""
    data = stream.read(limit + 1)
    return data[:limit], len(data) > limit


def iter_warc_records(fileobj, start: int = 0, end: int = -1, read_limit: int = DEFAULT_MAX_HTML_BYTES + (64 << 10),
                      size: int | None = None, gzipped: bool = False):
    """(offset, headers, block, more, declared_length, error) per record whose header starts in [start, end).
    `error` is None, or (reason, detail) after which iteration stops (truncated or corrupt input).

    warcio reads a cut gzip member as a shorter one, or as nothing at all, so the end of the file is checked here:
    the last record's gzip member must be complete (its trailer read) and nothing but blank lines may follow the
    last record; else that record, or the bytes after it, are one `warc:truncated` entry."""
    from warcio.archiveiterator import ArchiveIterator
    from warcio.exceptions import ArchiveLoadFailed

    it = ArchiveIterator(fileobj, no_record_parse=True, check_digests=False)
    gen = iter(it)
    pending, reached_end = None, True
    while True:
        try:
            rec = next(gen)
        except StopIteration:
            break
        except ArchiveLoadFailed as e:
            if pending:
                yield pending[:6]
            at, reason = _failed_at(fileobj, _after(pending, start), size)
            yield at, {}, b"", False, 0, (reason, f"ArchiveLoadFailed: {e}"[:300])
            return
        except (EOFError, zlib.error, OSError) as e:
            if pending:
                yield pending[:6]
            yield _after(pending, start), {}, b"", False, 0, ("warc:truncated", f"{type(e).__name__}: {e}"[:300])
            return
        headers = {k.lower(): v for k, v in rec.rec_headers.headers}
        try:
            block, more = _read_block(rec.raw_stream, read_limit)
            offset, length = it.get_record_offset(), it.get_record_length()
        except (EOFError, zlib.error, OSError) as e:
            if pending:
                yield pending[:6]
            yield _after(pending, start), headers, b"", False, 0, ("warc:truncated", f"{type(e).__name__}: {e}"[:300])
            return
        if end >= 0 and offset >= end:
            reached_end = False
            break
        if pending:
            yield pending[:6]
        try:
            declared = int(headers.get("content-length", "-1"))
        except ValueError:
            declared = -1
        got = len(block) if not more else declared
        if declared < 0 or "warc-type" not in headers:
            yield offset, headers, block, False, declared, ("warc:truncated" if size is not None and
                                                            offset + length >= size else "warc:corrupt",
                                                            "a record header without WARC-Type or Content-Length")
            return
        if got < declared:
            yield offset, headers, block, False, declared, ("warc:truncated", f"block of {got} bytes, Content-Length "
                                                                              f"{declared}: the file ends inside it")
            return
        pending = (offset, headers, block, more, declared, None, length)
    if pending is None:
        if reached_end and size is not None and size > start and _has_data(fileobj, start, size):
            yield start, {}, b"", False, 0, ("warc:truncated", "the file ends inside its first record")
        return
    if not reached_end or size is None:
        yield pending[:6]
        return
    offset, length = pending[0], pending[6]
    if gzipped and not _member_complete(fileobj, offset, size):
        yield offset, pending[1], pending[2], False, pending[4], ("warc:truncated", "the file ends inside this "
                                                                 "record's gzip member (no gzip trailer)")
        return
    yield pending[:6]
    if _has_data(fileobj, offset + length, size):
        yield offset + length, {}, b"", False, 0, ("warc:truncated", "the file ends inside a record header")


def _after(pending, start: int) -> int:
    return pending[0] + pending[6] if pending else start


def _failed_at(f, at: int, size: int | None) -> tuple[int, str]:
    """(offset, reason) of bytes after the last good record that warcio cannot read: `warc:truncated` when they are
    the start of a header that the file's end cut off (no blank line ends it), else `warc:corrupt`."""
    if size is None:
        return at, "warc:corrupt"
    f.seek(at)
    rest = f.read(min(size - at, 1 << 16))
    body = rest.lstrip(b"\r\n")
    at += len(rest) - len(body)
    cut = at + len(body) >= size and not _HEADER_END.search(body) and (b"WARC/1."[:len(body)] == body[:7])
    return at, "warc:truncated" if cut else "warc:corrupt"


def _has_data(f, at: int, size: int) -> bool:
    """Whether bytes other than blank lines lie in [at, size)."""
    if at >= size:
        return False
    f.seek(at)
    return bool(f.read(min(size - at, 1 << 16)).strip(b"\r\n"))


def _member_complete(f, at: int, size: int) -> bool:
    """Whether the gzip member starting at `at` ends (its trailer is there) before `size`."""
    f.seek(at)
    d = zlib.decompressobj(zlib.MAX_WBITS | 16)
    while not d.eof:
        chunk = f.read(1 << 16)
        if not chunk:
            return False
        try:
            d.decompress(chunk, 1 << 16)
            while d.unconsumed_tail and not d.eof:
                d.decompress(d.unconsumed_tail, 1 << 16)
        except zlib.error:
            return False
    return True


_SKIP_TYPES = ("warcinfo", "request", "metadata", "revisit", "resource", "conversion", "continuation")


def classify(headers: dict, block: bytes, more: bool, opts: HtmlOptions):
    """('skip', reason) | ('quarantine', reason, detail) | ('page', status, mime type, the Content-Type's charset or
    None, decoded body) for one record."""
    wtype = headers.get("warc-type", "").lower()
    if wtype != "response":
        return ("skip", f"warc:{wtype}" if wtype in _SKIP_TYPES else "warc:other")
    if not block.startswith(b"HTTP/"):
        return ("skip", "warc:not_http")
    try:
        status, http, body = parse_http(block)
    except HttpError as e:
        return ("quarantine", "warc:corrupt", str(e))
    if not 200 <= status < 300:
        return ("skip", f"warc:status_{status // 100}xx")
    mime, charset = _mime_and_charset(http.get("content-type", ""))
    if mime not in HTML_TYPES and not (not mime and looks_like_html(body)):
        return ("skip", "warc:not_html")
    if more:
        return ("quarantine", "too_large", f"HTML record over max_html_bytes {opts.max_html_bytes}")
    try:
        body = decode_body(body, http, opts.max_html_bytes)
    except HttpError as e:
        return ("quarantine", "warc:corrupt", str(e))
    if len(body) > opts.max_html_bytes:
        return ("quarantine", "too_large", f"HTML body over max_html_bytes {opts.max_html_bytes}")
    return ("page", status, mime, charset, body)


def find_record_start(f, start: int, size: int, window: int = 1 << 20) -> int:
    """The first offset >= start where an uncompressed WARC record begins (a line `WARC/1.x` whose header parses
    and whose block ends where another record, or the file, begins), else `size`. Lets a big .warc split into
    byte ranges: a task reads the records whose header starts in its range."""
    pos = start
    while pos < size:
        f.seek(pos)
        buf = f.read(window + 16)
        if not buf:
            return size
        i = 0
        while True:
            i = buf.find(b"WARC/1.", i)
            if i < 0 or i >= window:
                break
            at = pos + i
            if (at == 0 or _byte_at(f, at - 1) == b"\n") and _record_chains(f, at, size):
                return at
            i += 1
        pos += window
    return size


def _byte_at(f, at: int) -> bytes:
    f.seek(at)
    return f.read(1)


def _record_chains(f, at: int, size: int) -> bool:
    f.seek(at)
    head = f.read(64 << 10)
    m = _HEADER_END.search(head)
    if not m:
        return False
    length = None
    for line in head[:m.start()].split(b"\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            try:
                length = int(v.strip())
            except ValueError:
                return False
    if length is None:
        return False
    nxt = at + m.end() + length
    f.seek(nxt)
    tail = f.read(4 + 8)
    return nxt + 4 >= size or tail.lstrip(b"\r\n").startswith(b"WARC/1.")
