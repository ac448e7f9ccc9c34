"""Per-record readers (udfs/records.py) on hostile input: nothing a record holds can raise, every line lands once.

No Spark here: the readers are pure Python, so thousands of mutated inputs run in seconds.
"""
import gzip
import json
import os
import random
import subprocess
import sys
import zlib

import pyarrow.parquet as pq
import pyarrow as pa
import pytest

from udfs import records as R

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROSE = ["The committee met on Tuesday to discuss the new library budget.",
         "Die Bibliothek öffnet um neun Uhr; der Eintritt ist frei.",
         "東京の図書館は月曜日に休館します。", "Emoji 🙂 and tabs\tand \"quotes\" and back\\slashes."]


def _task(path, fmt="jsonl", start=0, end=-1, line_base=0, row_group=0, row_base=0):
    rel = os.path.basename(path)
    return dict(fmt=fmt, path=str(path), file=rel, rel_file=rel, start=start, end=end, line_base=line_base,
                row_group=row_group, row_base=row_base, task_id=0)


def _units(spec, task, limits):
    return list(R.iter_task_units(spec, task, limits))


def _to_arrow(units, limits):
    rows = [dict(u, source="s", domain="d", order_file="f", order_pos=0, task_id=0) for u in units
            if u["kind"] != "blank"]
    return R.rows_to_batch(rows, R.unit_arrow_schema(), limits)


JSPEC = R.SourceSpec(name="s", domain="d", format="jsonl", path="x", id_field="id", url_field="url")


def _mutate(rng: random.Random, line: bytes, limits: R.Limits) -> bytes:
    kind = rng.randrange(12)
    if kind == 0:
        return line[: rng.randrange(len(line) + 1)]                                   # truncation
    if kind == 1:
        b = bytearray(line)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)                             # byte flips
        return bytes(b).replace(b"\n", b"")
    if kind == 2:
        d = rng.choice([50, 101, 1000, 5000, 20000])
        return b'{"id": "deep", "text": "t", "x": ' + b"[" * d + b"]" * d + b"}"      # deep nesting
    if kind == 3:
        return line[:-1] + b', "n": ' + b"9" * rng.choice([20, 400, 5000]) + b"}"    # huge numbers
    if kind == 4:
        return line.replace(b'"text": "', rng.choice([b'"text": "\\ud800', b'"text": "\\udfff x',
                                                        b'"url": "\\ud83d", "text": "']), 1)  # lone surrogates
    if kind == 5:
        return line.replace(b" ", rng.choice([b"\x00", b"\\u0000"]), 1)              # NUL
    if kind == 6:
        return b"\xef\xbb\xbf" + line                                                 # BOM mid-file
    if kind == 7:
        return line + b"\r" * rng.randint(1, 3)                                       # CR
    if kind == 8:
        return b'{"id": "long", "text": "' + b"x" * (limits.max_line_bytes + rng.randrange(3)) + b'"}'
    if kind == 9:
        return rng.choice([b"", b"   ", b"\t", b"\r"])                                # blank-ish
    if kind == 10:
        return rng.choice([b"[]", b"null", b"1e999", b'"s"', b"{}", b'{"text": {}}', b'{"text": ["a"]}'])
    return line


def _valid_line(rng, i):
    return json.dumps({"id": f"r{i}", "url": f"https://e.org/{i}", "text": " ".join(rng.sample(PROSE, 2)),
                       "meta": {"k": [1, 2, {"z": None}]}}, ensure_ascii=rng.random() < 0.5).encode()


def test_jsonl_fuzz_never_raises_and_every_line_lands_once(tmp_path):
    limits = R.Limits(max_doc_bytes=4000)
    for seed in range(150):
        rng = random.Random(seed)
        lines = [_valid_line(rng, i) for i in range(60)]
        lines = [_mutate(rng, ln, limits) if rng.random() < 0.6 else ln for ln in lines]
        if rng.random() < 0.5:
            lines[0] = b"\xef\xbb\xbf" + lines[0]
        data = b"\n".join(lines) + (b"\n" if rng.random() < 0.5 else b"")
        path = tmp_path / f"f{seed}.jsonl"
        path.write_bytes(data)
        whole = _units(JSPEC, _task(path), limits)
        # exactly one unit per line, whatever the line holds
        assert len(whole) == len(lines), seed
        assert [u["trace"]["line"] for u in whole] == list(range(1, len(lines) + 1))
        assert all(u["kind"] in ("doc", "quarantine", "blank") for u in whole)
        assert not any(u.get("reason") == "unreadable_file" for u in whole)
        assert _to_arrow(whole, limits).num_rows == sum(u["kind"] != "blank" for u in whole)
        # the same units when the file is cut into byte ranges at random points (how ingest splits big files)
        size = len(data)
        cuts = sorted({0, size, *(rng.randrange(size) for _ in range(5))})
        chunked, base = [], 0
        for a, b in zip(cuts, cuts[1:]):
            chunked += _units(JSPEC, _task(path, start=a, end=b, line_base=base), limits)
            base += R.count_line_starts(str(path), a, b, size)
        key = [(u["kind"], u.get("id"), u.get("reason"), u["trace"]["line"]) for u in whole]
        assert [(u["kind"], u.get("id"), u.get("reason"), u["trace"]["line"]) for u in chunked] == key, seed
        # and through gzip
        gz = tmp_path / f"f{seed}.jsonl.gz"
        gz.write_bytes(gzip.compress(data, mtime=0))
        gz_task = dict(_task(gz), rel_file=f"f{seed}.jsonl")  # same relative name: same hash ids
        assert [(u["kind"], u.get("id"), u.get("reason")) for u in _units(JSPEC, gz_task, limits)] == \
            [k[:3] for k in key]


def test_each_hostile_jsonl_class(tmp_path):
    limits = R.Limits(max_doc_bytes=2000)
    lines = [b'\xef\xbb\xbf{"id": 1, "text": "first line after a BOM"}',  # 1 BOM: kept
             b"", b"  \t", b"\r",                                          # 2-4 blank: not records
             b"[" * 10000 + b"]" * 10000,                                  # 5 deep nesting
             b'{"id": 6, "text": "ok"}\r',                                 # 6 CRLF
             b'{"id": 7, "text": "x", "m": "\\ud800"}',                    # 7 lone surrogate outside the text
             b'{"id": 8, "text": "' + b"a" * 90000 + b'"}',                # 8 longer than max_line_bytes
             b'{"id": 9, "text": "nul \\u0000 inside"}',                   # 9 NUL escape: valid text
             b'{"id": 10, "text": "[[[[ brackets in a string are not nesting ]]"}']
    path = tmp_path / "h.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    u = _units(JSPEC, _task(path), limits)
    assert [x["kind"] for x in u] == ["doc", "blank", "blank", "blank", "quarantine", "doc", "quarantine",
                                      "quarantine", "doc", "doc"]
    assert u[0]["id"] == "s/1" and u[0]["text"] == "first line after a BOM"
    assert u[4]["reason"] == "too_deep" and "10000" in u[4]["detail"]
    assert u[5]["text"] == "ok"
    assert u[6]["reason"] == "invalid_unicode" and "meta" in u[6]["detail"]
    assert u[7]["reason"] == "too_large" and u[7]["raw_length"] == 90021 and u[7]["raw_truncated"]
    assert u[8]["text"] == "nul \x00 inside"
    assert _to_arrow(u, limits).num_rows == 7


def test_recursion_error_is_caught_even_without_the_depth_check(tmp_path):
    limits = R.Limits(max_json_depth=10 ** 9)  # depth check off: json.loads itself hits the recursion limit
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"[" * 100000 + b"]" * 100000 + b"\n" + b'{"id": 2, "text": "after"}\n')
    u = _units(JSPEC, _task(path), limits)
    assert [x.get("reason") for x in u] == ["invalid_json", None] and u[1]["text"] == "after"


def test_gzip_bomb_is_quarantined_with_bounded_memory(tmp_path):
    """1 GiB of NUL on one line, gzip-compressed (~1 MB): read in bounded pieces and abandoned, not loaded."""
    bomb = tmp_path / "bomb.jsonl.gz"
    comp = zlib.compressobj(1, zlib.DEFLATED, 31)
    zeros = bytes(16 << 20)
    with open(bomb, "wb") as f:
        f.write(comp.compress(b'{"id": "a", "text": "before the bomb"}\n'))
        for _ in range(64):
            f.write(comp.compress(zeros))
        f.write(comp.compress(b'\n{"id": "z", "text": "after"}\n'))
        f.write(comp.flush())
    # peak RSS from /proc (VmHWM belongs to the new process image; ru_maxrss would carry the parent's over exec)
    code = f"""
import sys
sys.path.insert(0, {REPO!r})
from udfs import records as R
spec = R.SourceSpec(name="s", domain="d", format="jsonl", path="x", id_field="id")
t = dict(fmt="jsonl", path={str(bomb)!r}, file="bomb.jsonl.gz", rel_file="bomb.jsonl.gz", start=0, end=-1,
         line_base=0, row_group=0, row_base=0)
units = list(R.iter_task_units(spec, t, R.Limits()))
print([(u["kind"], u.get("id"), u.get("reason"), u.get("raw_length")) for u in units])
print([int(x.split()[1]) // 1024 for x in open("/proc/self/status") if x.startswith("VmHWM")][0])
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    units_line, peak_mb = p.stdout.strip().splitlines()
    units = eval(units_line)
    assert units[0] == ("doc", "s/a", None, None)
    kind, _, reason, raw_length = units[1]
    limit = R.Limits().max_line_bytes
    assert (kind, reason) == ("quarantine", "too_large") and len(units) == 2  # the rest of the stream is abandoned
    assert limit < raw_length <= limit + R.DEFAULT_MAX_SKIP_BYTES + (2 << 20)
    assert int(peak_mb) < 256, f"peak RSS {peak_mb} MB"
    print(f"gzip bomb: peak RSS {peak_mb} MB")


def test_long_line_in_plain_file_is_skipped_and_reading_goes_on(tmp_path):
    limits = R.Limits(max_doc_bytes=1000, max_line_bytes=5000)
    path = tmp_path / "l.jsonl"
    path.write_bytes(b'{"text": "' + b"y" * 3_000_000 + b'"}\n{"id": 2, "text": "next"}\n')
    u = _units(JSPEC, _task(path), limits)
    assert [x.get("reason") for x in u] == ["too_large", None]
    assert u[0]["raw_length"] == 3_000_012 and u[0]["raw_truncated"]
    assert u[0]["raw"] == b'{"text": "' + b"y" * (limits.max_line_bytes + 1 - 10)  # only the head was read
    assert u[1]["trace"]["byte_offset"] == 3_000_013
    # a chunk that starts inside the long line skips it without reading it whole
    assert _units(JSPEC, _task(path, start=100, end=200), limits) == []


CSPEC = R.SourceSpec(name="c", domain="d", format="csv", path="x", text_field="body", id_field="id")


def test_csv_open_quote_bom_blank_rows_and_original_bytes(tmp_path):
    path = tmp_path / "f.csv"
    path.write_bytes(b'\xef\xbb\xbfid,body\r\n1,"first, with comma"\r\n\r\n2,plain text\r\n'
                     b'3,"bad "quote" here"\r\n4,"open quote at the end\r\nstill open\r\n')
    u = _units(CSPEC, _task(path, fmt="csv"), R.Limits())
    kinds = [(x["kind"], x.get("id"), x.get("reason")) for x in u]
    assert kinds == [("doc", "c/1", None), ("blank", None, None), ("doc", "c/2", None),
                     ("quarantine", None, "invalid_csv"), ("quarantine", None, "invalid_csv")]
    assert u[0]["text"] == "first, with comma"  # the BOM did not become part of the header
    assert u[3]["raw"] == b'3,"bad "quote" here"'  # original bytes, not re-joined values
    assert u[4]["detail"] == "quote still open at end of file"
    assert u[4]["raw"] == b'4,"open quote at the end\r\nstill open' and u[4]["trace"]["line"] == 6


def test_csv_fuzz_never_raises(tmp_path):
    limits = R.Limits(max_doc_bytes=500, max_line_bytes=2000)
    base = b'id,title,body\n' + b"".join(
        b'%d,"T %d","%s"\n' % (i, i, PROSE[i % 4].replace('"', '""').encode()) for i in range(40))
    for seed in range(40):
        rng = random.Random(seed)
        b = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            op = rng.randrange(4)
            at = rng.randrange(len(b))
            if op == 0:
                b[at] = rng.choice(b'"\n\r,\x00\xff')
            elif op == 1:
                del b[at:at + rng.randrange(30)]
            elif op == 2:
                b[at:at] = b"z" * rng.choice([10, 3000])
            else:
                b = b[:at]
        path = tmp_path / f"c{seed}.csv"
        path.write_bytes(bytes(b))
        u = _units(CSPEC, _task(path, fmt="csv"), limits)
        assert not any(x.get("reason") == "unreadable_file" for x in u), seed
        _to_arrow(u, limits)


def test_text_paragraphs_streamed_with_bom_and_long_paragraph(tmp_path):
    spec = R.SourceSpec(name="t", domain="d", format="text", path="x", text_mode="paragraph")
    limits = R.Limits(max_doc_bytes=100, max_line_bytes=300)
    path = tmp_path / "p.txt"
    path.write_bytes(b"\xef\xbb\xbfFirst one.\nline two.\n\n \n" + (b"w" * 200 + b"\n") * 3 + b"\nLast \xff bad.\n")
    u = _units(spec, _task(path, fmt="text"), limits)
    assert [(x["kind"], x.get("reason"), x["trace"]["line"]) for x in u] == [
        ("doc", None, 1), ("quarantine", "too_large", 5), ("quarantine", "invalid_utf8", 9)]
    assert u[0]["text"] == "First one.\nline two."
    file_spec = R.SourceSpec(name="t", domain="d", format="text", path="x")
    big = tmp_path / "big.txt"
    big.write_bytes(b"z" * 5000)
    (q,) = _units(file_spec, _task(big, fmt="text"), limits)
    assert q["reason"] == "too_large" and q["raw_length"] == 5000 and len(q["raw"]) == 5000
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbfHello there.")
    (d,) = _units(file_spec, _task(bom, fmt="text"), limits)
    assert d["text"] == "Hello there."


def test_parquet_rows_with_odd_values_never_raise(tmp_path):
    spec = R.SourceSpec(name="p", domain="d", format="parquet", path="x", text_field="content")
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"content": ["fine", "x\x00y", "", None, "a" * 3000],
                             "b": [b"\xff\xfe", b"", None, b"ok", b"z"],
                             "nested": [[{"k": 1}], [], None, [{"k": None}], [{"k": 2}]]}), path)
    u = _units(spec, _task(path, fmt="parquet"), R.Limits(max_doc_bytes=2000))
    assert [x.get("reason") for x in u] == [None, None, "empty_text", "missing_text_field", "too_large"]
    _to_arrow(u, R.Limits())
    missing = R.SourceSpec(name="p", domain="d", format="parquet", path="x", text_field="body")
    u = _units(missing, _task(path, fmt="parquet"), R.Limits())
    assert {x["reason"] for x in u} == {"missing_text_field"} and "columns: content, b, nested" in u[0]["detail"]


def test_a_failing_file_keeps_the_records_before_it(tmp_path):
    good = gzip.compress(b'{"id": 1, "text": "one"}\n{"id": 2, "text": "two"}\n' * 2000, mtime=0)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(good[: len(good) // 2])  # truncated gzip stream
    u = _units(JSPEC, _task(path), R.Limits())
    assert u[-1]["reason"] == "unreadable_file" and "EOFError" in u[-1]["detail"]
    assert len(u) > 100 and all(x["kind"] == "doc" for x in u[:-1])


def test_a_row_that_arrow_cannot_store_is_quarantined_alone():
    limits = R.Limits()
    good = {"kind": "doc", "id": "s/1", "text": "ok", "trace": {"file": "f", "line": 1, "row": None,
                                                              "byte_offset": 0}, "source": "s", "task_id": 0}
    bad = dict(good, id="s/2", text="bad \udc80 surrogate")
    batch = R.rows_to_batch([good, bad, dict(good, id="s/3")], R.unit_arrow_schema(), limits)
    rows = batch.to_pylist()
    assert [r["kind"] for r in rows] == ["doc", "quarantine", "doc"]
    assert rows[1]["reason"] == "invalid_record" and rows[1]["id"] == "s/2"


@pytest.mark.parametrize("depth,expect", [(5, 0), (101, 102)])  # the outer object counts too
def test_json_depth(depth, expect):
    s = '{"a": ' + "[" * depth + "]" * depth + ', "s": "' + "[" * 500 + '"}'
    got = R.json_depth(s, 100)
    assert got == expect or (expect == 0 and got <= 100)
