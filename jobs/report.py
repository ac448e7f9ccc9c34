"""Report: one static, self-contained HTML page about a lake and its training run.

    python jobs/report.py --lake ./lake [--run-dir ./lake/runs/tiny] [--out ./lake/report.html]

Sections (each says so when its data is missing instead of failing):
  funnel          documents and tokens after every stage (latest `metrics` row per stage)
  rejections      rejection / removal reasons per stage (metrics `reasons`)
  languages       language distribution in and kept by the filter (filter metrics `extra`; else the
                  `filtered` / `rejected` tables' `lang` column, aggregated in Spark)
  duplicates      duplicate cluster sizes (dedup metrics `extra`; else the `duplicates` table, in Spark)
  mixture         domain mixture target vs achieved token share (mix metrics `extra`)
  token lengths   histogram of document lengths in tokens (the packed `.idx` files)
  tokenizers      bytes/token per domain for gpt2, cl100k_base, o200k_base and the packing tokenizer
                  (`<lake>/reports/tokenizers.json` from `jobs/pack.py --compression-report`; else measured here
                  on a sample of the packed source table; else the packed manifest's split totals)
  training        loss curve (`<run-dir>/metrics.jsonl`)
  metrics         every stage's metrics row, and links to the audit JSONL samples and JSON reports.

Plots are PNGs (matplotlib Agg) embedded as base64, so the file can be mailed or attached as is.
Spark is started only when a fallback needs to aggregate a big table; the metrics table is read with delta-rs.
"""
from __future__ import annotations

import base64
import datetime as dt
import glob
import html
import io
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jobs.cli import UserError, run_main  # noqa: E402
from jobs.stage import PIPELINE as STAGE_ORDER  # noqa: E402

# Plot ids in page order; tests and the screenshot check rely on these.
PLOTS = ["funnel_docs", "funnel_tokens", "rejections", "languages", "duplicates", "mixture", "token_lengths",
         "tokenizers", "loss"]


def build_parser():
    import argparse

    p = argparse.ArgumentParser(prog="report", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--lake", default="./lake", help="lake root folder (default ./lake)")
    p.add_argument("--run-dir", default=None, help="training run folder with metrics.jsonl (default <lake>/runs/tiny)")
    p.add_argument("--out", default=None, help="HTML file to write (default <lake>/report.html)")
    p.add_argument("--packed", default=None, help="packed token folder (default <lake>/packed)")
    p.add_argument("--master", default=None, help="Spark master, only used when a table must be aggregated")
    p.add_argument("--compression-docs", type=int, default=500, metavar="N",
                   help="without reports/tokenizers.json: measure tokenizer compression on the first N unique "
                        "documents per domain of the packed source table (default 500; 0: packed manifest only)")
    return p


# ---- data gathering (small results only) --------------------------------------------------------------------
class Sources:
    """Lazy access to the lake: metrics through delta-rs, Spark only on demand."""

    def __init__(self, root: str, master: str | None = None):
        from jobs.tables import Lake

        self.root = os.path.abspath(root)
        self.master = master
        self.lake = Lake(None, self.root, backend="delta-rs")
        self._spark_lake = None

    def exists(self, name: str) -> bool:
        return self.lake.exists(name)

    def metrics_rows(self) -> list[dict]:
        if not self.exists("metrics"):
            return []
        rows = self.lake.read_arrow("metrics").to_pylist()
        for r in rows:
            r["reasons"] = dict(r.get("reasons") or [])
            r["outputs"] = dict(r.get("outputs") or [])
            try:
                r["extra"] = json.loads(r.get("extra") or "{}")
            except ValueError:
                r["extra"] = {}
        return sorted(rows, key=lambda r: r["started_at"])

    def spark_lake(self):
        if self._spark_lake is None:
            from jobs.session import get_spark
            from jobs.tables import Lake

            self._spark_lake = Lake(get_spark("lmrefinery-report", master=self.master), self.root)
        return self._spark_lake


def latest_per_stage(rows: list[dict]) -> dict[str, dict]:
    latest: dict[str, dict] = {}
    for r in rows:  # rows are sorted by started_at
        latest[r["stage"]] = r
    return latest


def stage_sort_key(stage: str):
    return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), stage)


def funnel(latest: dict[str, dict]) -> list[dict]:
    """One row per stage in pipeline order with the counts exactly as in its metrics row."""
    keys = ("docs_in", "docs_out", "docs_rejected", "tokens_in", "tokens_out", "doc_acceptance", "token_acceptance",
            "input_table", "output_table")
    out = []
    for s in sorted(latest, key=stage_sort_key):
        row = {"stage": s, **{k: latest[s].get(k) for k in keys}}
        # mix counts unique documents out; its table holds their epoch copies too (extra.rows_out)
        row["rows_out"] = (latest[s].get("extra") or {}).get("rows_out", row["docs_out"])
        tok = (latest[s].get("extra") or {}).get("tokenizer")
        row["unit"] = f"{tok.get('name') or 'tokenizer'} tokens" if s == "pack" and isinstance(tok, dict) else None
        out.append(row)
    return out


def chain_mismatches(fun: list[dict]) -> list[str]:
    """Where a stage read the table the stage before it wrote, its documents (and estimated tokens) in should be
    that stage's out; list every place where they are not (pack counts real tokenizer tokens: not compared)."""
    out = []
    for prev, cur in zip(fun, fun[1:]):
        if not prev.get("output_table") or prev.get("output_table") != cur.get("input_table"):
            continue
        keys = [("rows", "docs", "documents")] + ([("tokens", "tokens", "tokens")] if cur["stage"] != "pack" else [])
        for out_key, in_key, word in keys:
            a, b = prev.get(f"{out_key}_out"), cur.get(f"{in_key}_in")
            if a is not None and b is not None and a != b:
                out.append(f"{cur['stage']} read {b:,} {word} from {cur['input_table']}, but {prev['stage']} "
                           f"reported writing {a:,} (latest metrics rows; a re-run of one stage only, or "
                           f"inconsistent counting)")
    return out


def language_distribution(src: Sources, latest: dict[str, dict]) -> dict | None:
    """{"in": {lang: docs}, "kept": {lang: docs}, "from": where} or None."""
    extra = (latest.get("filter") or {}).get("extra") or {}
    if isinstance(extra.get("languages_in"), dict):
        return {"in": extra["languages_in"], "kept": extra.get("languages_kept") or {},
                "from": "filter metrics (extra.languages_in / languages_kept)"}
    if not (src.exists("filtered") or src.exists("rejected")):
        return None
    return language_distribution_from_tables(src.spark_lake())


def language_distribution_from_tables(lake) -> dict | None:
    from pyspark.sql import functions as F

    counts = {}
    for name in ("filtered", "rejected"):
        if not lake.exists(name):
            continue
        df = lake.read(name)
        if "lang" not in df.columns:
            continue
        rows = df.groupBy(F.coalesce("lang", F.lit("unknown")).alias("lang")).count().collect()
        counts[name] = {r["lang"]: int(r["count"]) for r in rows}
    if not counts:
        return None
    kept = counts.get("filtered", {})
    total = dict(kept)
    for lang, n in counts.get("rejected", {}).items():
        total[lang] = total.get(lang, 0) + n
    return {"in": dict(sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))),
            "kept": dict(sorted(kept.items(), key=lambda kv: (-kv[1], kv[0]))),
            "from": "lang column of the filtered / rejected tables"}


def duplicate_clusters(src: Sources, latest: dict[str, dict]) -> dict | None:
    """{"hist": {size bucket: clusters}, "methods": {method: docs removed}, "from": where} or None."""
    row = latest.get("dedup")
    if row and isinstance(row["extra"].get("cluster_size_histogram"), dict):
        return {"hist": row["extra"]["cluster_size_histogram"], "methods": dict(row["reasons"]),
                "from": "dedup metrics (extra.cluster_size_histogram)"}
    if not src.exists("duplicates"):
        return None
    return duplicate_clusters_from_table(src.spark_lake())


def size_bucket(size: int) -> str:
    """The dedup job's buckets: 2, 3, 4, 5-8, 9-16, ..."""
    if size <= 4:
        return str(size)
    hi = 1 << (size - 1).bit_length()
    return f"{hi // 2 + 1}-{hi}"


def duplicate_clusters_from_table(lake) -> dict | None:
    from pyspark.sql import functions as F

    df = lake.read("duplicates")
    if "kept_id" not in df.columns:
        return None
    sizes = df.groupBy("kept_id").count().select((F.col("count") + 1).alias("size")).groupBy("size").count()
    hist: dict = {}
    for r in sorted(sizes.collect(), key=lambda r: r["size"]):
        b = size_bucket(int(r["size"]))
        hist[b] = hist.get(b, 0) + int(r["count"])
    methods = {}
    if "method" in df.columns:
        methods = {r["method"]: int(r["count"]) for r in df.groupBy("method").count().collect()}
    return {"hist": hist, "methods": methods, "from": "duplicates table (kept_id)"}


def mixture(latest: dict[str, dict]) -> dict | None:
    row = latest.get("mix")
    if not row or not isinstance(row["extra"].get("domains"), list) or not row["extra"]["domains"]:
        return None
    return {"strategy": row["extra"].get("strategy"), "domains": row["extra"]["domains"],
            "token_budget": row["extra"].get("token_budget"), "warnings": row["extra"].get("warnings") or []}


def load_manifest(packed: str) -> dict | None:
    path = os.path.join(packed, "manifest.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def token_lengths(packed: str, manifest: dict | None) -> dict | None:
    """Document lengths in tokens (EOS not counted) per split, from the .idx end offsets."""
    import numpy as np

    if not manifest:
        return None
    out = {}
    for split, info in (manifest.get("splits") or {}).items():
        parts = []
        for sh in info.get("shards") or []:
            p = os.path.join(packed, sh["idx"])
            if not os.path.exists(p):
                continue
            ends = np.fromfile(p, dtype="<u8").astype(np.int64)
            parts.append(np.diff(ends, prepend=0) - 1)
        if parts:
            out[split] = np.concatenate(parts)
    return out or None


def tokenizer_compression(src: Sources, packed: str, manifest: dict | None, sample_docs: int = 500) -> dict | None:
    """{"tokenizers": [...], "rows": [(domain, {tok: bytes_per_token})], "tokens_per_word": {...}, "from": where}.

    From `<lake>/reports/tokenizers.json` (jobs/pack.py --compression-report, whole table, Spark) when present; else
    measured here on a bounded sample of the packed source table (`sample_docs` unique documents per domain, read
    with delta-rs, encoded with the same function the pack job uses); else the packed manifest (one tokenizer)."""
    path = os.path.join(src.root, "reports", "tokenizers.json")
    if os.path.exists(path):
        with open(path) as f:
            rep = json.load(f)
        return _compression_rows(rep, os.path.relpath(path, src.root) + " (jobs/pack.py --compression-report)")
    if manifest and sample_docs > 0:
        rep = compression_sample(src, packed, manifest, sample_docs)
        if rep:
            return rep
    if not manifest:
        return None
    name = (manifest.get("tokenizer") or {}).get("name") or "packed tokenizer"
    rows = []
    for split, info in sorted((manifest.get("splits") or {}).items()):
        if info.get("tokens") and info.get("text_bytes"):
            # the manifest's token counts include one EOS per document; text bytes do not
            toks = info["tokens"] - info.get("documents", 0)
            rows.append((split, {name: round(info["text_bytes"] / toks, 4) if toks > 0 else None}))
    if not rows:
        return None
    return {"tokenizers": [name], "rows": rows, "tokens_per_word": {},
            "from": "packed manifest (text_bytes / tokens per split, EOS excluded)"}


def _compression_rows(rep: dict, where: str) -> dict:
    toks = list(rep.get("tokenizers") or [])
    rows = [(d, {t: (per.get(t) or {}).get("bytes_per_token") for t in toks})
            for d, per in sorted((rep.get("domains") or {}).items())]
    rows.append(("ALL", {t: (rep.get("all", {}).get(t) or {}).get("bytes_per_token") for t in toks}))
    words = {t: (rep.get("all", {}).get(t) or {}).get("tokens_per_word") for t in toks}
    return {"tokenizers": toks, "rows": rows, "tokens_per_word": words, "from": where}


def _report_tokenizers(packed: str, manifest: dict) -> list[tuple[str, dict]]:
    """(label, resolved spec) for gpt2 / cl100k_base / o200k_base and the packing tokenizer, those present here."""
    from jobs.pack import DEFAULT_REPORT_TOKENIZERS
    from udfs.tokenize import resolve_spec

    tok = manifest.get("tokenizer") or {}
    specs = [(t, t) for t in DEFAULT_REPORT_TOKENIZERS]
    if tok.get("file"):  # a trained BPE shipped inside the packed folder
        specs.append(("packed: " + str(tok.get("spec") or tok["file"]), os.path.join(packed, tok["file"])))
    elif tok.get("name") and tok["name"] not in DEFAULT_REPORT_TOKENIZERS:
        specs.append((tok["name"], tok.get("spec") or tok["name"]))
    out = []
    for label, spec in specs:
        try:
            out.append((label, resolve_spec(spec)))
        except Exception:  # ranks file not installed here: leave that tokenizer out
            continue
    return out


def compression_sample(src: Sources, packed: str, manifest: dict, per_domain: int,
                       scan_bytes: int = 256 << 20) -> dict | None:
    """Bytes/token and tokens/word per domain and tokenizer on the first `per_domain` unique documents of each
    domain in the packed source table (scan stops after `scan_bytes` of Arrow data). Driver only, no Spark."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from jobs.pack import _report_fn

    source = manifest.get("source") or {}
    table, version = source.get("table"), source.get("version")
    if not table or not src.exists(table):
        return None
    try:
        ds = src.lake._dt(table, version).to_pyarrow_dataset()
    except Exception:  # that version was vacuumed: the latest one is close enough for a compression estimate
        ds, version = src.lake._dt(table).to_pyarrow_dataset(), src.lake.version(table)
    names = ds.schema.names
    if "text" not in names or "domain" not in names:
        return None
    cols = ["domain", "text"] + (["epoch_copy"] if "epoch_copy" in names else [])
    taken: dict[str, list[str]] = {}
    scanned = 0
    for b in ds.to_batches(columns=cols, batch_size=2048):
        scanned += b.nbytes
        if "epoch_copy" in cols:
            b = b.filter(pc.equal(b.column("epoch_copy"), 0))
        for d, t in zip(b.column("domain").to_pylist(), b.column("text").to_pylist()):
            if t is None:
                continue
            got = taken.setdefault(d or "unknown", [])
            if len(got) < per_domain:
                got.append(t)
        if scanned >= scan_bytes:
            break
    tokenizers = _report_tokenizers(packed, manifest)
    if not taken or not tokenizers:
        return None
    doms = sorted(taken)
    batch = pa.RecordBatch.from_arrays(
        [pa.array([d for d in doms for _ in taken[d]], pa.string()), pa.array([t for d in doms for t in taken[d]])],
        names=["domain", "text"])
    acc: dict = {}
    for out in _report_fn([(label, r) for label, r in tokenizers])(iter([batch])):
        for r in out.to_pylist():
            a = acc.setdefault((r["domain"], r["tokenizer"]), {"docs": 0, "bytes": 0, "tokens": 0, "words": 0})
            for k in a:
                a[k] += int(r[k])

    def ratios(a):
        return {**a, "bytes_per_token": round(a["bytes"] / a["tokens"], 4) if a["tokens"] else None,
                "tokens_per_word": round(a["tokens"] / a["words"], 4) if a["words"] else None}

    domains: dict = {}
    overall: dict = {}
    for (d, t), a in sorted(acc.items()):
        domains.setdefault(d, {})[t] = ratios(a)
        o = overall.setdefault(t, {k: 0 for k in a})
        for k in a:
            o[k] += a[k]
    rep = {"tokenizers": [label for label, _ in tokenizers], "domains": domains,
           "all": {t: ratios(a) for t, a in overall.items()}}
    n = sum(len(v) for v in taken.values())
    where = (f"a sample of table {table} v{version}: the first {per_domain:,} unique documents per domain "
             f"({n:,} documents), measured by this report; jobs/pack.py --compression-report measures the "
             f"whole table")
    res = _compression_rows(rep, where)
    res["sample_docs"] = {d: len(v) for d, v in taken.items()}
    return res


def load_run(run_dir: str) -> list[dict] | None:
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue  # a line cut off by a killed run
    return rows or None


# ---- plots --------------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fig_to_img(fig, plot_id: str, alt: str) -> str:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    b64 = base64.b64encode(buf.getvalue()).decode("ascii")
    return (f'<img class="plot" id="plot-{plot_id}" data-plot="{plot_id}" alt="{html.escape(alt)}" '
            f'src="data:image/png;base64,{b64}">')


def _int_locator():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _count_formatter():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: _human(v))


def _human(n) -> str:
    if n is None:
        return "n/a"
    n = float(n)
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}" if n == int(n) else f"{n:.3g}"


def plot_funnel(rows: list[dict], key: str, plot_id: str, title: str) -> str | None:
    """Bars: what entered the first stage, then what each stage kept."""
    labels, vals = [], []
    for i, r in enumerate(rows):
        if i == 0 and r.get(f"{key}_in") is not None:
            labels.append(f"{r['stage']} (in)")
            vals.append(r[f"{key}_in"])
        if r.get(f"{key}_out") is not None:
            labels.append(f"{r['stage']} ({r['unit']})" if key == "tokens" and r.get("unit") else r["stage"])
            vals.append(r[f"{key}_out"])
    if not vals:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(vals) + 1.2))
    y = list(range(len(vals)))[::-1]
    bars = ax.barh(y, vals, color="#4c72b0")
    ax.set_yticks(y, labels)
    top = max(vals) or 1
    for b, v in zip(bars, vals):
        ax.text(b.get_width() + top * 0.01, b.get_y() + b.get_height() / 2, f"{v:,} ({100 * v / top:.1f}%)",
                va="center", fontsize=8)
    ax.set_xlim(0, top * 1.3)
    ax.xaxis.set_major_formatter(_count_formatter())
    ax.set_title(title)
    ax.set_xlabel(key)
    return fig_to_img(fig, plot_id, title)


def plot_rejections(latest: dict[str, dict]) -> str | None:
    stages = [s for s in sorted(latest, key=stage_sort_key) if any(latest[s]["reasons"].values())]
    if not stages:
        return None
    plt = _plt()
    n = len(stages)
    heights = [max(1.2, 0.28 * len([v for v in latest[s]["reasons"].values() if v]) + 0.8) for s in stages]
    fig, axes = plt.subplots(n, 1, figsize=(8, sum(heights)), gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, s in zip(axes[:, 0], stages):
        items = sorted(((k, v) for k, v in latest[s]["reasons"].items() if v), key=lambda kv: (kv[1], kv[0]))
        ks, vs = [k for k, _ in items], [v for _, v in items]
        ax.barh(range(len(vs)), vs, color="#c44e52")
        ax.set_yticks(range(len(vs)), ks, fontsize=8)
        for i, v in enumerate(vs):
            ax.text(v, i, f" {v:,}", va="center", fontsize=7)
        ax.set_xlim(0, max(vs) * 1.2)
        ax.xaxis.set_major_locator(_int_locator())
        ax.set_title(f"{s}: {sum(vs):,} document{'s' if sum(vs) != 1 else ''}", fontsize=9, loc="left")
    fig.tight_layout()
    return fig_to_img(fig, "rejections", "rejection reasons per stage")


def plot_languages(lang: dict, top: int = 15) -> str:
    items = sorted(lang["in"].items(), key=lambda kv: (-kv[1], kv[0]))
    head, rest = items[:top], items[top:]
    labels = [k for k, _ in head] + ([f"other ({len(rest)})"] if rest else [])
    vin = [v for _, v in head] + ([sum(v for _, v in rest)] if rest else [])
    kept = lang.get("kept") or {}
    vkept = [kept.get(k, 0) for k, _ in head] + ([sum(kept.get(k, 0) for k, _ in rest)] if rest else [])
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], vin, width=0.4, label="into filter", color="#8172b2")
    ax.bar([i + 0.2 for i in x], vkept, width=0.4, label="kept", color="#55a868")
    ax.set_xticks(list(x), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("documents (log)")
    ax.set_title("language (lid.176 top label)")
    ax.legend(fontsize=8)
    return fig_to_img(fig, "languages", "language distribution")


def plot_duplicates(dup: dict) -> str | None:
    hist = dup["hist"]
    if not hist:
        return None

    def lo(label):
        return int(str(label).split("-")[0])

    items = sorted(hist.items(), key=lambda kv: lo(kv[0]))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 2.8))
    ax.bar(range(len(items)), [v for _, v in items], color="#dd8452")
    ax.set_xticks(range(len(items)), [k for k, _ in items])
    ax.yaxis.set_major_locator(_int_locator())
    ax.set_ylim(0, max(v for _, v in items) * 1.15)
    for i, (_, v) in enumerate(items):
        ax.text(i, v, f"{v:,}", ha="center", va="bottom", fontsize=8)
    ax.set_xlabel("cluster size (documents, survivor included)")
    ax.set_ylabel("clusters")
    ax.set_title("duplicate cluster sizes")
    return fig_to_img(fig, "duplicates", "duplicate cluster sizes")


def plot_mixture(mix: dict) -> str:
    doms = mix["domains"]
    names = [d["domain"] for d in doms]
    target = [float(d.get("target_weight") or 0) for d in doms]
    got = [float(d.get("achieved_share") or 0) for d in doms]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 2.8))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], target, width=0.4, label="target", color="#4c72b0")
    ax.bar([i + 0.2 for i in x], got, width=0.4, label="achieved", color="#55a868")
    ax.set_xticks(list(x), names)
    ax.set_ylabel("token share")
    ax.set_title(f"domain mixture ({mix.get('strategy')})")
    ax.legend(fontsize=8)
    return fig_to_img(fig, "mixture", "domain mixture target vs achieved")


def plot_token_lengths(lengths: dict) -> str:
    import numpy as np

    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 2.8))
    allv = np.maximum(np.concatenate(list(lengths.values())), 1)
    lo, hi = int(allv.min()), max(int(allv.max()), int(allv.min()) + 1)
    bins = np.unique(np.logspace(math.log10(lo), math.log10(hi + 1), 40).astype(np.int64))
    for split, v in sorted(lengths.items(), key=lambda kv: kv[0] != "train"):
        ax.hist(np.maximum(v, 1), bins=bins, alpha=0.6, label=f"{split} ({len(v):,} docs)")
    ax.set_xscale("log")
    ax.set_xlabel("document length (tokens, log)")
    ax.set_ylabel("documents")
    ax.set_title("document token lengths (packed .idx)")
    ax.legend(fontsize=8)
    return fig_to_img(fig, "token_lengths", "token length histogram")


def plot_tokenizers(comp: dict) -> str | None:
    toks, rows = comp["tokenizers"], [(d, v) for d, v in comp["rows"] if any(x for x in v.values())]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 2.8))
    w = 0.8 / max(len(toks), 1)
    for j, t in enumerate(toks):
        ax.bar([i + (j - (len(toks) - 1) / 2) * w for i in range(len(rows))],
               [v.get(t) or 0 for _, v in rows], width=w, label=t)
    ax.set_xticks(range(len(rows)), [d for d, _ in rows])
    top = max((x or 0) for _, v in rows for x in v.values())
    ax.set_ylim(0, top * 1.3)
    ax.set_ylabel("bytes per token")
    ax.set_title("tokenizer compression (bytes per token; higher = fewer tokens)")
    ax.legend(fontsize=8, ncol=len(toks), loc="upper left")
    return fig_to_img(fig, "tokenizers", "tokenizer compression")


def plot_loss(run: list[dict], vocab_size: int | None = None) -> str | None:
    tr = [(r["step"], r["train_loss"]) for r in run if r.get("train_loss") is not None and "step" in r]
    va = [(r["step"], r["val_loss"]) for r in run if r.get("val_loss") is not None and "step" in r]
    if not tr and not va:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3))
    if tr:
        ax.plot(*zip(*tr), label="train", color="#4c72b0")
    if va:
        ax.plot(*zip(*va), "o-", label="val", color="#c44e52")
    if vocab_size:  # the loss of a uniform guess: a run that learns falls well below it
        ax.axhline(math.log(vocab_size), color="#999", ls="--", lw=1, label=f"ln(vocab {vocab_size:,})")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("training loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig_to_img(fig, "loss", "training loss curve")


# ---- HTML ---------------------------------------------------------------------------------------------------
CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;color:#222;
     padding:0 16px;background:#fff}
h1{margin-bottom:4px} h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:32px}
.sub{color:#666;margin-top:0} .src{color:#777;font-size:12px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right;vertical-align:top}
th{background:#f4f4f4} td.l,th.l{text-align:left}
.missing{background:#fff6e5;border-left:4px solid #f0a020;padding:6px 10px;color:#7a5200}
.warn{color:#a33} img.plot{max-width:100%;display:block;margin:6px 0}
.toc a{margin-right:12px} details{margin:8px 0} code{background:#f4f4f4;padding:0 3px}
.wide{overflow-x:auto} #metrics td{white-space:nowrap}
#metrics td.reasons{white-space:normal;min-width:520px;font-size:11px}
.pair{display:flex;flex-wrap:wrap;gap:16px} .pair>div{flex:1 1 520px;min-width:0}
"""


def esc(x) -> str:
    return html.escape("" if x is None else str(x))


def fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dt.datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    return str(v)


def pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def missing(msg: str) -> str:
    return f'<p class="missing">{esc(msg)}</p>'


def table(headers, rows, table_id=None, left=1) -> str:
    tid = f' id="{table_id}"' if table_id else ""
    head = "".join(f'<th class="l">{esc(h)}</th>' if i < left else f"<th>{esc(h)}</th>"
                   for i, h in enumerate(headers))
    body = []
    for r in rows:
        cells = []
        for i, c in enumerate(r):
            raw, attr = (c if isinstance(c, tuple) else (c, ""))
            cls = ' class="l"' if i < left else ""
            cells.append(f"<td{cls}{attr}>{raw}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="wide"><table{tid}><tr>{head}</tr>{"".join(body)}</table></div>'


def num_cell(v, key):
    """A cell showing a formatted number and carrying the exact value for machines (data-key / data-value)."""
    val = "" if v is None else (repr(v) if isinstance(v, float) else str(v))
    return (esc(fmt(v)), f' data-key="{key}" data-value="{esc(val)}"')


def section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{esc(title)}</h2>{body}</section>'


def render(ctx: dict) -> str:
    parts = []
    latest, rows = ctx["latest"], ctx["metrics"]

    # funnel
    fun = ctx["funnel"]
    if fun:
        keys = ("docs_in", "docs_out", "docs_rejected", "tokens_in", "tokens_out")
        trs = [[(esc(r["stage"]), f' data-stage="{esc(r["stage"])}"')] + [num_cell(r[k], k) for k in keys]
               + [esc(pct(r["doc_acceptance"])), esc(pct(r["token_acceptance"]))] for r in fun]
        body = table(["stage", *keys, "doc acceptance", "token acceptance"], trs, table_id="funnel")
        body += ('<p class="src">Latest metrics row per stage. Tokens are the <code>n_tokens_est</code> estimate '
                 'up to mix and real tokenizer tokens (EOS included) in pack. docs_rejected counts quarantined, '
                 'rejected, removed or not-sampled documents.</p>')
        body += "".join(f'<p class="warn">{esc(w)}</p>' for w in chain_mismatches(fun))
        imgs = []
        for pid, key, title in (("funnel_docs", "docs", "documents after each stage"),
                                ("funnel_tokens", "tokens", "tokens after each stage")):
            img = plot_funnel(fun, key, pid, title)
            imgs.append(img or missing(f"No {key} counts in the metrics rows."))
        body += '<div class="pair">' + "".join(f"<div>{x}</div>" for x in imgs) + "</div>"
    else:
        body = missing("No metrics table in this lake (run the pipeline stages first): no funnel.")
    parts.append(section("funnel", "Stage funnel", body))

    # rejections
    img = plot_rejections(latest) if latest else None
    if img:
        trs = []
        for s in sorted(latest, key=stage_sort_key):
            for k, v in sorted(latest[s]["reasons"].items(), key=lambda kv: (-kv[1], kv[0])):
                if v:
                    trs.append([esc(s), esc(k), num_cell(v, "docs")])
        body = img + "<details><summary>reasons as a table</summary>" + table(
            ["stage", "reason", "documents"], trs, table_id="reasons", left=2) + "</details>"
    else:
        body = missing("No rejection reasons recorded in the metrics table.")
    parts.append(section("rejections", "Rejection reasons per stage", body))

    # languages
    lang = ctx["languages"]
    if lang and lang["in"]:
        total = sum(lang["in"].values())
        kept = lang.get("kept") or {}
        trs = [[esc(k), num_cell(v, "in"), esc(f"{100 * v / total:.2f}%"), num_cell(kept.get(k, 0), "kept")]
               for k, v in sorted(lang["in"].items(), key=lambda kv: (-kv[1], kv[0]))[:20]]
        body = (plot_languages(lang) + f'<p class="src">from {esc(lang["from"])}; {len(lang["in"])} labels</p>'
                + table(["lang", "documents in", "share", "kept"], trs, table_id="languages"))
    else:
        body = missing("No language data: the filter stage has not run (no filter metrics, no filtered/rejected "
                       "tables).")
    parts.append(section("languages", "Language distribution", body))

    # duplicates
    dup = ctx["duplicates"]
    img = plot_duplicates(dup) if dup else None
    if img:
        body = img + (f'<p class="src">from {esc(dup["from"])}; {sum(dup["hist"].values()):,} clusters; '
                      f'removed by method: {esc(", ".join(f"{k}={v:,}" for k, v in dup["methods"].items()))}</p>')
    elif dup:
        body = missing("Dedup found no duplicate clusters.")
    else:
        body = missing("No dedup data: the dedup stage has not run.")
    parts.append(section("duplicates", "Duplicate clusters", body))

    # mixture
    mix = ctx["mixture"]
    if mix:
        trs = [[esc(d["domain"]), num_cell(d.get("target_weight"), "target"),
                num_cell(d.get("achieved_share"), "achieved"), num_cell(d.get("tokens"), "tokens"),
                num_cell(d.get("tokens_available"), "tokens_available"), num_cell(d.get("docs"), "docs"),
                esc(fmt(d.get("epochs")))] for d in mix["domains"]]
        body = plot_mixture(mix) + table(["domain", "target weight", "achieved share", "tokens", "available",
                                          "rows", "epochs"], trs, table_id="mixture")
        body += "".join(f'<p class="warn">{esc(w)}</p>' for w in mix["warnings"])
    else:
        body = missing("No mixture data: the mix stage has not run.")
    parts.append(section("mixture", "Domain mixture: target vs achieved", body))

    # token lengths
    lengths = ctx["token_lengths"]
    if lengths:
        import numpy as np

        trs = []
        for split, v in sorted(lengths.items(), key=lambda kv: kv[0] != "train"):
            trs.append([esc(split), num_cell(int(len(v)), "documents"), num_cell(int(v.sum()), "tokens"),
                        esc(f"{v.mean():.1f}"), esc(fmt(int(np.median(v)))),
                        esc(fmt(int(np.percentile(v, 95)))), esc(fmt(int(v.max())))])
        body = plot_token_lengths(lengths) + table(["split", "documents", "tokens (no EOS)", "mean", "median",
                                                    "p95", "max"], trs, table_id="token_lengths")
    else:
        body = missing(f"No packed shards under {ctx['packed']} (run jobs/pack.py): no token lengths.")
    parts.append(section("token_lengths", "Document token lengths", body))

    # tokenizers
    comp = ctx["tokenizers"]
    img = plot_tokenizers(comp) if comp else None
    if img:
        trs = [[esc(d)] + [esc(fmt(v.get(t))) for t in comp["tokenizers"]] for d, v in comp["rows"]]
        if comp["tokens_per_word"]:
            trs.append(["tokens/word (ALL)"] + [esc(fmt(comp["tokens_per_word"].get(t))) for t in comp["tokenizers"]])
        body = img + f'<p class="src">bytes per token, from {esc(comp["from"])}</p>' + table(
            ["domain", *comp["tokenizers"]], trs, table_id="tokenizers")
    else:
        body = missing("No tokenizer compression data (no reports/tokenizers.json, no packed manifest).")
    parts.append(section("tokenizers", "Tokenizer compression", body))

    # training
    run = ctx["run"]
    vocab = ((ctx.get("manifest") or {}).get("tokenizer") or {}).get("vocab_size")
    img = plot_loss(run, vocab) if run else None
    if img:
        last = run[-1]
        vals = [r for r in run if r.get("val_loss") is not None]
        tps = sorted(r["tokens_per_s"] for r in run if r.get("tokens_per_s"))
        facts = [("steps logged", len(run)), ("last step", last.get("step")),
                 ("last train loss", last.get("train_loss")),
                 ("last val loss", vals[-1]["val_loss"] if vals else None),
                 ("last val ppl", vals[-1].get("val_ppl") if vals else None),
                 ("last val bits/byte", vals[-1].get("val_bpb") if vals else None),
                 ("median tokens/s", tps[len(tps) // 2] if tps else None)]
        body = img + f'<p class="src">from {esc(ctx["run_path"])}</p>' + table(
            ["", "value"], [[esc(k), esc(fmt(v))] for k, v in facts], table_id="training")
    else:
        body = missing(f"No training metrics at {ctx['run_path']} (train with model/train.py --set out_dir=...).")
    parts.append(section("training", "Training loss", body))

    # all metrics rows
    if rows:
        cols = ["stage", "run_id", "started_at", "seconds", "input_table", "input_version", "output_table",
                "output_version", "docs_in", "docs_out", "docs_rejected", "tokens_in", "tokens_out",
                "doc_acceptance", "token_acceptance", "config_hash"]
        latest_ids = {r["run_id"] for r in latest.values()}
        trs = []
        for r in sorted(rows, key=lambda r: (stage_sort_key(r["stage"]), r["started_at"])):
            cells = [esc(r["stage"] + (" *" if r["run_id"] in latest_ids else ""))]
            cells += [esc(fmt(r.get(c))) for c in cols[1:]]
            reasons = ", ".join(f"{k}={v:,}" for k, v in sorted(r["reasons"].items(), key=lambda kv: -kv[1]))
            cells.append((esc(reasons), ' class="l reasons"'))
            trs.append(cells)
        body = ('<p class="src">Every row of the metrics table; * marks the latest run of a stage (used above).</p>'
                + table(cols + ["reasons"], trs, table_id="metrics", left=3))
        extras = "".join(f"<details><summary>{esc(r['stage'])} {esc(r['run_id'])} extra</summary><pre>"
                         f"{esc(json.dumps(r['extra'], indent=1, sort_keys=True, default=str)[:20000])}</pre></details>"
                         for r in sorted(latest.values(), key=lambda r: stage_sort_key(r["stage"])))
        body += extras
    else:
        body = missing("No metrics table.")
    parts.append(section("metrics", "Metrics table", body))

    # links
    links = ctx["links"]
    if links:
        body = "<ul>" + "".join(f'<li><a href="{esc(href)}">{esc(label)}</a> <span class="src">{esc(note)}</span></li>'
                                for label, href, note in links) + "</ul>"
    else:
        body = missing("No audit samples or reports in this lake yet.")
    parts.append(section("audit", "Audit samples and reports", body))

    toc = " ".join(f'<a href="#{s}">{esc(t)}</a>' for s, t in (
        ("funnel", "funnel"), ("rejections", "rejections"), ("languages", "languages"),
        ("duplicates", "duplicates"), ("mixture", "mixture"), ("token_lengths", "token lengths"),
        ("tokenizers", "tokenizers"), ("training", "training"), ("metrics", "metrics"), ("audit", "audit")))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>lmrefinery report: '
            f'{esc(ctx["lake"])}</title><style>{CSS}</style></head><body>'
            f'<h1>lmrefinery report</h1><p class="sub">lake <code>{esc(ctx["lake"])}</code> · generated '
            f'{esc(ctx["generated_at"])} · {len(rows)} metrics rows</p><p class="toc">{toc}</p>'
            + "".join(parts) + "</body></html>\n")


def audit_links(root: str, out_dir: str) -> list[tuple[str, str, str]]:
    links = []
    for pattern, note in ((os.path.join(root, "audit", "*.jsonl"), "audit sample (a few records per reason)"),
                          (os.path.join(root, "reports", "*.json"), "stage report")):
        for p in sorted(glob.glob(pattern)):
            with open(p, "rb") as f:
                n = sum(1 for _ in f) if p.endswith(".jsonl") else None
            links.append((os.path.relpath(p, root), os.path.relpath(p, out_dir),
                          note + (f", {n} lines" if n is not None else "")))
    return links


def gather(src: Sources, run_dir: str, packed: str, out_dir: str, compression_docs: int = 500) -> dict:
    rows = src.metrics_rows()
    latest = latest_per_stage(rows)
    manifest = load_manifest(packed)
    return {
        "lake": src.root, "generated_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "metrics": rows, "latest": latest, "funnel": funnel(latest),
        "languages": language_distribution(src, latest), "duplicates": duplicate_clusters(src, latest),
        "mixture": mixture(latest), "packed": packed, "manifest": manifest,
        "token_lengths": token_lengths(packed, manifest),
        "tokenizers": tokenizer_compression(src, packed, manifest, compression_docs),
        "run_path": os.path.join(run_dir, "metrics.jsonl"),
        "run": load_run(run_dir), "links": audit_links(src.root, out_dir),
    }


def write_report(lake_root: str, run_dir: str | None = None, out: str | None = None, packed: str | None = None,
                 master: str | None = None, compression_docs: int = 500) -> str:
    root = os.path.abspath(lake_root)
    if not os.path.isdir(root):
        raise UserError(f"lake {root} does not exist")
    out = os.path.abspath(out or os.path.join(root, "report.html"))
    run_dir = os.path.abspath(run_dir or os.path.join(root, "runs", "tiny"))
    packed = os.path.abspath(packed or os.path.join(root, "packed"))
    ctx = gather(Sources(root, master), run_dir, packed, os.path.dirname(out), compression_docs)
    page = render(ctx)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".tmp", "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(out + ".tmp", out)
    return out


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.compression_docs < 0:
        raise UserError("--compression-docs must be >= 0")
    path = write_report(args.lake, args.run_dir, args.out, args.packed, args.master, args.compression_docs)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(run_main("report", main))
