"""Benchmark of jobs/dedup.py against datasketch, on real English text with planted near duplicates of exact Jaccard.

    .venv/bin/python bench/bench_dedup.py [--eval-docs 20000] [--sizes 100000,1000000] [--out bench/out/dedup]
                                          [--threshold 0.8] [--job-verify exact] [--old-defaults]

1. Text: paragraphs of real English prose on this machine: /usr/share/common-licenses, the GNU info manuals in
   /usr/share/info, README / *.txt / *.md / copyright files under /usr/share/doc, the Python reference manual
   (pydoc_data.topics) and the docstrings of the standard library and of some installed packages (pandas,
   networkx, sympy, pyspark, numpy). A paragraph is kept if >= 85% of its tokens are plain words; shorter ones are
   joined to the next one of the same file until >= 40 words, longer ones are cut at sentence ends (<= 250
   words). The pool is de-duplicated, exactly (normalised text) and near: a document with 5-gram Jaccard >= 0.4
   to an earlier kept one (42 x 3 LSH, exact check) is dropped, so two bases are never near duplicates.
2. Planted pairs: half of the bases (seeded) get one variant, of one edit kind:
   substitute / insert / delete -- random words, one at a time, until the exact Jaccard falls to a target drawn
   uniformly from [0.5, 1); sentence_move -- the first or last 1-2 sentences moved to the other end; case,
   whitespace, punctuation -- surface changes only; mixed -- word edits to a target plus case, whitespace and
   punctuation changes. Ground truth: a pair is a true duplicate iff the exact Jaccard of its word 5-gram shingle
   sets, on the job's default normalisation (NFKC, case fold, punctuation removed, whitespace collapsed), is >=
   the threshold. It is computed for every planted pair and for every other pair that any method puts in one
   cluster; all other pairs (different bases, near-deduplicated at 0.4) count as non-duplicates.
3. Methods, same run, same documents: jobs/dedup.py (subprocess, local[2], defaults, once per --job-verify mode;
   --old-defaults adds a run with the previous defaults: punctuation kept, datasketch's balanced bands x rows) and
   datasketch.MinHashLSH with the job's num_perm, seed and bands x rows on the same shingles: candidates as they
   are, verified by estimated Jaccard (MinHash.jaccard >= threshold) and verified by exact Jaccard; clusters are
   connected components. Pair-level scores: a pair is predicted iff both documents end in one cluster; precision /
   recall / F1 overall, outside the ambiguous band (J < 0.75 or J >= 0.85), per edit kind and per Jaccard bin.
4. Signature speed on one core: udfs.minhash.signatures (numba kernel, and the numpy/hashlib fallback) vs the
   per-document datasketch loop `m = MinHash(num_perm, seed); m.update_batch(shingles)`, same texts, same output.
5. Job wall time at each of --sizes documents, on the corpus generator of earlier versions of this bench (bags of
   2-4 random real sentences, a quarter with 1-3 variants), unchanged so that wall times compare across versions.
"""
from __future__ import annotations

import argparse
import ast
import glob
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
from collections import Counter, defaultdict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from udfs.normalise import jaccard, shingles  # noqa: E402

LEVELS_NEG = (0.5, 0.65, 0.7)
LEVELS_POS = (0.9, 0.95, 1.0)
KINDS = ("substitute", "insert", "delete", "sentence_move", "case", "whitespace", "punctuation", "mixed")
KIND_WEIGHTS = (0.18, 0.18, 0.18, 0.10, 0.07, 0.07, 0.10, 0.12)
BIN_EDGES = (0.0, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)
DOCSTRING_PACKAGES = ("pandas", "networkx", "sympy", "pyspark", "numpy")   # installed ones add docstring prose
BAND = (0.75, 0.85)     # ambiguous band around the threshold: excluded from the "outside band" scores


# ---- timing corpus (the generator of earlier versions, unchanged: wall times compare across versions) ---------
def _read(path: str, limit: int = 200_000) -> str:
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8", errors="ignore") as f:
                return f.read(limit)
        with open(path, encoding="utf-8", errors="ignore") as f:
            return f.read(limit)
    except OSError:
        return ""


def _docstrings(limit_files: int, root: str | None = None) -> list[str]:
    out = []
    stdlib = root or sysconfig.get_paths()["stdlib"]
    for path in sorted(glob.glob(os.path.join(stdlib, "*.py")) + glob.glob(os.path.join(stdlib, "*", "*.py")))[:limit_files]:
        try:
            tree = ast.parse(_read(path))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                d = ast.get_docstring(node)
                if d:
                    out.append(d)
    return out


def sentence_pool(limit_files: int = 400, cache: str | None = None) -> list[str]:
    if cache and os.path.exists(cache):
        with open(cache) as f:
            return json.load(f)
    texts = [_read(p) for p in sorted(glob.glob("/usr/share/common-licenses/*"))]
    texts += [_read(p) for p in sorted(glob.glob("/usr/share/doc/*/copyright"))[:limit_files]]
    texts += [_read(p) for p in sorted(glob.glob("/usr/share/doc/*/changelog*.gz"))[:limit_files]]
    texts += _docstrings(limit_files)
    seen, pool = set(), []
    for t in texts:
        for s in re.split(r"(?<=[.!?])\s+", t):
            s = " ".join(s.split())
            n = len(s.split())
            if 6 <= n <= 40 and re.search(r"[A-Za-z]{3}", s):
                k = s.lower()
                if k not in seen:
                    seen.add(k)
                    pool.append(s)
    if cache:
        with open(cache, "w") as f:
            json.dump(pool, f)
    return pool


# ---- planted corpus --------------------------------------------------------------------------------------------
def _vary(rng, words: list[str], target: float, ngram: int, pool_words: list[str]) -> list[str]:
    """A variant of `words` with shingle Jaccard close to `target` (the exact value is measured afterwards).

    truncate k words: J = (S - k) / S; extend by k words: J = S / (S + k); substitute m words >= ngram apart
    (each kills ngram shingles): J = (S - n*m) / (S + n*m). 1.0: only case / no-break-space changes."""
    if target >= 1.0:
        w = [x.upper() if rng.random() < 0.3 else x for x in words]
        return [x + ("\u00a0" if rng.random() < 0.1 else "") for x in w]
    s = max(len(words) - ngram + 1, 1)
    m = round(s * (1 - target) / (ngram * (1 + target)))
    op = rng.choice(["truncate", "extend"] + (["substitute"] if m >= 1 else []))
    if op == "truncate":
        k = min(max(1, round(s * (1 - target))), len(words) - ngram)
        return words[:len(words) - k]
    if op == "extend":
        return words + [rng.choice(pool_words) for _ in range(max(1, round(s * (1 / target - 1))))]
    w = list(words)
    grid = range(ngram - 1, len(words) - ngram + 1, ngram)
    for i in rng.sample(grid, min(m, len(grid))):
        w[i] = rng.choice(pool_words) + "x"
    return w


def make_corpus(n_docs: int, pool: list[str], seed: int, ngram: int = 5, sentences=(3, 6), dup_fraction=0.25):
    """Return (docs: list of (id, text), families: list of id lists, target: {id: level})."""
    rng = random.Random(seed)
    pool_words = sorted({w for s in pool[:5000] for w in s.split()})
    docs, families, target = [], [], {}
    i = 0
    while len(docs) < n_docs:
        base = " ".join(rng.sample(pool, rng.randint(*sentences))).split()
        bid = f"d{i:09d}"
        i += 1
        docs.append((bid, " ".join(base)))
        if rng.random() < dup_fraction:
            fam = [bid]
            for _ in range(rng.randint(1, 3)):
                level = rng.choice(LEVELS_NEG + LEVELS_POS)
                vid = f"d{i:09d}"
                i += 1
                docs.append((vid, " ".join(_vary(rng, base, level, ngram, pool_words))))
                target[vid] = level
                fam.append(vid)
            families.append(fam)
    # ids are shuffled against document order so that "smallest id survives" is not "the base survives"
    perm = list(range(len(docs)))
    rng.shuffle(perm)
    rename = {d[0]: f"doc{perm[k]:09d}" for k, d in enumerate(docs)}
    docs = [(rename[a], t) for a, t in docs[:n_docs]]
    keep = {a for a, _ in docs}
    families = [[rename[x] for x in f if rename[x] in keep] for f in families]
    target = {rename[k]: v for k, v in target.items() if rename[k] in keep}
    return docs, [f for f in families if len(f) > 1], target


# ---- evaluation corpus: real paragraphs ------------------------------------------------------------------------
_WORD = re.compile(r"^[\"'“‘(\[]*[A-Za-z][A-Za-z'’-]*[.,;:!?\"'”’)\]]*$")
_SENT_END = re.compile(r"(?<=[.!?])\s+(?=[\"'“(\[]?[A-Z])")


def _is_prose(par: str) -> bool:
    toks = par.split()
    if len(toks) < 8:
        return False
    return sum(1 for t in toks if _WORD.match(t)) >= 0.85 * len(toks) and re.search(r"[a-z][.!?]", par) is not None


def _prose_sources(limit_files: int) -> list[tuple[str, str]]:
    paths = sorted(glob.glob("/usr/share/common-licenses/*")) + sorted(glob.glob("/usr/share/info/*.info*"))
    for pattern in ("README*", "*.txt*", "*.md*", "copyright"):
        paths += sorted(glob.glob(f"/usr/share/doc/*/{pattern}"))[:limit_files]
    out = [(p, _read(p, 4_000_000)) for p in paths]
    try:
        from pydoc_data.topics import topics
        out += [(f"pydoc_data.topics:{k}", v) for k, v in sorted(topics.items())]
    except ImportError:
        pass
    out += [(f"stdlib docstring {i}", d) for i, d in enumerate(_docstrings(limit_files))]
    site = sysconfig.get_paths()["purelib"]
    for pkg in DOCSTRING_PACKAGES:
        if os.path.isdir(os.path.join(site, pkg)):
            found = _docstrings(limit_files, os.path.join(site, pkg))
            out += [(f"{pkg} docstring {i}", d) for i, d in enumerate(found)]
    return out


def _split_long(par: str, max_words: int) -> list[str]:
    out, cur = [], []
    for s in _SENT_END.split(par):
        if cur and len(" ".join(cur + [s]).split()) > max_words:
            out.append(" ".join(cur))
            cur = []
        cur.append(s)
    if cur:
        out.append(" ".join(cur))
    return out


def eval_pool(cache: str | None = None, limit_files: int = 2000, min_words: int = 40, max_words: int = 250,
              near_j: float = 0.4) -> list[str]:
    """Documents of real English prose (paragraphs; see the module docstring), none a near duplicate of another."""
    if cache and os.path.exists(cache):
        with open(cache) as f:
            return json.load(f)
    from udfs.minhash import band_keys, signatures
    from udfs.normalise import normalise

    docs = []
    for _, text in _prose_sources(limit_files):
        cur: list[str] = []
        for par in re.split(r"\n\s*\n", text):
            par = " ".join(par.split())
            if not _is_prose(par):
                if cur and len(" ".join(cur).split()) >= min_words:
                    docs.append("\n\n".join(cur))
                cur = []
                continue
            for piece in _split_long(par, max_words) if len(par.split()) > max_words else [par]:
                cur.append(piece)
                if len(" ".join(cur).split()) >= min_words:
                    docs.append("\n\n".join(cur))
                    cur = []
        if cur and len(" ".join(cur).split()) >= min_words:
            docs.append("\n\n".join(cur))
    seen, uniq = set(), []
    for d in docs:
        k = normalise(d)
        if len(d.split()) <= 2 * max_words and k not in seen:
            seen.add(k)
            uniq.append(d)
    # near de-duplication: 42 bands x 3 rows (P(candidate) 0.94 at J 0.4, 0.996 at 0.5), candidates checked exactly
    sig = signatures(uniq, 5, 126, seed=7)
    keys = band_keys(sig, 42, 3)
    owner: dict[int, list[int]] = defaultdict(list)
    kept = []
    for i, d in enumerate(uniq):
        cands = {j for k in keys[i].tolist() for j in owner.get(k, ())}
        if any(jaccard(d, uniq[j]) >= near_j for j in sorted(cands)):
            continue
        kept.append(d)
        for k in keys[i].tolist():
            owner[k].append(i)
    if cache:
        with open(cache, "w") as f:
            json.dump(kept, f)
    return kept


# ---- planted variants ----------------------------------------------------------------------------------------------
def _tokens(text: str) -> list[str]:
    """Words and the whitespace between them, alternating, so that edits keep the original layout."""
    return re.findall(r"\S+|\s+", text)


def _word_positions(tok: list[str]) -> list[int]:
    return [i for i, t in enumerate(tok) if not t.isspace()]


def _word_edit(rng, tok: list[str], op: str, vocab: list[str]) -> None:
    pos = _word_positions(tok)
    if op == "substitute":
        i = rng.choice(pos)
        old = tok[i].lower().strip(".,;:!?\"'()")
        new = rng.choice(vocab)
        while new == old:
            new = rng.choice(vocab)
        tok[i] = new
    elif op == "insert":
        i = rng.choice(pos)
        tok[i:i] = [rng.choice(vocab), " "]
    else:  # delete a word and the whitespace after it (before it, for the last word)
        i = rng.choice(pos)
        if i + 1 < len(tok) and tok[i + 1].isspace():
            del tok[i:i + 2]
        elif i > 0 and tok[i - 1].isspace():
            del tok[i - 1:i + 1]
        else:
            del tok[i]


def _edit_to_target(rng, text: str, target: float, ops: tuple[str, ...], vocab: list[str], ngram: int) -> str:
    """Apply random word edits one at a time until the exact Jaccard to `text` is <= target."""
    base = set(shingles(text, ngram))
    tok = _tokens(text)
    for _ in range(len(_word_positions(tok))):
        if len(_word_positions(tok)) <= ngram + 1:
            break
        _word_edit(rng, tok, rng.choice(ops), vocab)
        cur = set(shingles("".join(tok), ngram))
        if len(base & cur) / len(base | cur) <= target:
            break
    return "".join(tok)


def _case_change(rng, text: str) -> str:
    mode = rng.choice(["upper", "lower", "title", "swap"])
    if mode == "upper":
        return text.upper()
    if mode == "lower":
        return text.lower()
    tok = _tokens(text)
    for i in _word_positions(tok):
        if mode == "title":
            tok[i] = tok[i][:1].upper() + tok[i][1:]
        elif rng.random() < 0.3:
            tok[i] = tok[i].swapcase()
    return "".join(tok)


def _whitespace_change(rng, text: str) -> str:
    seps = ["  ", "\n", "\t", "\u00a0", " \n ", "\u3000", "\r\n", "   "]
    tok = _tokens(text)
    out = [rng.choice(seps) if t.isspace() and rng.random() < 0.3 else t for t in tok]
    return rng.choice(["", " ", "\n", "\t "]) + "".join(out) + rng.choice(["", " ", "\n", "  \n"])


_PUNCT_SWAPS = {".": [";", "!", "..."], ",": [";", " -", ""], ";": [",", "."], ":": [" -", ","], "!": ["."],
                "?": ["?!"], "-": ["\u2013", "\u2014", ""], "'": ["\u2019"], '"': ["\u201c", "\u201d", "'"]}


def _punct_change(rng, text: str) -> str:
    """Add, drop or swap punctuation marks (Unicode P*) next to or inside words; the words stay."""
    tok = _tokens(text)
    pos = _word_positions(tok)
    changed = False
    for i in pos:
        if rng.random() >= 0.1:
            continue
        w = tok[i]
        r = rng.random()
        if r < 0.35 and w[-1] in _PUNCT_SWAPS:
            tok[i] = w[:-1] + rng.choice(_PUNCT_SWAPS[w[-1]])
        elif r < 0.55:
            tok[i] = w + rng.choice([",", ";", ":", "...", "!"])
        elif r < 0.7:
            tok[i] = rng.choice(["(", "\u201c", '"', "'"]) + w + rng.choice([")", "\u201d", '"', "'"])
        else:
            tok[i] = "".join(rng.choice(_PUNCT_SWAPS[c]) if c in _PUNCT_SWAPS and rng.random() < 0.7 else c
                             for c in w)
        changed = changed or tok[i] != w
    if not changed:
        i = rng.choice(pos)
        tok[i] = tok[i] + ","
    return "".join(tok)


def make_variant(rng, text: str, kind: str, vocab: list[str], ngram: int) -> str:
    if kind in ("substitute", "insert", "delete"):
        return _edit_to_target(rng, text, rng.uniform(0.5, 1.0), (kind,), vocab, ngram)
    if kind == "sentence_move":
        sents = _SENT_END.split(text)
        k = rng.randint(1, min(2, len(sents) - 2))
        if rng.random() < 0.5:
            return " ".join(sents[k:] + sents[:k])
        return " ".join(sents[-k:] + sents[:-k])
    if kind == "case":
        return _case_change(rng, text)
    if kind == "whitespace":
        return _whitespace_change(rng, text)
    if kind == "punctuation":
        return _punct_change(rng, text)
    if kind == "mixed":
        v = _edit_to_target(rng, text, rng.uniform(0.5, 1.0), ("substitute", "insert", "delete"), vocab, ngram)
        return _whitespace_change(rng, _punct_change(rng, _case_change(rng, v)))
    raise ValueError(kind)


def make_eval_corpus(n_docs: int, pool: list[str], seed: int, ngram: int = 5, pair_fraction: float = 0.5):
    """Return (docs: [(id, text)], planted: {(id_a, id_b): (kind, exact J, J with punctuation kept)})."""
    rng = random.Random(seed)
    bases = list(pool)
    rng.shuffle(bases)
    vocab = sorted({w.lower().strip(".,;:!?\"'()[]") for d in bases[:3000] for w in d.split()} - {""})
    vocab = [w for w in vocab if w.isalpha()]
    raw, pairs = [], []
    for text in bases:
        if len(raw) >= n_docs:
            break
        raw.append(text)
        if len(raw) < n_docs and rng.random() < pair_fraction:
            kind = rng.choices(KINDS, KIND_WEIGHTS)[0]
            if kind == "sentence_move" and len(_SENT_END.split(text)) < 3:
                kind = rng.choice(("substitute", "insert", "delete"))
            raw.append(make_variant(rng, text, kind, vocab, ngram))
            pairs.append((len(raw) - 2, len(raw) - 1, kind))
    if len(raw) < n_docs:
        print(f"note: the pool of real documents gives {len(raw)} eval documents, fewer than --eval-docs {n_docs}",
              flush=True)
    # ids are shuffled against document order so that "smallest id survives" is not "the base survives"
    perm = list(range(len(raw)))
    rng.shuffle(perm)
    ids = [f"doc{perm[k]:09d}" for k in range(len(raw))]
    docs = list(zip(ids, raw))
    planted = {}
    for a, b, kind in pairs:
        key = tuple(sorted((ids[a], ids[b])))
        planted[key] = (kind, jaccard(raw[a], raw[b], ngram), jaccard(raw[a], raw[b], ngram, strip_punct=False))
    return docs, planted


# ---- scoring ------------------------------------------------------------------------------------------------------
class UnionFind:
    """Clusters of the reference methods (path halving); the label of a cluster is its root."""

    def __init__(self):
        self.parent = {}

    def find(self, x):
        parent = self.parent
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a, b):
        self.parent[self.find(a)] = self.find(b)


def clusters_from_edges(ids, edges) -> dict:
    uf = UnionFind()
    for a, b in edges:
        uf.union(a, b)
    return {d: uf.find(d) for d in ids}


def predicted_pairs(labels: dict) -> set:
    groups = defaultdict(list)
    for d, lab in labels.items():
        groups[lab].append(d)
    out = set()
    for members in groups.values():
        members.sort()
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                out.add((members[i], members[j]))
    return out


def jaccard_bin(j: float) -> str:
    if j >= 1.0:
        return "1.00"
    for lo, hi in zip(BIN_EDGES, BIN_EDGES[1:]):
        if lo <= j < hi:
            return f"[{lo:.2f},{hi:.2f})"
    return "?"


def _prf(tp: int, fp: int, fn: int, tn: int = 0) -> dict:
    p = tp / (tp + fp) if tp + fp else None
    r = tp / (tp + fn) if tp + fn else None
    f1 = 2 * p * r / (p + r) if p is not None and r is not None and p + r else None
    return {"precision": p, "recall": r, "f1": f1, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "n": tp + fp + fn + tn, "linked": tp + fp}


def score(labels: dict, planted: dict, text: dict, threshold: float, jcache: dict, ngram: int) -> dict:
    """Pair-level scores over planted pairs + every pair `labels` puts in one cluster (exact J computed for those)."""
    pred = predicted_pairs(labels)
    groups = defaultdict(lambda: [0, 0, 0, 0])      # tp, fp, fn, tn (tn: planted pairs only)
    for pair in set(planted) | pred:
        if pair in planted:
            kind, j, _ = planted[pair]
        else:
            kind = "unplanted"
            if pair not in jcache:
                jcache[pair] = jaccard(text[pair[0]], text[pair[1]], ngram)
            j = jcache[pair]
        true, p = j >= threshold, pair in pred
        slot = (0 if p else 2) if true else (1 if p else 3)
        outside = j < BAND[0] or j >= BAND[1]
        for g in ("overall", f"kind:{kind}", f"bin:{jaccard_bin(j)}") + (("outside_band",) if outside else ()):
            groups[g][slot] += 1
    out = {g: _prf(*v) for g, v in groups.items()}
    out.setdefault("overall", _prf(0, 0, 0))
    out.setdefault("outside_band", _prf(0, 0, 0))
    out["predicted_pairs"] = len(pred)
    return out


# ---- lake I/O without Spark ----------------------------------------------------------------------------------------
def write_filtered(lake: str, docs, chunk: int = 200_000) -> None:
    import pyarrow as pa
    from deltalake import write_deltalake

    trace_t = pa.struct([("file", pa.string()), ("line", pa.int64()), ("row", pa.int64()), ("byte_offset", pa.int64())])
    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("source", pa.string()), ("domain", pa.string()),
                        ("url", pa.string()), ("meta", pa.string()), ("trace", trace_t), ("n_bytes", pa.int64()),
                        ("n_tokens_est", pa.int64()), ("text_sha256", pa.string()), ("ingest_run", pa.string())])
    path = os.path.join(lake, "filtered")
    for k in range(0, len(docs), chunk):
        part = docs[k:k + chunk]
        b = [t.encode("utf-8") for _, t in part]
        tbl = pa.table({"id": [a for a, _ in part], "text": [t for _, t in part], "source": ["bench"] * len(part),
                        "domain": ["web"] * len(part), "url": pa.nulls(len(part), pa.string()),
                        "meta": ["{}"] * len(part),
                        "trace": pa.array([{"file": None, "line": None, "row": k + j, "byte_offset": None}
                                           for j in range(len(part))], trace_t),
                        "n_bytes": [len(x) for x in b], "n_tokens_est": [(len(x) + 3) // 4 for x in b],
                        "text_sha256": [hashlib.sha256(x).hexdigest() for x in b],
                        "ingest_run": ["bench"] * len(part)}, schema=schema)
        write_deltalake(path, tbl, mode="overwrite" if k == 0 else "append")


def run_job(lake: str, extra_args: list[str], log_path: str) -> dict:
    """Run jobs/dedup.py in a subprocess; wall time, load averages before/after and the job's LSH log line."""
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, LMR_SPARK_LOG_LEVEL="ERROR")
    cmd = [sys.executable, os.path.join(REPO, "jobs", "dedup.py"), "--lake", lake, "--master", "local[2]",
           "--force"] + extra_args
    load0 = os.getloadavg()
    t0 = time.time()
    with open(log_path, "w") as log:
        rc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.time() - t0
    if rc != 0:
        raise SystemExit(f"dedup job failed (rc {rc}); see {log_path}")
    with open(log_path) as f:
        lsh_line = next((ln.strip() for ln in f if "dedup: LSH" in ln), "")
    return {"wall_s": wall, "load_before": load0, "load_after": os.getloadavg(), "lsh_log": lsh_line}


def job_clusters(lake: str, ids) -> tuple[dict, dict]:
    from deltalake import DeltaTable

    dup = DeltaTable(os.path.join(lake, "duplicates")).to_pyarrow_table(columns=["id", "kept_id", "method"]).to_pylist()
    label = {d: d for d in ids}
    for r in dup:
        label[r["id"]] = r["kept_id"]
    metrics = DeltaTable(os.path.join(lake, "metrics")).to_pyarrow_table().to_pylist()
    last = max((m for m in metrics if m["stage"] == "dedup"), key=lambda m: m["started_at"])
    return label, last


# ---- datasketch baseline -------------------------------------------------------------------------------------------
def datasketch_methods(docs, threshold, num_perm, seed, ngram, bands, rows, planted, jcache) -> dict:
    """{name: (labels, wall_s, edges)}: MinHashLSH(num_perm, params=(bands, rows)) over MinHash(num_perm, seed) of
    the job's shingles; every document queried; candidates kept as they are, or if MinHash.jaccard >= threshold,
    or if the exact Jaccard >= threshold."""
    from datasketch import MinHash, MinHashLSH

    text = dict(docs)
    t0 = time.time()
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=(bands, rows))
    sigs = {}
    for d, t in docs:
        sh = shingles(t, ngram)
        if not sh:
            continue
        m = MinHash(num_perm=num_perm, seed=seed)
        m.update_batch(sh)
        sigs[d] = m
        lsh.insert(d, m)
    cand = set()
    for d, m in sigs.items():
        for o in lsh.query(m):
            if o != d:
                cand.add((d, o) if d < o else (o, d))
    t_lsh = time.time() - t0
    ids = [d for d, _ in docs]
    out = {"datasketch (no verification)": (clusters_from_edges(ids, cand), t_lsh, len(cand))}
    t0 = time.time()
    est = [p for p in cand if sigs[p[0]].jaccard(sigs[p[1]]) >= threshold]
    out["datasketch + estimate verify"] = (clusters_from_edges(ids, est), t_lsh + time.time() - t0, len(est))
    t0 = time.time()
    exact = []
    for p in cand:
        if p in planted:
            j = planted[p][1]
        else:
            if p not in jcache:
                jcache[p] = jaccard(text[p[0]], text[p[1]], ngram)
            j = jcache[p]
        if j >= threshold:
            exact.append(p)
    out["datasketch + exact verify"] = (clusters_from_edges(ids, exact), t_lsh + time.time() - t0, len(exact))
    return out


# ---- signature speed -----------------------------------------------------------------------------------------------
def signature_speed(texts, num_perm, seed, ngram):
    import numpy as np
    from datasketch import MinHash

    from udfs import minhash as mh

    mh.signatures(texts[:10], ngram, num_perm, seed)       # JIT / cache load outside the timing
    out = {}
    t0 = time.perf_counter()
    ours = mh.signatures(texts, ngram, num_perm, seed)
    out["udfs.minhash (numba)"] = time.perf_counter() - t0
    os.environ["LMR_MINHASH_BACKEND"] = "numpy"
    try:
        t0 = time.perf_counter()
        ours_np = mh.signatures(texts, ngram, num_perm, seed)
        out["udfs.minhash (numpy+hashlib)"] = time.perf_counter() - t0
    finally:
        os.environ.pop("LMR_MINHASH_BACKEND")
    t0 = time.perf_counter()
    ref = []
    for t in texts:
        m = MinHash(num_perm=num_perm, seed=seed)
        m.update_batch(shingles(t, ngram))
        ref.append(m.hashvalues)
    out["datasketch per-document loop"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    MinHash.bulk([shingles(t, ngram) for t in texts], num_perm=num_perm, seed=seed)
    out["datasketch MinHash.bulk"] = time.perf_counter() - t0
    ref = np.array(ref)
    assert (ours == ref).all() and (ours_np == ref).all(), "signatures differ from datasketch"
    return out


def _fmt(x, width=6) -> str:
    return f"{x:{width}.4f}" if x is not None else f"{'-':>{width}s}"


def print_scores(rows: list, group: str, title: str) -> None:
    print(f"\n{title}")
    print(f"{'method':44s} {'P':>6s} {'R':>6s} {'F1':>6s} {'TP':>6s} {'FP':>6s} {'FN':>6s} {'wall s':>7s}")
    for name, sc, wall in rows:
        s = sc.get(group) or {"precision": None, "recall": None, "f1": None, "tp": 0, "fp": 0, "fn": 0}
        print(f"{name:44s} {_fmt(s['precision'])} {_fmt(s['recall'])} {_fmt(s['f1'])} {s['tp']:6d} {s['fp']:6d} "
              f"{s['fn']:6d} {wall:7.1f}", flush=True)


def print_breakdown(rows: list, prefix: str, keys: list, title: str) -> None:
    """One line per group and method: pairs, true pairs, linked pairs, P / R / F1."""
    print(f"\n{title}")
    print(f"{'group':16s} {'method':44s} {'pairs':>6s} {'true':>6s} {'linked':>6s} {'P':>6s} {'R':>6s} {'F1':>6s}")
    for k in keys:
        for name, sc, _ in rows:
            s = sc.get(f"{prefix}{k}")
            if s is None:
                continue
            print(f"{k:16s} {name:44s} {s['n']:6d} {s['tp'] + s['fn']:6d} {s['linked']:6d} {_fmt(s['precision'])} "
                  f"{_fmt(s['recall'])} {_fmt(s['f1'])}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval-docs", type=int, default=20000, help="documents in the precision/recall corpus")
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated corpus sizes for job wall time")
    ap.add_argument("--speed-docs", type=int, default=3000, help="documents in the single-core signature timing")
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--ngram", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--job-verify", default="exact", help="comma-separated --verify modes of the job to evaluate")
    ap.add_argument("--old-defaults", action="store_true",
                    help="also evaluate the job with the previous defaults (punctuation kept, balanced bands x rows)")
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "out", "dedup"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    from udfs.minhash import optimal_param

    t_all = time.time()
    print(f"# dedup bench: threshold={args.threshold} num_perm={args.num_perm} ngram={args.ngram} seed={args.seed} "
          f"(cpu cores: {os.cpu_count()}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())})", flush=True)
    results: dict = {"params": vars(args)}

    # 1 + 2: evaluation corpus
    if args.eval_docs > 0:
        t0 = time.time()
        pool = eval_pool(cache=os.path.join(args.out, "eval_pool.json"))
        docs, planted = make_eval_corpus(args.eval_docs, pool, seed=args.seed, ngram=args.ngram)
        text = dict(docs)
        n_words = sum(len(t.split()) for _, t in docs)
        print(f"eval corpus: {len(pool)} real documents in the pool; {len(docs)} docs ({n_words} words, "
              f"{n_words / len(docs):.0f} per doc), {len(planted)} planted pairs ({time.time() - t0:.1f}s)", flush=True)
        print(f"{'kind':14s} {'pairs':>6s} {'J>=t':>6s} {'J min':>6s} {'mean':>6s} {'max':>6s}   "
              f"(J on the job's normalisation; with punctuation kept: mean / J>=t)")
        for kind in KINDS:
            js = [(j, jr) for k, j, jr in planted.values() if k == kind]
            if js:
                print(f"{kind:14s} {len(js):6d} {sum(j >= args.threshold for j, _ in js):6d} "
                      f"{min(j for j, _ in js):6.3f} {sum(j for j, _ in js) / len(js):6.3f} "
                      f"{max(j for j, _ in js):6.3f}   {sum(jr for _, jr in js) / len(js):6.3f} / "
                      f"{sum(jr >= args.threshold for _, jr in js)}")
        bins = Counter(jaccard_bin(j) for _, j, _ in planted.values())
        print("planted pairs per Jaccard bin: " + ", ".join(f"{b} {n}" for b, n in sorted(bins.items())), flush=True)
        results["eval_corpus"] = {"pool": len(pool), "docs": len(docs), "words": n_words, "pairs": len(planted),
                                  "bins": dict(bins)}

        lake = os.path.join(args.out, "lake-eval")
        write_filtered(lake, docs)
        ids = [d for d, _ in docs]
        base_args = ["--threshold", str(args.threshold), "--num-perm", str(args.num_perm), "--ngram", str(args.ngram),
                     "--seed", str(args.seed)]
        runs = [(f"jobs/dedup.py verify={m}", base_args + ["--verify", m]) for m in args.job_verify.split(",") if m]
        if args.old_defaults:
            b0, r0 = optimal_param(args.threshold, args.num_perm)
            runs.append((f"jobs/dedup.py old defaults (punct kept, {b0}x{r0})",
                         base_args + ["--verify", "exact", "--bands", str(b0), "--rows", str(r0),
                                      "--set", "dedup.strip_punctuation=false"]))
        rows, jcache, lsh_params = [], {}, None
        for k, (name, jargs) in enumerate(runs):
            info = run_job(lake, jargs, os.path.join(args.out, f"job-eval-{k}.log"))
            label, metrics = job_clusters(lake, ids)
            extra = json.loads(metrics["extra"])
            if lsh_params is None:
                lsh_params = (extra["params"]["bands"], extra["params"]["rows"])
            sc = score(label, planted, text, args.threshold, jcache, args.ngram)
            rows.append((name, sc, info["wall_s"]))
            results.setdefault("methods", {})[name] = {"scores": sc, **info, "lsh": extra.get("lsh"),
                                                        "candidate_pairs": extra.get("candidate_pairs")}
            print(f"{name}: {info['lsh_log'].split('] ', 1)[-1]} -- candidate pairs {extra.get('candidate_pairs')}, "
                  f"verified {extra.get('verified_pairs')}; wall {info['wall_s']:.1f}s", flush=True)
        bands, rows_per_band = lsh_params
        for name, (label, wall, n_edges) in datasketch_methods(docs, args.threshold, args.num_perm, args.seed,
                                                               args.ngram, bands, rows_per_band, planted,
                                                               jcache).items():
            name = f"{name} {bands}x{rows_per_band}"
            sc = score(label, planted, text, args.threshold, jcache, args.ngram)
            rows.append((name, sc, wall))
            results.setdefault("methods", {})[name] = {"scores": sc, "wall_s": wall, "edges": n_edges}
        n_true = sum(j >= args.threshold for _, j, _ in planted.values())
        print(f"\nduplicate detection at threshold {args.threshold}, pair level ({len(docs)} docs, {len(planted)} "
              f"planted pairs of which {n_true} true; job wall time includes JVM start and Delta writes, datasketch "
              f"runs in-process on one core)")
        print_scores(rows, "overall", "overall (planted pairs + every pair a method put in one cluster):")
        print_scores(rows, "outside_band", f"outside the ambiguous band (J < {BAND[0]} or J >= {BAND[1]}):")
        print_breakdown(rows, "kind:", list(KINDS) + ["unplanted"], "per edit kind:")
        bin_keys = [f"[{lo:.2f},{hi:.2f})" for lo, hi in zip(BIN_EDGES, BIN_EDGES[1:])] + ["1.00"]
        print_breakdown(rows, "bin:", bin_keys, f"per Jaccard bin (below {args.threshold}: every linked pair is a "
                        f"false positive; at or above: linked / true is the recall):")
        print(f"EVAL SUMMARY at {args.threshold}: " + "; ".join(
            f"{name}: overall P {_fmt(sc['overall']['precision'], 0)} R {_fmt(sc['overall']['recall'], 0)} "
            f"F1 {_fmt(sc['overall']['f1'], 0)}, outside band P {_fmt(sc['outside_band']['precision'], 0)} "
            f"R {_fmt(sc['outside_band']['recall'], 0)} F1 {_fmt(sc['outside_band']['f1'], 0)}"
            for name, sc, _ in rows), flush=True)

        # 4: signature speed, one core
        speed_texts = [t for _, t in docs[:args.speed_docs]]
        if speed_texts:
            sp = signature_speed(speed_texts, args.num_perm, args.seed, args.ngram)
            n_sh = sum(len(shingles(t, args.ngram)) for t in speed_texts)
            base = sp["datasketch per-document loop"]
            print(f"\nsignature speed, one core, {len(speed_texts)} docs / {n_sh} shingles, num_perm={args.num_perm} "
                  f"(identical outputs checked); baseline = datasketch per-document loop")
            for name, secs in sp.items():
                print(f"  {name:32s} {secs:8.3f}s  {len(speed_texts) / secs:10.0f} docs/s  x{base / secs:6.1f} vs "
                      f"baseline")
            results["signature_speed_s"] = sp
            print(f"SIGNATURE SPEEDUP (numba kernel vs datasketch per-document loop): "
                  f"{base / sp['udfs.minhash (numba)']:.1f}x per core", flush=True)

    # 5: wall time at sizes, on the earlier versions' corpus generator
    results["sizes"] = {}
    sizes = [int(x) for x in args.sizes.split(",") if x]
    if sizes:
        pool = sentence_pool(cache=os.path.join(args.out, "sentences.json"))
    for n in sizes:
        t0 = time.time()
        docs_n, _, _ = make_corpus(n, pool, seed=args.seed + n, ngram=args.ngram, sentences=(2, 4))
        lake_n = os.path.join(args.out, f"lake-{n}")
        write_filtered(lake_n, docs_n)
        words = sum(len(t.split()) for _, t in docs_n)
        del docs_n
        gen = time.time() - t0
        info = run_job(lake_n, ["--threshold", str(args.threshold)], os.path.join(args.out, f"job-{n}.log"))
        _, metrics = job_clusters(lake_n, [])
        extra = json.loads(metrics["extra"])
        results["sizes"][n] = {**info, "words": words, "metrics": {k: metrics[k] for k in
                               ("docs_in", "docs_out", "docs_rejected", "seconds")}, "extra": extra}
        wall = info["wall_s"]
        print(f"\njob wall time at {n} docs ({words} words; corpus generated in {gen:.0f}s): {wall:.1f}s "
              f"({n / wall:.0f} docs/s); load average before {info['load_before'][0]:.2f} after "
              f"{info['load_after'][0]:.2f} (1 min); bands x rows {extra['params']['bands']} x "
              f"{extra['params']['rows']}; candidate pairs {extra.get('candidate_pairs')}, verified "
              f"{extra.get('verified_pairs')}; removed exact={extra['exact']['docs_removed']} "
              f"minhash={extra['minhash']['docs_removed']}; phases {extra['timings_s']}", flush=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2, default=str)
    print(f"\nbench wall {time.time() - t_all:.0f}s; load average at the end "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)


if __name__ == "__main__":
    # end without the native destructors: deltalake + pyarrow in one process sometimes aborted at exit with
    # rc 134 after all the work was done (see udfs.common.exit_process)
    from udfs.common import exit_process  # noqa: E402

    exit_process(main() or 0)
