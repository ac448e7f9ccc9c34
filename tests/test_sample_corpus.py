"""The bundled sample corpus (data/sample/): files, size budget, planted malformations and planted.json.

Pure Python (+ pyarrow for the Parquet files), no Spark: every check parses the committed files independently of
jobs/ingest.py, so a broken sample shows up here rather than as a puzzling failure in a later stage.
"""
import csv
import glob
import gzip
import io
import json
import os
import re
from collections import Counter

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "data", "sample")
MAX_TOTAL_BYTES = 5 * 1024 * 1024
MAX_DOC_BYTES = 1 << 20
WORD = re.compile(r"\w+")


def _abs(rel):
    return os.path.join(REPO, rel)


@pytest.fixture(scope="module")
def planted():
    with open(os.path.join(SAMPLE, "planted.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def sources():
    with open(_abs("conf/sources.yaml")) as f:
        return {s["name"]: s for s in yaml.safe_load(f)["sources"]}


def jaccard(a: str, b: str, n: int = 5) -> float:
    def sh(t):
        toks = WORD.findall(t.lower())
        return {" ".join(toks[i:i + n]) for i in range(len(toks) - n + 1)}

    x, y = sh(a), sh(b)
    return len(x & y) / len(x | y)


def classify_jsonl_line(raw: bytes, seen_ids: set) -> tuple[str, dict | None]:
    """The quarantine reason jobs/ingest.py gives a JSONL line, or 'valid' / 'missing_id' / 'blank_line'
    (a blank line is counted by ingest, not quarantined)."""
    if not raw.strip():
        return "blank_line", None
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_utf8", None
    try:
        obj = json.loads(s)
    except ValueError:
        return "invalid_json", None
    if not isinstance(obj, dict):
        return "not_an_object", None
    if "text" not in obj or obj["text"] is None:
        return "missing_text_field", obj
    t = obj["text"]
    if not isinstance(t, str):
        return "text_not_string", obj
    if not t.strip():
        return "empty_text", obj
    try:
        n = len(t.encode("utf-8"))
    except UnicodeEncodeError:
        return "invalid_unicode", obj
    if n > MAX_DOC_BYTES:
        return "too_large", obj
    if "id" not in obj:
        return "missing_id", obj
    if obj["id"] in seen_ids:
        return "duplicate_id", obj
    seen_ids.add(obj["id"])
    return "valid", obj


@pytest.fixture(scope="module")
def web(sources):
    """{file: [(line_no, reason, obj)]} for every line of every web file."""
    out, seen = {}, set()
    for path in sorted(glob.glob(_abs(sources["web"]["path"]))):
        rel = os.path.relpath(path, REPO)
        data = gzip.open(path).read()
        assert data.endswith(b"\n")
        out[rel] = [(n, *classify_jsonl_line(line, seen))
                    for n, line in enumerate(data[:-1].split(b"\n"), start=1)]
    return out


@pytest.fixture(scope="module")
def docs(sources, web):
    """Valid documents by reference key: ('web', id) ... ('books_paragraphs', file, line) -> text."""
    out = {}
    for rel, lines in web.items():
        for _, reason, obj in lines:
            if reason == "valid":
                out[("web", obj["id"])] = obj["text"]
    for path in sorted(glob.glob(_abs(sources["reference"]["path"]))):
        for line in open(path, encoding="utf-8"):
            obj = json.loads(line)
            out[("reference", obj["id"])] = obj["text"]
    for path in sorted(glob.glob(_abs(sources["books_paragraphs"]["path"]))):
        data = open(path, "rb").read()
        pos = 0
        for m in list(re.finditer(rb"\n[ \t]*\n(?:[ \t]*\n)*", data)) + [None]:
            end = m.start() if m else len(data)
            piece = data[pos:end].strip(b"\n")
            if piece.strip():
                line = data.count(b"\n", 0, pos) + 1
                try:
                    out[("books_paragraphs", os.path.relpath(path, REPO), line)] = piece.decode("utf-8")
                except UnicodeDecodeError:
                    pass
            if m is None:
                break
            pos = m.end()
    for row in _code_rows(sources):
        if isinstance(row["content"], str) and row["content"].strip():
            out[("code", row["path"])] = row["content"]
    for rel, rows in _forum_rows(sources).items():
        for r in rows:
            if len(r) == 4 and r[2].strip() and not any(_has_surrogate(v) for v in r):
                out[("forum", r[0])] = r[2]
    return out


def _has_surrogate(s):
    return any("\udc80" <= c <= "\udcff" for c in s)


def _code_rows(sources):
    import pyarrow.parquet as pq

    rows = []
    for path in sorted(glob.glob(_abs(sources["code"]["path"]))):
        rows += pq.read_table(path).to_pylist()
    return rows


def _forum_rows(sources):
    out = {}
    for path in sorted(glob.glob(_abs(sources["forum"]["path"]))):
        data = open(path, "rb").read().decode("utf-8", errors="surrogateescape")
        rows = list(csv.reader(io.StringIO(data, newline="")))
        assert rows[0] == ["post_id", "title", "body", "score"]
        out[os.path.relpath(path, REPO)] = rows[1:]
    return out


def key(ref: dict):
    if ref["source"] == "books_paragraphs":
        return ("books_paragraphs", ref["file"], ref["line"])
    return (ref["source"], ref["id"])


# ---- files and sizes -----------------------------------------------------------------------------------------------
def test_sources_yaml_points_at_existing_files(sources):
    assert set(sources) == {"web", "reference", "books", "books_paragraphs", "code", "forum", "crawl"}
    for s in sources.values():
        assert s["format"] in ("jsonl", "text", "parquet", "csv", "warc")
        assert s["domain"] in ("web", "reference", "books", "code", "forum", "docs")
        assert glob.glob(_abs(s["path"])), s["path"]
        if s["format"] == "text":
            assert s["text_mode"] in ("file", "paragraph")
        elif s["format"] != "warc":  # a WARC record gives its own id and url
            assert s["text_field"] and s["id_field"]


def test_support_files_exist():
    for name in ["LICENSE-NOTES.md", "planted.json", "raw/MANIFEST.json"]:
        assert os.path.isfile(os.path.join(SAMPLE, name)), name
    assert len(glob.glob(os.path.join(SAMPLE, "raw", "*.jsonl.xz"))) >= 8
    assert os.path.isfile(_abs("scripts/build_sample.py"))


def test_size_budget():
    sizes = {p: os.path.getsize(p) for p in glob.glob(os.path.join(SAMPLE, "**", "*"), recursive=True)
             if os.path.isfile(p)}
    assert sum(sizes.values()) < MAX_TOTAL_BYTES, sum(sizes.values())
    assert max(sizes.values()) < 1024 * 1024  # the > 1 MiB web document is stored gzip-compressed


# ---- malformations, parsed from the raw files -------------------------------------------------------------------------
def test_web_malformed_lines_match_planted(web, planted):
    found = Counter(r for lines in web.values() for _, r, _ in lines if r != "valid")
    # a record without an id gets a hash id, a blank line is not a record: neither is quarantined
    assert Counter({k: n for k, n in found.items() if k not in ("missing_id", "blank_line")}) == Counter(
        planted["expected_quarantine"]["web"])
    for kind in ["invalid_json", "not_an_object", "missing_text_field", "text_not_string", "empty_text",
                 "invalid_utf8", "invalid_unicode", "duplicate_id", "too_large", "blank_line"]:
        assert found[kind] >= 1, kind
    for m in planted["malformed"]:
        if m["source"] == "web":
            n, reason, obj = web[m["file"]][m["line"] - 1]
            assert reason == m["kind"], m
    # 'text not a string' covers number, null and list
    bad_types = {type(o["text"]).__name__ for lines in web.values() for _, r, o in lines
                 if r in ("text_not_string", "missing_text_field") and o and "text" in o}
    assert bad_types == {"int", "NoneType", "list"}
    huge = [o for lines in web.values() for _, r, o in lines if r == "too_large"]
    assert len(huge[0]["text"].encode()) > MAX_DOC_BYTES
    valid = sum(1 for lines in web.values() for _, r, _ in lines if r in ("valid", "missing_id"))
    assert valid == planted["counts"]["web"]["valid_documents"]


def test_reference_records_are_clean(sources, planted):
    ids = []
    for path in glob.glob(_abs(sources["reference"]["path"])):
        for line in open(path, encoding="utf-8"):
            obj = json.loads(line)
            assert set(obj) == {"id", "title", "url", "text"} and obj["text"].strip()
            ids.append(obj["id"])
    assert len(ids) == len(set(ids)) == planted["counts"]["reference"]["valid_documents"]


def test_books_files_and_paragraph_malformation(sources, planted):
    files = sorted(glob.glob(_abs(sources["books"]["path"])))
    blank = [f for f in files if not open(f, "rb").read().strip()]
    assert len(blank) == 1 and len(files) - 1 == planted["counts"]["books"]["valid_documents"]
    assert all(os.path.getsize(f) > 50_000 for f in files if f not in blank)
    bad = []
    for path in glob.glob(_abs(sources["books_paragraphs"]["path"])):
        for para in re.split(rb"\n[ \t]*\n", open(path, "rb").read()):
            try:
                para.decode("utf-8")
            except UnicodeDecodeError:
                bad.append(path)
    assert len(bad) == 1 and bad[0].endswith("zz_transcriber_notes_cp1252.txt")


def test_code_parquet(sources, planted):
    rows = _code_rows(sources)
    assert set(rows[0]) == {"path", "content", "language", "license"}
    assert sum(r["content"] is None for r in rows) == 1
    assert sum(r["content"] == "" for r in rows) == 1
    assert len({r["path"] for r in rows}) == len(rows)
    assert {r["language"] for r in rows if r["content"]} == {"python", "c"}
    assert len(rows) - 2 == planted["counts"]["code"]["valid_documents"]


def test_forum_csv(sources, planted):
    rows = [r for rs in _forum_rows(sources).values() for r in rs]
    assert any("\n" in r[2] for r in rows if len(r) == 4)  # quoted multi-line bodies
    short = [r for r in rows if len(r) < 4]
    empty = [r for r in rows if len(r) == 4 and not r[2].strip()]
    latin1 = [r for r in rows if any(_has_surrogate(v) for v in r)]
    assert len(short) == len(empty) == len(latin1) == 1
    assert len(rows) - 3 == planted["counts"]["forum"]["valid_documents"]
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids))


# ---- planted.json refers to real documents, and what it claims holds -------------------------------------------------
def test_planted_references_exist(planted, docs):
    refs = [m for c in planted["exact_duplicates"] for m in c["members"]]
    refs += [p[s] for p in planted["near_duplicates"] for s in ("a", "b")]
    refs += planted["contaminated"] + planted["non_english"]
    refs += [{"source": "web", "id": i} for ids in planted["boilerplate"].values() for i in ids]
    missing = [r for r in refs if key(r) not in docs]
    assert not missing, missing[:5]


def test_planted_exact_duplicates_are_identical(planted, docs):
    assert len(planted["exact_duplicates"]) >= 10
    sources = set()
    for c in planted["exact_duplicates"]:
        texts = {docs[key(m)] for m in c["members"]}
        assert len(texts) == 1, c["cluster"]
        assert len(c["members"]) >= 2
        if len({m["source"] for m in c["members"]}) > 1:
            sources |= {m["source"] for m in c["members"]}
    assert {"web", "reference", "forum", "books_paragraphs"} <= sources


def test_planted_near_duplicates_similarity(planted, docs):
    near = planted["near_duplicates"]
    assert len(near) >= 15
    for p in near:
        j = jaccard(docs[key(p["a"])], docs[key(p["b"])])
        assert abs(j - p["jaccard"]) < 1e-3, p
        if p["variant"] != "chain_ends":
            assert 0.85 <= j <= 0.95, p
        assert docs[key(p["a"])] != docs[key(p["b"])]
    chains = Counter(p["chain"] for p in near if p["chain"])
    assert len(chains) >= 3 and all(n == 3 for n in chains.values())  # A~B, B~C and the ends A~C
    assert any(p["a"]["source"] != p["b"]["source"] for p in near)


def test_benchmark_items_planted(planted, docs):
    items = {b["id"]: b for b in planted["benchmark_items"]}
    assert 2 <= len(items) <= 5
    assert {c["item"] for c in planted["contaminated"]} == set(items)  # every item leaks somewhere
    for b in items.values():
        assert len(b["question"].split()) >= 13 and b["answer"] in b["choices"]
    for c in planted["contaminated"]:
        text, q = docs[key(c)], items[c["item"]]["question"]
        if c["match"] == "verbatim":
            assert q in text
        else:
            norm = lambda s: " ".join(WORD.findall(s.lower()))  # noqa: E731
            assert norm(q) in norm(text) and q not in text


def test_non_english_and_boilerplate(planted, docs):
    langs = Counter(x["lang"] for x in planted["non_english"])
    assert set(langs) == {"de", "fr", "es", "it"} and sum(langs.values()) >= 24
    assert {x["source"] for x in planted["non_english"]} == {"web", "reference"}
    for kind in ["lorem_ipsum", "cookie_only", "javascript_required", "bullet_list"]:
        assert planted["boilerplate"][kind], kind
    assert all("lorem ipsum" in docs[("web", i)].lower() for i in planted["boilerplate"]["lorem_ipsum"])


def test_document_totals(planted):
    total = sum(c["valid_documents"] for c in planted["counts"].values())
    assert total == planted["total_valid_documents"]
    assert 2000 <= total <= 5000
    quarantined = sum(n for reasons in planted["expected_quarantine"].values() for n in reasons.values())
    assert quarantined == sum(1 for m in planted["malformed"] if m["kind"] not in ("missing_id", "blank_line"))


@pytest.mark.slow
def test_generator_reproduces_committed_files():
    """scripts/build_sample.py (fixed seed) regenerates exactly the committed data/sample/ files."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, _abs("scripts/build_sample.py"), "--check"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
