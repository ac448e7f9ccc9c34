"""Build an outside-data evaluation corpus from the files installed on this Debian machine.

    .venv/bin/python bench/debian_corpus.py --out DIR [--max-per-source 2000] [--max-per-group 100] [--seed 0]
                                            [--verbose]

Why: the filter stage's defaults (langid threshold, Gopher / C4 / FineWeb rules, per-domain overrides in
conf/pipeline.yaml) come from papers about web crawls. To see what they do to real technical text, per domain,
we need text that nobody in this project wrote or picked: documentation, changelogs, man pages, licences,
docstrings, package descriptions and source code shipped by Debian and by the Python standard library.

What it writes into DIR:
  <source>.jsonl   one JSON object per line: {"id", "text", "url"}; url is file:///... of the origin
  sources.yaml     the list of sources (absolute paths) for `jobs/ingest.py --sources DIR/sources.yaml`
                   or `jobs/pipeline.py --sources DIR/sources.yaml`

Sources (name -> domain):
  debian_docs            docs       /usr/share/doc/**: README*, NEWS*, *.txt, *.md, *.rst (plain or .gz), no
                                    changelog*/copyright; strict UTF-8, 200 bytes .. 1 MiB
  debian_changelogs      changelog  /usr/share/doc/*/changelog.Debian.gz, changelog.gz; first 30,000 characters
                                    (cut at a line boundary)
  man_pages              docs       /usr/share/man/man1 + man8 rendered by `man -l` | `col -bx` (80 columns)
  man_pages_translated   docs       /usr/share/man/<lang>/man1 (de, fr, ja, ...; cap 300): non-English text,
                                    to check language identification; the language is in the url
  licences               legal      every file of /usr/share/common-licenses
  copyright_files        legal      /usr/share/doc/*/copyright (cap 500)
  python_docstrings      docs       module / class / function docstrings (>= 200 characters) of the stdlib of
                                    the interpreter running this script
  package_descriptions   reference  Description field of /var/lib/dpkg/status (extended part >= 100 chars)
  python_sources         code       whole stdlib .py files <= 200 KB (cap 500)

Every source is capped at --max-per-source documents (the smaller caps above apply on top). Selection is
deterministic: candidates are sorted, shuffled with a generator seeded by (--seed, source name), and taken in
that order, skipping failures and exact duplicate texts, until the cap is reached. debian_docs and man_pages
also take at most --max-per-group files per package / command family: installed files are very uneven
(google-cloud-sdk alone ships ~93% of man1 as gcloud_* pages), and one generator's template should not stand
for a whole domain; --max-per-group 0 turns this off. Ids are
"<source>:<path>[#part]" and so are stable across runs on the same machine. A source with no document (e.g. no
translated man pages installed) is left out of sources.yaml. One summary line per source goes to stderr:
"source domain docs bytes" (bytes = UTF-8 bytes of the texts).
"""
from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import sysconfig
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

DOC_ROOT = "/usr/share/doc"
MAN_ROOT = "/usr/share/man"
LICENSE_ROOT = "/usr/share/common-licenses"
DPKG_STATUS = "/var/lib/dpkg/status"

MAX_DOC_BYTES = 1024 * 1024     # = ingest.max_doc_bytes: larger documents would only be quarantined as too_large
MIN_DOC_BYTES = 200             # shorter files are mostly stubs ("see /usr/share/doc/foo-common")
CHANGELOG_CHARS = 30_000        # changelogs run to megabytes; the head shows the style, the tail adds only weight
MAN_TIMEOUT_S = 10
CAP_TRANSLATED_MAN = 300
CAP_COPYRIGHT = 500
CAP_PY_SOURCES = 500
MAX_PY_SOURCE_BYTES = 200 * 1000
MIN_DOCSTRING_CHARS = 200
MIN_EXTENDED_DESCRIPTION = 100

# stdlib subfolders that are not the library proper: test suites (huge, synthetic strings), IDLE and lib2to3
# (applications / deprecated), and third-party packages installed next to the stdlib.
PY_EXCLUDED_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "__pycache__"}

DOC_NAME = re.compile(r"^(README.*|NEWS.*|.*\.txt|.*\.md|.*\.rst)$", re.IGNORECASE)
# Terminal formatting is not text: man output should carry none (man-db drops it when stdout is not a tty, and
# col -b removes overstrikes), and a few /usr/share/doc files are pre-rendered roff output (man-db-manual.txt
# holds "x\bx" bold, "_\bx" underline and SGR escapes). Both are cleaned with these, so the corpus holds none.
OVERSTRIKE = re.compile(r".\x08")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass
class Source:
    name: str
    domain: str
    docs: list = field(default_factory=list)   # [(id, text, url)]
    skipped: dict = field(default_factory=dict)  # reason -> count, for --verbose

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


# ---- helpers ---------------------------------------------------------------------------------------------------
def stable_shuffle(items: list, seed: int, source: str) -> list:
    """Sorted, then shuffled by a generator seeded with (seed, source): same input and seed -> same order.

    A str seed goes through SHA-512 in random.Random, so this is independent of PYTHONHASHSEED and of the
    Python version's hash(); each source gets its own order, so caps do not all hit the same packages.
    """
    items = sorted(items)
    random.Random(f"{seed}/{source}").shuffle(items)
    return items


def file_url(path: str, fragment: str | None = None) -> str:
    url = Path(path).as_uri()  # file:///usr/share/... with percent-encoding of odd characters
    return f"{url}#{fragment}" if fragment else url


def read_limited(path: str, limit: int) -> bytes:
    """The first limit+1 bytes of a plain or gzip file (reading one byte more tells "too large" apart)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        return f.read(limit + 1)


def utf8_ok(text: str) -> bool:
    """False for lone surrogates (possible in docstrings via escapes): they cannot be written as UTF-8 JSON."""
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def take(src: Source, candidates, cap: int) -> None:
    """Add documents from `candidates` (an iterable of (id, text, url) or (None, reason)) until `cap`.

    Exact duplicate texts are skipped: symlinked package folders, .so man stubs and multi-arch copies of one
    package would otherwise count several times and weight the per-domain figures.
    """
    if cap < 1:
        return
    seen = set()
    for doc_id, payload, *rest in candidates:
        if doc_id is None:
            src.skip(payload)
            continue
        text, url = payload, rest[0]
        if not text.strip():
            src.skip("empty")
            continue
        if not utf8_ok(text):
            src.skip("not_utf8_encodable")
            continue
        digest = hashlib.sha1(text.encode("utf-8")).digest()
        if digest in seen:
            src.skip("duplicate_text")
            continue
        seen.add(digest)
        src.docs.append((doc_id, text, url))
        # stop right after the cap is reached, before pulling another candidate: candidates are lazy
        # generators, so this is what keeps e.g. man_docs from rendering pages nobody will keep
        if len(src.docs) >= cap:
            break


def strip_terminal_formatting(text: str) -> str:
    if "\x08" in text or "\x1b" in text:
        text = ANSI.sub("", OVERSTRIKE.sub("", text))
    return text


def cap_groups(paths: list[str], group, k: int) -> list[str]:
    """Keep, in the given (shuffled) order, at most k paths per group(path); k = 0 keeps all.

    Installed files are very unevenly spread: on the reference machine google-cloud-sdk ships 16,631 of the
    17,904 pages in man1 (gcloud_*), and git ships 454 of the 1,145 /usr/share/doc files taken (release notes).
    Without this, one generator's template would be most of a domain and the per-domain filter figures would
    describe gcloud, not man pages. Applied before reading/rendering, so a group can end up with fewer than k
    documents when some of its files are skipped.
    """
    if k <= 0:
        return paths
    counts: dict[str, int] = {}
    out = []
    for p in paths:
        g = group(p)
        if counts.get(g, 0) < k:
            counts[g] = counts.get(g, 0) + 1
            out.append(p)
    return out


def doc_package(path: str) -> str:
    """/usr/share/doc/<package>/... -> package."""
    return os.path.relpath(path, DOC_ROOT).split(os.sep, 1)[0]


def man_family(path: str) -> str:
    """Command family of a man page: gcloud_compute_ssh.1.gz -> gcloud, git-commit.1.gz -> git, ls.1.gz -> ls."""
    name = os.path.basename(path)
    name = name[:-3] if name.endswith(".gz") else name
    name = name.rsplit(".", 1)[0] if "." in name else name  # the section suffix (.1, .8, .1ssl)
    return re.split(r"[_-]", name, maxsplit=1)[0] or name


def unique_real(paths: list[str]) -> list[str]:
    """Drop paths whose real file was already listed (symlinks such as GPL -> GPL-3, man page alternatives)."""
    out, seen = [], set()
    for p in sorted(paths):
        real = os.path.realpath(p)
        if real not in seen:
            seen.add(real)
            out.append(p)
    return out


# ---- 1. /usr/share/doc files -------------------------------------------------------------------------------------
def doc_candidates() -> list[str]:
    out = []
    # os.walk does not follow symlinked package folders (libfoo -> libfoo-common), which avoids double listing
    for d, subdirs, files in os.walk(DOC_ROOT):
        subdirs.sort()
        for f in files:
            base = f[:-3] if f.endswith(".gz") else f
            if base.lower().startswith("changelog") or base == "copyright":
                continue
            if DOC_NAME.match(base):
                out.append(os.path.join(d, f))
    return unique_real(out)


def doc_docs(source: str, paths: list[str]):
    # Latin-1 READMEs are skipped as not_utf8: the corpus is about content, not encoding repair
    return whole_file_docs(source, paths, MAX_DOC_BYTES, MIN_DOC_BYTES, transform=strip_terminal_formatting)


# ---- 2. changelogs -------------------------------------------------------------------------------------------
def changelog_candidates() -> list[str]:
    paths = []
    for pkg in os.listdir(DOC_ROOT):
        for name in ("changelog.Debian.gz", "changelog.gz"):
            p = os.path.join(DOC_ROOT, pkg, name)
            if os.path.isfile(p):
                paths.append(p)
    return unique_real(paths)


def changelog_docs(source: str, paths: list[str]):
    for p in paths:
        try:
            # 4 bytes per character at most: this many bytes always hold the first CHANGELOG_CHARS characters
            raw = read_limited(p, 4 * CHANGELOG_CHARS)
        except (OSError, EOFError, gzip.BadGzipFile):
            yield None, "unreadable"
            continue
        if len(raw) > 4 * CHANGELOG_CHARS:
            raw = raw[: raw.rfind(b"\n") + 1]  # whole lines only, so no multi-byte character is cut
        try:
            text = raw.decode("utf-8", errors="strict")
        except UnicodeDecodeError:
            yield None, "not_utf8"  # old entries in Latin-1 occur in some packages
            continue
        if len(text) > CHANGELOG_CHARS:
            head = text[:CHANGELOG_CHARS]
            cut = head.rfind("\n")
            text = head[: cut + 1] if cut > 0 else head
        yield f"{source}:{p}", text, file_url(p)


# ---- 3. man pages --------------------------------------------------------------------------------------------
MAN_ENV = {k: v for k, v in os.environ.items() if k not in ("MANPAGER", "PAGER", "MAN_KEEP_FORMATTING", "LANGUAGE")}
# UTF-8 output whatever the caller's locale (a C/POSIX locale would make groff fall back to ASCII and mangle the
# translated pages); no hyphenation (--nh) and no justification (--nj), so words are not split across lines
# with U+2010 and not padded with double spaces: those are rendering artefacts, not properties of the text.
MAN_ENV.update({"MANWIDTH": "80", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"})


def render_man(path: str) -> str | None:
    try:
        man = subprocess.run(["man", "--nh", "--nj", "-P", "cat", "-l", path], env=MAN_ENV, capture_output=True,
                             timeout=MAN_TIMEOUT_S, check=False)
        if man.returncode != 0 or not man.stdout.strip():
            return None
        col = subprocess.run(["col", "-bx"], input=man.stdout, env=MAN_ENV, capture_output=True,
                             timeout=MAN_TIMEOUT_S, check=False)
        if col.returncode != 0:
            return None
        text = col.stdout.decode("utf-8", errors="strict")
    except (subprocess.TimeoutExpired, OSError, UnicodeDecodeError):
        return None
    text = strip_terminal_formatting(text)
    # drop trailing blanks on lines and the blank padding at both ends of the page
    return "\n".join(line.rstrip() for line in text.splitlines()).strip("\n") + "\n"


def man_candidates(sections: list[str]) -> list[str]:
    paths = []
    for sec in sections:
        if os.path.isdir(sec):
            paths += [os.path.join(sec, f) for f in os.listdir(sec) if not f.startswith(".")]
    return unique_real([p for p in paths if os.path.isfile(p)])


def man_docs(source: str, paths: list[str], workers: int):
    """Render in parallel (man + groff are separate processes), yield in the shuffled order.

    Batches of a few times the worker count keep the pool busy, and since `take` stops pulling once its cap is
    reached, at most one batch more than needed is rendered. Results are consumed in input order, so thread
    timing cannot change the selection.
    """
    batch = max(8, 4 * workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i in range(0, len(paths), batch):
            chunk = paths[i:i + batch]
            for p, text in zip(chunk, pool.map(render_man, chunk)):
                if text is None:
                    yield None, "render_failed"
                else:
                    yield f"{source}:{p}", text, file_url(p)


# ---- 4. licences and copyright files -----------------------------------------------------------------------------
def licence_candidates() -> list[str]:
    paths = [os.path.join(LICENSE_ROOT, f) for f in os.listdir(LICENSE_ROOT)] if os.path.isdir(LICENSE_ROOT) else []
    return unique_real([p for p in paths if os.path.isfile(p)])


def copyright_candidates() -> list[str]:
    paths = [os.path.join(DOC_ROOT, pkg, "copyright") for pkg in os.listdir(DOC_ROOT)]
    return unique_real([p for p in paths if os.path.isfile(p)])


def whole_file_docs(source: str, paths: list[str], max_bytes: int, min_bytes: int = 1, transform=None):
    """One document per file of `min_bytes`..`max_bytes` that decodes as UTF-8 (gzip read through), `transform`
    applied to its text; (None, why) for a file left out."""
    for p in paths:
        try:
            raw = read_limited(p, max_bytes)
        except (OSError, EOFError, gzip.BadGzipFile):
            yield None, "unreadable"
            continue
        if len(raw) > max_bytes:
            yield None, "too_large"
            continue
        if len(raw) < min_bytes:
            yield None, "too_small"
            continue
        try:
            text = raw.decode("utf-8", errors="strict")
        except UnicodeDecodeError:
            yield None, "not_utf8"
            continue
        yield f"{source}:{p}", transform(text) if transform else text, file_url(p)


# ---- 5./7. Python stdlib ---------------------------------------------------------------------------------------
def stdlib_files() -> list[str]:
    root = sysconfig.get_paths()["stdlib"]
    out = []
    for d, subdirs, files in os.walk(root):
        subdirs[:] = sorted(s for s in subdirs if s not in PY_EXCLUDED_DIRS)
        out += [os.path.join(d, f) for f in files if f.endswith(".py")]
    return sorted(out)


def docstrings(path: str):
    """(lineno, qualname, docstring) of the module and of every class / function in it, nested ones included."""
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), filename=path)  # bytes: ast honours the file's coding cookie
    except (SyntaxError, ValueError, OSError):
        return
    doc = ast.get_docstring(tree, clean=True)
    if doc:
        yield 1, "<module>", doc
    yield from _def_docstrings(tree, None)


def _def_docstrings(node, qual):
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            name = child.name if qual is None else f"{qual}.{child.name}"
            doc = ast.get_docstring(child, clean=True)
            if doc:
                yield child.lineno, name, doc
            yield from _def_docstrings(child, name)
        elif not isinstance(child, ast.expr):
            # defs inside if / try / except / with blocks (platform or fallback variants) are real API too;
            # they keep the enclosing qualname. Expressions (lambdas) carry no docstrings.
            yield from _def_docstrings(child, qual)


def docstring_candidates(files: list[str]) -> list[tuple]:
    out = []
    for p in files:
        for lineno, qual, doc in docstrings(p):
            if len(doc) >= MIN_DOCSTRING_CHARS:
                # the line number makes the id unique when a name is defined twice (if/else variants)
                out.append((p, lineno, qual, doc))
    return out


def docstring_docs(source: str, items: list[tuple]):
    for p, lineno, qual, doc in items:
        yield f"{source}:{p}#L{lineno}:{qual}", doc, file_url(p, f"L{lineno}")


# ---- 6. dpkg package descriptions --------------------------------------------------------------------------------
def dpkg_paragraphs(path: str):
    """Field dicts of a deb822 file; a field's continuation lines are kept raw (leading space included)."""
    para, last = {}, None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                if para:
                    yield para
                para, last = {}, None
            elif line[0] in " \t" and last:
                para[last].append(line)
            elif ":" in line:
                key, value = line.split(":", 1)
                last = key.strip()
                para[last] = [value.strip()]
    if para:
        yield para


def description_candidates() -> list[tuple]:
    out = []
    if not os.path.isfile(DPKG_STATUS):
        return out
    for para in dpkg_paragraphs(DPKG_STATUS):
        desc = para.get("Description")
        if not desc or "Package" not in para:
            continue
        synopsis, rest = desc[0], desc[1:]
        # Debian policy 5.6.13: one leading space is syntax; " ." is a blank line; lines with two spaces are
        # preformatted and keep their extra indentation
        lines = ["" if ln.strip() == "." else ln[1:] for ln in rest]
        extended = "\n".join(lines).strip("\n")
        if len(extended) < MIN_EXTENDED_DESCRIPTION:
            continue
        pkg, arch = para["Package"][0], para.get("Architecture", ["all"])[0]
        out.append((f"{pkg}:{arch}", synopsis + "\n\n" + extended + "\n"))
    return out


def description_docs(source: str, items: list[tuple]):
    for key, text in items:
        yield f"{source}:{key}", text, file_url(DPKG_STATUS, key)


# ---- output --------------------------------------------------------------------------------------------------
def write_jsonl(path: str, docs: list) -> int:
    ids = set()
    n_bytes = 0
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for doc_id, text, url in docs:
            assert doc_id not in ids, f"duplicate id {doc_id}"
            ids.add(doc_id)
            n_bytes += len(text.encode("utf-8"))
            f.write(json.dumps({"id": doc_id, "text": text, "url": url}, ensure_ascii=False) + "\n")
    os.replace(tmp, path)  # a half-written file from an interrupted run never looks complete
    return n_bytes


def yaml_scalar(value: str) -> str:
    # plain when obviously safe, else a JSON string (JSON strings are valid YAML double-quoted scalars)
    return value if re.fullmatch(r"[A-Za-z0-9_./+-]+", value) else json.dumps(value)


def write_sources_yaml(path: str, entries: list[tuple[str, str, str]], argv: list[str]) -> None:
    lines = ["# Written by bench/debian_corpus.py (" + " ".join(argv) + "); regenerate rather than edit.",
             "# Real text installed on a Debian machine, for per-domain evaluation of the filter stage.",
             "sources:"]
    for name, domain, jsonl in entries:
        lines += [f"  - name: {name}", f"    domain: {domain}", "    format: jsonl",
                  f"    path: {yaml_scalar(jsonl)}", "    text_field: text", "    id_field: id",
                  "    url_field: url"]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


# ---- main ----------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (created); JSONL files and sources.yaml go here")
    ap.add_argument("--max-per-source", type=int, default=2000, help="most documents per source (default 2000)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the stable shuffle before capping (default 0)")
    ap.add_argument("--max-per-group", type=int, default=100,
                    help="debian_docs: most files per package; man_pages: most pages per command family "
                         "(gcloud_*, git-*); 0 = no limit (default 100)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2,
                    help="parallel man renderings (default: CPU count); does not change the output")
    ap.add_argument("--verbose", action="store_true", help="also print skip reasons per source")
    args = ap.parse_args(argv)
    if args.max_per_source < 1:
        ap.error("--max-per-source must be >= 1")

    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    cap, seed, group_cap = args.max_per_source, args.seed, args.max_per_group
    t0 = time.time()

    py_files = stdlib_files()
    en_man = [os.path.join(MAN_ROOT, s) for s in ("man1", "man8")]
    # every locale folder (de, fr, pt_BR, zh_CN, ...): the manN folders themselves are English
    tr_man = [os.path.join(MAN_ROOT, d, "man1") for d in sorted(os.listdir(MAN_ROOT))
              if not d.startswith("man") and os.path.isdir(os.path.join(MAN_ROOT, d, "man1"))] \
        if os.path.isdir(MAN_ROOT) else []

    # (name, domain, cap, function(name) -> candidate iterator); candidates are listed, sorted and shuffled
    # per source before any expensive work (rendering, reading) so the cap bounds the work too
    plan = [
        ("debian_docs", "docs", cap,
         lambda n: doc_docs(n, cap_groups(stable_shuffle(doc_candidates(), seed, n), doc_package, group_cap))),
        ("debian_changelogs", "changelog", cap,
         lambda n: changelog_docs(n, stable_shuffle(changelog_candidates(), seed, n))),
        ("man_pages", "docs", cap,
         lambda n: man_docs(n, cap_groups(stable_shuffle(man_candidates(en_man), seed, n), man_family, group_cap),
                            args.workers)),
        ("man_pages_translated", "docs", min(cap, CAP_TRANSLATED_MAN),
         lambda n: man_docs(n, stable_shuffle(man_candidates(tr_man), seed, n), args.workers)),
        ("licences", "legal", cap,
         lambda n: whole_file_docs(n, stable_shuffle(licence_candidates(), seed, n), MAX_DOC_BYTES)),
        ("copyright_files", "legal", min(cap, CAP_COPYRIGHT),
         lambda n: whole_file_docs(n, stable_shuffle(copyright_candidates(), seed, n), MAX_DOC_BYTES)),
        ("python_docstrings", "docs", cap,
         lambda n: docstring_docs(n, stable_shuffle(docstring_candidates(py_files), seed, n))),
        ("package_descriptions", "reference", cap,
         lambda n: description_docs(n, stable_shuffle(description_candidates(), seed, n))),
        ("python_sources", "code", min(cap, CAP_PY_SOURCES),
         lambda n: whole_file_docs(n, stable_shuffle(py_files, seed, n), MAX_PY_SOURCE_BYTES)),
    ]

    entries = []
    for name, domain, source_cap, candidates in plan:
        ts = time.time()
        src = Source(name, domain)
        take(src, candidates(name), source_cap)
        jsonl = os.path.join(out, f"{name}.jsonl")
        if src.docs:
            n_bytes = write_jsonl(jsonl, src.docs)
            entries.append((name, domain, jsonl))
        else:
            n_bytes = 0
            if os.path.exists(jsonl):
                os.remove(jsonl)  # a stale file from an earlier run must not look like this run's output
        print(f"{name} {domain} {len(src.docs)} {n_bytes}", file=sys.stderr)
        if args.verbose:
            skipped = ", ".join(f"{k}={v}" for k, v in sorted(src.skipped.items())) or "none"
            print(f"  skipped: {skipped}; {time.time() - ts:.1f} s", file=sys.stderr)

    write_sources_yaml(os.path.join(out, "sources.yaml"), entries, ["bench/debian_corpus.py"] + sys.argv[1:])
    if args.verbose:
        print(f"wrote {os.path.join(out, 'sources.yaml')} in {time.time() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
