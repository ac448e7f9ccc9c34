"""Report, part 2: plots. matplotlib (Agg) figures of the gathered data (jobs/report_gather.py), each returned as an
`<img>` tag with the PNG embedded as base64, so the page (jobs/report.py) is one self-contained file.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math

from jobs.report_gather import MAX_REASON_BARS, cuts_for, group_reasons, stage_sort_key

# Plot ids in page order; tests and the screenshot check rely on these.
PLOTS = ["funnel_docs", "funnel_tokens", "rejections", "signals", "line_cleaning", "languages", "duplicates",
         "mixture", "token_lengths", "tokenizers", "loss"]
OPTIONAL_PLOTS = ["doremi", "synthetic"]  # drawn only when the lake has their input (reports/doremi.json)
HIST_MAX_DOMAINS = 6  # columns of the signal histograms: the domains with most documents


# ---- plots --------------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fig_to_img(fig, plot_id: str, alt: str, data: dict | None = None) -> str:
    """`data`: what the figure draws, as JSON in data-<key> attributes (for tests and other machines)."""
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    b64 = base64.b64encode(buf.getvalue()).decode("ascii")
    attrs = "".join(f' data-{k}="{html.escape(json.dumps(v, sort_keys=True))}"' for k, v in (data or {}).items())
    return (f'<img class="plot" id="plot-{plot_id}" data-plot="{plot_id}" alt="{html.escape(alt)}"{attrs} '
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


def plot_rejections(latest: dict[str, dict], max_bars: int = MAX_REASON_BARS) -> str | None:
    """Horizontal bars of reasons per stage: at most `max_bars` per stage, the smallest grouped into one
    "other (N reasons)" bar (the page's table lists them all). data-bars: {stage: [[label, docs], ...]}."""
    stages = [s for s in sorted(latest, key=stage_sort_key) if any(latest[s]["reasons"].values())]
    if not stages:
        return None
    plt = _plt()
    n = len(stages)
    bars = {s: group_reasons(latest[s]["reasons"], max_bars) for s in stages}
    heights = [max(1.2, 0.28 * len(bars[s]) + 0.8) for s in stages]
    fig, axes = plt.subplots(n, 1, figsize=(8, sum(heights)), gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, s in zip(axes[:, 0], stages):
        items = bars[s][::-1]  # largest on top
        ks, vs = [k for k, _ in items], [v for _, v in items]
        n_reasons = len([v for v in latest[s]["reasons"].values() if v])
        grouped = n_reasons > len(bars[s])  # the smallest bar (first from the bottom) is the "other" group
        colors = ["#999999" if grouped and i == 0 else "#c44e52" for i in range(len(ks))]
        ax.barh(range(len(vs)), vs, color=colors)
        ax.set_yticks(range(len(vs)), ks, fontsize=8)
        for i, v in enumerate(vs):
            ax.text(v, i, f" {v:,}", va="center", fontsize=7)
        ax.set_xlim(0, max(vs) * 1.2)
        ax.xaxis.set_major_locator(_int_locator())
        ax.set_title(f"{s}: {sum(vs):,} document{'s' if sum(vs) != 1 else ''}, {n_reasons} reason"
                     f"{'s' if n_reasons != 1 else ''}", fontsize=9, loc="left")
    fig.tight_layout()
    return fig_to_img(fig, "rejections", "rejection reasons per stage",
                      {"bars": {s: [list(kv) for kv in bars[s]] for s in stages}})


def _hist_range(values, thresholds, scale: str):
    """(lo, hi) of a histogram's x axis: the 1-98 percentile range of the values (long tails land in the edge
    bins), widened to show thresholds that lie near it (a far one, like word_count's 100,000 maximum, would squash
    the data)."""
    import numpy as np

    v = values[np.isfinite(values)]
    if scale == "log":
        v = np.maximum(v, 1.0)
    if len(v):
        lo, hi = float(np.percentile(v, 1)), float(np.percentile(v, 98))
    else:
        lo, hi = (1.0, 10.0) if scale == "log" else (0.0, 1.0)
    for t in thresholds:
        if scale == "log":
            if t > 0 and lo / 10 <= t <= hi * 10:
                lo, hi = min(lo, t), max(hi, t)
        elif lo - 3 * (hi - lo) <= t <= hi + 3 * (hi - lo):
            lo, hi = min(lo, t), max(hi, t)
    if scale == "log":
        lo, hi = max(lo, 1.0), max(hi, lo * 2)
        return lo / 1.1, hi * 1.1
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.03
    return lo - pad, hi + pad


def plot_signal_histograms(sig: dict, max_domains: int = HIST_MAX_DOMAINS) -> str | None:
    """Small multiples: one row per key signal, one column per domain (the `max_domains` with most documents);
    stacked histogram of kept and rejected documents of the sample, a vertical line at each threshold of a rule on
    that signal in force for that domain (metrics extra.cuts). data-cuts: {domain: {signal: [[kind, thr], ...]}}
    (the lines drawn, also those off scale); data-counts: {domain: {signal: documents in the histogram}}."""
    import numpy as np

    sample, signals = sig["sample"], sig["signals"]
    if not signals or not len(sample["domain"]):
        return None
    counts: dict = {}
    for d in sample["domain"]:
        counts[d] = counts.get(d, 0) + 1
    domains = sorted(counts, key=lambda d: (-sig["docs"].get(d, counts[d]), d))[:max_domains]
    signals = [(s, scale) for s, scale in signals if np.isfinite(sample[s]).any()]
    if not signals:
        return None
    plt = _plt()
    nr, nc = len(signals), len(domains)
    fig, axes = plt.subplots(nr, nc, figsize=(2.25 * nc + 0.9, 1.45 * nr + 0.9), squeeze=False)
    drawn: dict = {d: {} for d in domains}
    drawn_counts: dict = {d: {} for d in domains}
    kept = sample["kept"]
    dom = sample["domain"]
    for i, (s, scale) in enumerate(signals):
        vals = sample[s]
        rules = {d: [(kind, float(thr)) for _, kind, signal, thr in cuts_for(sig.get("cuts"), d)
                     if signal == s and thr is not None] for d in domains}
        lo, hi = _hist_range(vals[np.isin(dom, domains)], [t for r in rules.values() for _, t in r], scale)
        finite = vals[np.isfinite(vals)]
        if scale == "log":
            bins = np.logspace(math.log10(lo), math.log10(hi), 31)
        elif len(finite) and np.all(finite == np.round(finite)) and hi - lo <= 60:  # counts: one bin per value
            bins = np.arange(math.floor(lo + 0.5) - 0.5, math.ceil(hi - 0.5) + 1.5)
        else:
            bins = np.linspace(lo, hi, 31)
        for j, d in enumerate(domains):
            ax = axes[i, j]
            m = (dom == d) & np.isfinite(vals)
            v = np.clip(vals[m], bins[0], bins[-1])  # out-of-range values go to the edge bins
            k = kept[m]
            drawn_counts[d][s] = int(m.sum())
            ax.hist([v[k], v[~k]], bins=bins, stacked=True, color=["#55a868", "#c44e52"],
                    label=["kept", "rejected"])
            if scale == "log":
                from matplotlib.ticker import NullFormatter

                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlim(bins[0], bins[-1])
            ax.tick_params(labelsize=6, length=2)
            ax.yaxis.set_major_locator(_int_locator())
            for kind, t in rules[d]:
                drawn[d].setdefault(s, []).append([kind, t])
                if bins[0] <= t <= bins[-1]:
                    ax.axvline(t, color="#222", ls="--" if kind.startswith("min") else ":", lw=1)
                    ax.text(t, 0.97, f" {t:g}", transform=ax.get_xaxis_transform(), fontsize=6, va="top",
                            ha="left" if kind.startswith("min") else "right", color="#222")
                else:
                    ax.text(0.98 if t > bins[-1] else 0.02, 0.97, f"{kind} {t:g} off scale",
                            transform=ax.transAxes, fontsize=5.5, va="top",
                            ha="right" if t > bins[-1] else "left", color="#666")
            if i == 0:
                preset = (sig.get("presets") or {}).get(d)
                ax.set_title(f"{d}" + (f" (preset {preset})" if preset and preset != d else "")
                             + f"\n{sig['docs'].get(d, 0):,} docs", fontsize=8)
            if j == 0:
                ax.set_ylabel(s + (" (log x)" if scale == "log" else ""), fontsize=7)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    from matplotlib.lines import Line2D

    if any(drawn.values()):
        handles += [Line2D([], [], color="#222", ls="--", lw=1), Line2D([], [], color="#222", ls=":", lw=1)]
        labels += ["cut: rejected below", "cut: rejected above"]
    fig.legend(handles, labels, loc="upper center", ncol=4, fontsize=8, frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (1.45 * nr + 0.9)))
    return fig_to_img(fig, "signals", "quality signal histograms per domain with the cut lines",
                      {"cuts": drawn, "counts": drawn_counts})


def plot_line_cleaning(cleaning: dict) -> str | None:
    """Bars: share of the bytes of kept documents that C4 line cleaning kept, per domain."""
    rows = [(d, c) for d, c in sorted(cleaning.items()) if c.get("bytes_raw")]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(rows) + 1.2))
    shares = [c["bytes_clean"] / c["bytes_raw"] for _, c in rows]
    y = list(range(len(rows)))[::-1]
    ax.barh(y, shares, color="#4c72b0")
    ax.set_yticks(y, [d for d, _ in rows], fontsize=8)
    for yy, sh, (_, c) in zip(y, shares, rows):
        ax.text(sh, yy, f" {100 * sh:.1f}% of {_human(c['bytes_raw'])}B", va="center", fontsize=7)
    ax.set_xlim(0, 1.25)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0", "25%", "50%", "75%", "100%"])
    ax.set_xlabel("bytes kept by C4 line cleaning (kept documents)")
    ax.set_title("line cleaning per domain", fontsize=9, loc="left")
    return fig_to_img(fig, "line_cleaning", "bytes kept by line cleaning per domain")


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
    packed = mix.get("packed_tokens") or {}
    tot = sum(packed.values())
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 2.8))
    x = range(len(names))
    w = 0.27 if tot else 0.4
    ax.bar([i - w for i in x] if tot else [i - 0.2 for i in x], target, width=w, label="target", color="#4c72b0")
    ax.bar(list(x) if tot else [i + 0.2 for i in x], got, width=w, label="achieved (mixed)", color="#55a868")
    if tot:
        ax.bar([i + w for i in x], [packed.get(n, 0) / tot for n in names], width=w, label="packed",
               color="#c44e52")
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


def plot_doremi(res: dict) -> str | None:
    """DoReMi's domain weights at every proxy step, with their average (the weights mix uses) dashed."""
    traj = (res.get("trajectory") or {})
    names, alpha = traj.get("domains") or [], traj.get("alpha") or []
    if not names or not alpha:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3))
    steps = range(1, len(alpha) + 1)
    for i, d in enumerate(names):
        line, = ax.plot(steps, [a[i] for a in alpha], label=d)
        w = (res.get("domain_weights") or {}).get(d)
        if w is not None:
            ax.axhline(w, color=line.get_color(), ls="--", lw=0.8)
    ax.set_xlabel("proxy step")
    ax.set_ylabel("domain weight")
    ax.set_title("DoReMi weights over the proxy's steps (dashed: their average, used by mix)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig_to_img(fig, "doremi", "DoReMi domain weight trajectory")


def plot_synthetic(syn: dict) -> str | None:
    """pass@j for j = 1..k per template (jobs/synthesize.py's metrics row)."""
    by = syn.get("by_template") or {}
    if not by:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3))
    for t, v in sorted(by.items()):
        curve = v.get("curve") or []
        ax.plot(range(1, len(curve) + 1), curve, "o-", ms=3, label=f"{t} ({v.get('problems')} problems)")
    ax.set_xlabel("k (candidates per problem)")
    ax.set_ylabel("pass@k")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"synthetic data: pass@k of {syn.get('generator')}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig_to_img(fig, "synthetic", "synthetic data pass@k curve")


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
