"""udfs.quality vs datatrove's reference filters, one family at a time, one Python process (= one core).

    .venv/bin/python bench/bench_quality.py [--repeat 1]

Corpus: the bundled web sample (data/sample/web/*.jsonl.gz) plus the reference pages (data/sample/reference/*.jsonl).
For each rule family, and for the whole chain (gopher_repetition -> gopher_quality -> c4 -> fineweb, stopping at the
first rejection, C4's cleaned text passed on), both implementations run document by document on the same texts in
the same run. BASELINE: datatrove (its English word tokenizer is spaCy's). Reported: seconds, MB/s, speed-up of
udfs.quality over the baseline, and keep/reject agreement.
"""
from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")  # lone surrogates (planted for ingest) crash spaCy, so datatrove cannot take them
        return True
    except UnicodeEncodeError:
        return False


def _texts(lines) -> list[str]:
    out = []
    for line in lines:
        try:
            text = json.loads(line).get("text")
        except (ValueError, AttributeError):  # the sample plants broken records for ingest's quarantine
            continue
        if isinstance(text, str) and _encodable(text):
            out.append(text)
    return out


def load_texts() -> list[str]:
    texts = []
    for path in sorted(glob.glob(os.path.join(REPO, "data/sample/web/*.jsonl.gz"))):
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
            texts += _texts(f)
    for path in sorted(glob.glob(os.path.join(REPO, "data/sample/reference/*.jsonl"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            texts += _texts(f)
    return texts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=1, help="passes over the corpus per measurement (default 1)")
    args = ap.parse_args()

    from datatrove.data import Document
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter)
    from importlib.metadata import version

    from udfs import quality as Q
    from udfs.text import Doc

    texts = load_texts()
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6 * args.repeat
    print(f"corpus: {len(texts)} docs, {mb / args.repeat:.2f} MB (data/sample/web + data/sample/reference), "
          f"x{args.repeat} passes; datatrove {version('datatrove')}")
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus")

    dt = {"gopher_repetition": GopherRepetitionFilter(), "gopher_quality": GopherQualityFilter(),
          "c4": C4QualityFilter(), "fineweb": FineWebQualityFilter()}
    ours = {name: cls() for name, cls in Q.FAMILIES.items()}

    def dt_one(name, text):
        doc = Document(text=text, id="0")
        res = dt[name].filter(doc)
        return None if res is True else res[1]

    def our_one(name, text):
        if name == "c4":
            return ours[name].clean(text, {})[0]
        return ours[name](Doc(text), {})

    def dt_chain(text):
        doc = Document(text=text, id="0")
        for name, f in dt.items():
            res = f.filter(doc)
            if res is not True:
                return f"{name}:{res[1]}"
        return None

    def our_chain(text):
        return Q.check_quality(text).reason

    for t in texts[:20]:  # warm-up: spaCy model, regex compilation
        dt_chain(t), our_chain(t)

    rows = []
    for name in [*dt, "chain"]:
        timings, decisions = {}, {}
        for impl, fn in (("datatrove", dt_one), ("udfs.quality", our_one)):
            if name == "chain":
                fn = dt_chain if impl == "datatrove" else our_chain
                call = fn
            else:
                call = (lambda t, fn=fn: fn(name, t))
            t0 = time.perf_counter()
            for _ in range(args.repeat):
                out = [call(t) for t in texts]
            timings[impl] = time.perf_counter() - t0
            decisions[impl] = [r is None for r in out]
        agree = sum(a == b for a, b in zip(decisions["datatrove"], decisions["udfs.quality"])) / len(texts)
        kept = (sum(decisions["datatrove"]), sum(decisions["udfs.quality"]))
        rows.append((name, timings["datatrove"], timings["udfs.quality"], agree, kept))

    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print()
    print(f"{'family':18s} {'datatrove s':>11s} {'MB/s':>6s} {'ours s':>7s} {'MB/s':>6s} {'speed-up':>9s} "
          f"{'agree':>7s} {'kept dt/ours':>13s}")
    for name, t_dt, t_us, agree, kept in rows:
        print(f"{name:18s} {t_dt:11.2f} {mb / t_dt:6.2f} {t_us:7.2f} {mb / t_us:6.2f} {t_dt / t_us:8.1f}x "
              f"{100 * agree:6.1f}% {kept[0]:6d}/{kept[1]:<6d}")
    print("baseline: datatrove (1 process); speed-up = datatrove seconds / udfs.quality seconds, same docs, same run")


if __name__ == "__main__":
    main()
