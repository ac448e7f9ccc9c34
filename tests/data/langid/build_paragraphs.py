"""Rebuild paragraphs.jsonl from Debian's translated package descriptions (DDTP) on this machine.

    apt-get update -o Acquire::Languages=en,de,fr,es,it,pt,nl,ru,pl,ja
    .venv/bin/python tests/data/langid/build_paragraphs.py

Reads /var/lib/apt/lists/*_i18n_Translation-<lang>.lz4 (via lz4cat), splits each long description into its
paragraphs, keeps prose-like ones (length bounds, few paths/URLs), drops translated paragraphs that are
identical to an English description paragraph (left untranslated), and picks PER_LANG of them per language by
md5 of the text, so the choice is deterministic and does not look at any language-ID model.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import subprocess

LISTS = os.environ.get("DDTP_LISTS", "/var/lib/apt/lists")  # or a copy of the Translation-* files
LANGS = ["en", "de", "fr", "es", "it", "pt", "nl", "ru", "pl", "ja"]
PER_LANG = 60
MIN_CHARS, MAX_CHARS = 160, 700
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "paragraphs.jsonl")


def read_translation(lang: str) -> list[tuple[str, list[str]]]:
    """[(package, [paragraph, ...])] of the long descriptions in Translation-<lang>."""
    files = sorted(glob.glob(os.path.join(LISTS, f"*_debian_dists_bookworm_main_i18n_Translation-{lang}.lz4")))
    if not files:
        raise SystemExit(f"no Translation-{lang} under {LISTS}: run apt-get update with Acquire::Languages")
    raw = subprocess.run(["lz4cat", files[0]], check=True, capture_output=True).stdout.decode("utf-8")
    out = []
    for stanza in raw.split("\n\n"):
        pkg, body, in_desc = None, [], False
        for line in stanza.split("\n"):
            if line.startswith("Package: "):
                pkg = line[len("Package: "):].strip()
            elif line.startswith("Description-"):
                in_desc = True  # the first line is the short synopsis; the long description follows
            elif in_desc and line.startswith(" "):
                body.append(line[1:])
        paras, cur = [], []
        for line in body:
            if line.strip() == ".":
                paras.append(" ".join(cur))
                cur = []
            else:
                cur.append(line.strip())
        paras.append(" ".join(cur))
        out.append((pkg, [re.sub(r"\s+", " ", p).strip() for p in paras if p.strip()]))
    return out


def prose_like(p: str) -> bool:
    if not (MIN_CHARS <= len(p) <= MAX_CHARS):
        return False
    if re.search(r"https?://|www\.|/usr/|/etc/|\.so\b|[{}<>|]", p) or p.lstrip().startswith(("*", "-", "+")):
        return False
    letters = sum(ch.isalpha() for ch in p)
    return letters / len(p) >= 0.7


def main() -> None:
    english = {p for _, paras in read_translation("en") for p in paras}
    rows = []
    for lang in LANGS:
        seen, cands = set(), []
        for pkg, paras in read_translation(lang):
            for p in paras:
                if p in seen or not prose_like(p) or (lang != "en" and p in english):
                    continue
                seen.add(p)
                cands.append((hashlib.md5(p.encode()).hexdigest(), pkg, p))
        cands.sort()
        for _, pkg, p in cands[:PER_LANG]:
            rows.append({"lang": lang, "text": p, "origin": f"debian-ddtp:bookworm/Translation-{lang}:{pkg}"})
        print(lang, len(cands), "candidates ->", min(PER_LANG, len(cands)))
    with open(OUT, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} paragraphs to {OUT}")


if __name__ == "__main__":
    main()
