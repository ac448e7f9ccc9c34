"""Report, part 2: plots. matplotlib (Agg) figures of the gathered data (jobs/report_gather.py), each returned as an
`<img>` tag with the PNG embedded as base64, so the page (jobs/report.py) is one self-contained file.
"""
from __future__ import annotations

import base64
import html
import io
import math

from jobs.report_gather import stage_sort_key

# Plot ids in page order; tests and the screenshot check rely on these.
PLOTS = ["funnel_docs", "funnel_tokens", "rejections", "languages", "duplicates", "mixture", "token_lengths",
         "tokenizers", "loss"]


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
