"""Filter defaults on real technical text: kept share per domain and source, web rules vs domain presets vs datatrove.

    .venv/bin/python bench/bench_filter_domains.py [--corpus DIR] [--max-per-source 2000] [--datatrove-docs 300]

Builds (or reuses) a corpus of text installed on this Debian machine with bench/debian_corpus.py: package docs,
changelogs, man pages (English and translated), licences and copyright files, Python docstrings, package
descriptions and Python sources, each source with its domain (docs, changelog, legal, reference, code). Then, in the
same run and on the same `documents` table:

  * web rules   jobs/filter.py with every domain on the default rules (the papers' thresholds, C4 as FineWeb runs it):
                what a user got before presets
  * presets     jobs/filter.py with the shipped conf (docs, legal, reference, code presets) and the changelog domain
                marked `preset: docs`
  * datatrove   datatrove's GopherRepetition, GopherQuality, C4Quality(filter_no_terminal_punct=False), FineWebQuality
                filters (FineWeb's pipeline settings) on the first --datatrove-docs documents of each source, English
                documents only (its language filter needs a model download), document by document: the peer baseline

For each it prints documents and tokens kept per domain and per source, the share of bytes kept documents keep
after C4 line cleaning, the loud-loss lines, and the top rejection reasons per domain under the presets.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "bench"))


def sh(cmd, **kw):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return r, time.perf_counter() - t0


def load(lake, table):
    import deltalake
    return deltalake.DeltaTable(os.path.join(lake, table)).to_pandas()


def shares(sig, keys):
    import pandas as pd
    g = sig.assign(tok_kept=sig["n_tokens_clean"].where(sig["kept"], 0),
                   raw_kept=sig["n_bytes_raw"].where(sig["kept"], 0),
                   clean_kept=sig["n_bytes_clean"].where(sig["kept"], 0))
    t = g.groupby(keys).agg(docs=("id", "size"), kept=("kept", "sum"), tokens=("n_tokens_raw", "sum"),
                            tokens_kept=("tok_kept", "sum"), raw_kept=("raw_kept", "sum"),
                            clean_kept=("clean_kept", "sum"))
    out = pd.DataFrame({"docs": t["docs"], "kept": t["kept"],
                        "docs kept %": (100 * t["kept"] / t["docs"]).round(1),
                        "tokens kept %": (100 * t["tokens_kept"] / t["tokens"]).round(1),
                        "bytes kept by line cleaning %": (100 * t["clean_kept"] / t["raw_kept"].where(
                            t["raw_kept"] > 0)).round(1)})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=os.path.join(REPO, "bench", "out", "debian_corpus"),
                    help="corpus folder (built with bench/debian_corpus.py when it has no sources.yaml)")
    ap.add_argument("--lake", default=os.path.join(REPO, "bench", "out", "filter_domains_lake"))
    ap.add_argument("--max-per-source", type=int, default=2000)
    ap.add_argument("--datatrove-docs", type=int, default=300, help="documents per source for datatrove (0 = skip)")
    ap.add_argument("--master", default="local[2]")
    args = ap.parse_args()
    py = sys.executable
    print(f"load average at start: {os.getloadavg()}")
    sources = os.path.join(args.corpus, "sources.yaml")
    if not os.path.exists(sources):
        _, t = sh([py, os.path.join(REPO, "bench", "debian_corpus.py"), "--out", args.corpus,
                   "--max-per-source", str(args.max_per_source)])
        print(f"corpus built in {t:.1f} s -> {args.corpus}")
    import shutil
    shutil.rmtree(args.lake, ignore_errors=True)
    _, t = sh([py, os.path.join(REPO, "jobs", "ingest.py"), "--lake", args.lake, "--sources", sources,
               "--master", args.master])
    print(f"ingest: {t:.1f} s")
    filt = [py, os.path.join(REPO, "jobs", "filter.py"), "--lake", args.lake, "--master", args.master]
    r_web, t_web = sh(filt + ["--set", "filter.domains={}", "--output-table", "filtered_web", "--rejected-table",
                              "rejected_web", "--signals-table", "signals_web"])
    r_pre, t_pre = sh(filt + ["--set", "filter.domains.changelog.preset=docs", "--output-table", "filtered_presets",
                              "--rejected-table", "rejected_presets", "--signals-table", "signals_presets"])
    print(f"filter, web rules: {t_web:.1f} s; filter, presets: {t_pre:.1f} s")

    import pandas as pd
    pd.set_option("display.width", 200)
    web, pre = load(args.lake, "signals_web"), load(args.lake, "signals_presets")
    for keys in ("domain", ["domain", "source"]):
        both = pd.concat({"web rules": shares(web, keys), "presets": shares(pre, keys)}, axis=1)
        print(f"\n== kept per {keys if isinstance(keys, str) else ' / '.join(keys)}\n{both.to_string()}")
    for name, r in (("web rules", r_web), ("presets", r_pre)):
        loud = [ln.split("WARNING: ", 1)[1] for ln in r.stderr.splitlines() if "filter: WARNING:" in ln]
        print(f"\n== loud losses, {name} ({len(loud)})\n" + "\n".join(f"  {ln}" for ln in loud))
    top = (pre[~pre["kept"]].groupby(["domain", "reason"]).size().rename("docs").reset_index()
           .sort_values(["domain", "docs"], ascending=[True, False]).groupby("domain").head(4))
    print(f"\n== top rejection reasons per domain, presets\n{top.to_string(index=False)}")

    if args.datatrove_docs > 0:
        docs = load(args.lake, "documents")[["id", "text", "source", "domain"]]
        docs = docs.merge(web[["id", "lang"]], on="id")
        docs = docs[docs["lang"] == "en"].groupby("source").head(args.datatrove_docs)
        t0 = time.perf_counter()
        from bench_filter import run_datatrove

        dt = run_datatrove(docs["text"].tolist(), {"filter_no_terminal_punct": False})
        took = time.perf_counter() - t0
        docs = docs.assign(dt_kept=[x is None for x in dt])
        ours = docs.merge(web[["id", "kept"]].rename(columns={"kept": "web_kept"}), on="id").merge(
            pre[["id", "kept"]].rename(columns={"kept": "preset_kept"}), on="id")
        ours = ours.merge(web[["id", "lang_score"]], on="id")
        # compare on the quality rules alone: our runs also apply the langid threshold, datatrove here does not
        g = ours.groupby("domain").agg(docs=("id", "size"), datatrove=("dt_kept", "mean"), web=("web_kept", "mean"),
                                        presets=("preset_kept", "mean"))
        print(f"\n== English documents (first {args.datatrove_docs} per source), share kept: datatrove "
              f"(FineWeb's filter settings, no language filter) vs ours; datatrove took {took:.1f} s\n"
              f"{(g.assign(**{c: (100 * g[c]).round(1) for c in ('datatrove', 'web', 'presets')})).to_string()}")
    print(f"\nload average at end: {os.getloadavg()}")
    print(json.dumps({"lake": args.lake}))


if __name__ == "__main__":
    # end without the native destructors: deltalake + pyarrow in one process sometimes aborted at exit with
    # rc 134 after all the work was done (see udfs.common.exit_process)
    from udfs.common import exit_process  # noqa: E402

    exit_process(main() or 0)
