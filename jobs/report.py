"""Report: one static, self-contained HTML page about a lake and its training run.

    python jobs/report.py --lake ./lake [--run-dir ./lake/runs/tiny] [--out ./lake/report.html]

Sections (each says so when its data is missing instead of failing):
  funnel          documents and tokens after every stage (latest `metrics` row per stage)
  by domain       documents and tokens in -> out per domain and per source for ingest, filter, dedup,
                  decontaminate and mix (each stage's input table at its input version and output table at the
                  version it wrote: domain / source / n_tokens_est read with delta-rs); domains and sources that
                  lost more than half their documents are marked, the filter's loud losses listed
  rejections      rejection / removal reasons per stage (metrics `reasons`; at most 12 bars a stage)
  filter reasons  the filter's top reasons per domain (the `filter_signals` table)
  filter signals  histograms of key quality signals per domain, kept vs rejected, with the cut lines in force
                  (filter metrics extra.cuts); a deterministic sample of at most 200,000 filter_signals rows
  line cleaning   bytes of kept documents that C4 line cleaning kept, per domain (filter_signals)
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
Code: gathering in jobs/report_gather.py, plots in jobs/report_plots.py, the page and `main` here.
"""
from __future__ import annotations

import datetime as dt
import html
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jobs.cli import UserError, run_main  # noqa: E402
from jobs.report_gather import (Sources, chain_mismatches, duplicate_clusters_from_table, gather,  # noqa: E402
                                language_distribution_from_tables, latest_per_stage, stage_sort_key,
                                tokenizer_compression, top_reasons_per_domain)
from jobs.report_plots import (PLOTS, plot_duplicates, plot_funnel, plot_languages, plot_line_cleaning,  # noqa: E402
                               plot_doremi, plot_loss, plot_mixture, plot_synthetic, plot_rejections, plot_signal_histograms, plot_token_lengths,
                               plot_tokenizers)

# the page and entry point, plus the names other code imports from here (tests, notebooks/04_mixture_and_tokens.py)
__all__ = ["PLOTS", "Sources", "build_parser", "duplicate_clusters_from_table", "gather",
           "language_distribution_from_tables", "latest_per_stage", "main", "render", "tokenizer_compression",
           "write_report"]


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
td.loud{background:#fde8e8;color:#a33;font-weight:bold} ul.warn{margin:4px 0 10px 0}
h3{margin:18px 0 2px 0;font-size:15px}
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


NO_SIGNALS = ("No filter signals table in this lake (written by jobs/filter.py since the filter_signals table was "
              "added; the filter has not run, or ran before): no {what}.")


def _share(a, b):
    return esc(pct(a / b)) if b else "n/a"


def render_breakdown(bd: dict | None) -> str:
    """Per stage: documents and tokens in -> out per domain (a table) and per source (a details element)."""
    if not bd:
        return missing("No metrics rows of ingest, filter, dedup, decontaminate or mix: no per-domain breakdown.")
    body = ""
    if bd["loud_losses"]:
        body += ('<p class="src">The filter\'s loud losses (metrics extra.loud_losses):</p><ul class="warn">'
                 + "".join(f"<li>{esc(x)}</li>" for x in bd["loud_losses"]) + "</ul>")
    body += (f'<p class="src">Documents and tokens (<code>n_tokens_est</code>) per domain and source, counted in '
             f'each stage\'s input table at the version it read and its output table at the version it wrote. '
             f'Marked: lost more than {100 * bd["share"]:.0f}% of its documents. Filter tokens out are those of the '
             f'line-cleaned text; ingest counts quarantined records in (tokens estimated from their raw bytes); '
             f'mix counts unique documents out and tokens with repeats.</p>')
    heads = ["docs in", "docs out", "docs kept", "tokens in", "tokens out", "tokens kept", "note"]
    for e in bd["stages"]:
        s = e["stage"]
        body += f"<h3>{esc(s)}</h3>"
        if e["error"]:
            body += missing(f"{s}: no per-domain counts: {e['error']}.")
            continue
        body += f'<p class="src">{esc(e["input"])} &rarr; {esc(e["output"])}</p>'
        for kind, label in (("domains", "domain"), ("sources", "source")):
            trs = []
            for name, g in sorted(e[kind].items(), key=lambda kv: (-kv[1]["docs_in"], kv[0])):
                note = (f"\u26a0 lost {100 * g['lost_share']:.1f}%", ' class="loud" data-loud="1"') if g["loud"] \
                    else ""
                if s == "mix" and "rows" in g:
                    note = note or esc(f"{g['rows']:,} rows")
                trs.append([esc(name), num_cell(g["docs_in"], "docs_in"), num_cell(g["docs_out"], "docs_out"),
                            _share(g["docs_out"], g["docs_in"]), num_cell(g["tokens_in"], "tokens_in"),
                            num_cell(g["tokens_out"], "tokens_out"), _share(g["tokens_out"], g["tokens_in"]), note])
            tab = table([label, *heads], trs, table_id=f"by_{label}_{s}")
            n_loud = sum(1 for g in e[kind].values() if g["loud"])
            if kind == "domains":
                body += tab
            else:
                body += (f"<details><summary>per source ({len(trs)} sources"
                         f"{f', {n_loud} marked' if n_loud else ''})</summary>{tab}</details>")
    return body


def render_filter_reasons(sig: dict | None) -> str:
    if not sig:
        return missing(NO_SIGNALS.format(what="top reasons per domain"))
    trs = []
    for g in top_reasons_per_domain(sig["reasons"], sig["docs"]):
        d = g["domain"]
        items = list(g["top"]) + ([(f"other ({g['other'][0]} reasons)", g["other"][1])] if g["other"] else [])
        if not items:
            items = [("(none rejected)", 0)]
        for i, (reason, n) in enumerate(items):
            trs.append([(esc(d), f' data-domain="{esc(d)}"'), esc(reason), num_cell(n, "docs"),
                        _share(n, g["docs_in"]), num_cell(g["docs_in"], "docs_in") if i == 0 else "",
                        num_cell(g["rejected"], "rejected") if i == 0 else ""])
    return (f'<p class="src">from {esc(sig["table"])} v{esc(sig["version"])} ({sig["rows"]:,} documents): the '
            f'first rule each rejected document failed; the top 5 reasons per domain, the rest grouped.</p>'
            + table(["domain", "reason", "documents", "share of domain", "domain docs in", "domain rejected"], trs,
                    table_id="filter_reasons_by_domain", left=2))


def render_signals(sig: dict | None) -> str:
    if not sig:
        return missing(NO_SIGNALS.format(what="signal histograms"))
    img = plot_signal_histograms(sig)
    if not img:
        return missing(f"The signals table {sig['table']} has none of the key signal columns.")
    n = len(sig["sample"]["domain"])
    body = ""
    if not sig["cuts"]:
        body += missing("No cut lines: the filter metrics row predates extra.cuts (re-run jobs/filter.py).")
    shown = sorted(sig["docs"], key=lambda d: (-sig["docs"][d], d))
    more = shown[6:]
    body += img + (f'<p class="src">{n:,} of {sig["rows"]:,} documents of {esc(sig["table"])} v{esc(sig["version"])}'
                   + (f" (every {sig['stride']:,}th row)" if sig["stride"] > 1 else "")
                   + "; green kept, red rejected (by any rule); dashed: rejected below the line, dotted: above "
                     "(the domain's rules in force, metrics extra.cuts); values beyond the axis are counted in "
                     "the edge bins."
                   + (f" Not shown: {len(more)} smaller domain(s) ({esc(', '.join(more))})." if more else "")
                   + "</p>")
    return body


def render_line_cleaning(sig: dict | None) -> str:
    if not sig:
        return missing(NO_SIGNALS.format(what="line cleaning figures"))
    lc = sig["line_cleaning"]
    if not lc:
        return missing(f"The signals table {sig['table']} has no n_bytes_raw / n_bytes_clean columns.")
    tot = {k: sum(c[k] for c in lc.values()) for k in ("docs", "bytes_raw", "bytes_clean", "tokens_raw",
                                                           "tokens_clean")}
    trs = []
    for d, c in [*sorted(lc.items()), ("ALL", tot)]:
        ratio = c["bytes_clean"] / c["bytes_raw"] if c["bytes_raw"] else None
        trs.append([esc(d), num_cell(c["docs"], "docs"), num_cell(c["bytes_raw"], "bytes_raw"),
                    num_cell(c["bytes_clean"], "bytes_clean"), num_cell(ratio, "bytes_kept"),
                    num_cell(c["tokens_raw"], "tokens_raw"), num_cell(c["tokens_clean"], "tokens_clean")])
    img = plot_line_cleaning(lc) or ""
    return (img + f'<p class="src">kept documents of {esc(sig["table"])} v{esc(sig["version"])}: '
            f'sum(n_bytes_clean) / sum(n_bytes_raw) per domain (C4 line cleaning drops lines of kept documents; '
            f'presets that turn C4 rewriting off keep every byte)</p>'
            + table(["domain", "kept docs", "bytes raw", "bytes clean", "bytes kept", "tokens raw",
                     "tokens clean"], trs, table_id="line_cleaning"))


def render_web(latest: dict) -> str:
    """WARC records by kind (ingest extra.skipped_records and its extract:/warc: reasons), the filter's url:
    rejections and PII replacements (filter extra.pii)."""
    ing, flt = latest.get("ingest") or {}, latest.get("filter") or {}
    skipped = (ing.get("extra") or {}).get("skipped_records") or {}
    ingest_reasons = {k: v for k, v in (ing.get("reasons") or {}).items() if k.startswith(("warc:", "extract:"))}
    url_reasons = {k: v for k, v in (flt.get("reasons") or {}).items() if k.startswith("url:")}
    pii = (flt.get("extra") or {}).get("pii") or {}
    if not (skipped or ingest_reasons or url_reasons or pii):
        return missing("No WARC source in the last ingest run, no URL rejections and no PII replaced.")
    trs = [[esc("ingest"), esc(k), esc("skipped (not a page, counted only)"), num_cell(v, "docs")]
           for k, v in sorted(skipped.items())]
    trs += [[esc("ingest"), esc(k), esc("quarantined"), num_cell(v, "docs")] for k, v in sorted(ingest_reasons.items())]
    trs += [[esc("filter"), esc(k), esc("rejected"), num_cell(v, "docs")] for k, v in sorted(url_reasons.items())]
    trs += [[esc("filter"), esc(f"pii:{k}"), esc("replaced in kept text"), num_cell(v, "docs")]
            for k, v in sorted(pii.items()) if isinstance(v, (int, float))]
    return table(["stage", "kind / reason", "what happened", "count"], trs, table_id="web", left=3) + (
        '<p class="src">A WARC record is a document (a 2xx HTML response whose main text was extracted), a '
        'quarantine row, or skipped and counted here; pii rows count replaced addresses (and documents changed).</p>')


def render(ctx: dict) -> str:
    parts = []
    latest, rows = ctx["latest"], ctx["metrics"]

    # funnel
    fun = ctx["funnel"]
    if fun:
        keys = ("docs_in", "docs_out", "docs_rejected", "tokens_in", "tokens_out")
        trs = [[(esc(r["stage"]), f' data-stage="{esc(r["stage"])}"')] + [num_cell(r[k], k) for k in keys]
               + [esc(r.get("unit") or "estimate (bytes/4)"), esc(pct(r["doc_acceptance"])),
                  esc(pct(r["token_acceptance"]))] for r in fun]
        body = table(["stage", *keys, "tokens are", "doc acceptance", "token acceptance"], trs, table_id="funnel")
        body += ('<p class="src">Latest metrics row per stage. The "tokens are" column says which token figures '
                 'are estimates (<code>n_tokens_est</code> = UTF-8 bytes / 4) and which are real tokens of a '
                 'tokenizer (EOS included): mix counts with the packing tokenizer (<code>mix.tokens: exact</code>), '
                 'pack with its own. docs_rejected counts quarantined, rejected, removed or not-sampled '
                 'documents.</p>')
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
    parts.append(section("by_domain", "By domain and source", render_breakdown(ctx.get("breakdown"))))

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
    parts.append(section("web", "Web front end: WARC records, extraction, URLs, PII", render_web(latest)))
    sig = ctx.get("signals")
    parts.append(section("filter_reasons", "Filter: top reasons per domain", render_filter_reasons(sig)))
    parts.append(section("signals", "Filter signals per domain, with the cut lines", render_signals(sig)))
    parts.append(section("line_cleaning", "Bytes kept by line cleaning per domain", render_line_cleaning(sig)))

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
        packed_tok = mix.get("packed_tokens") or {}
        trs = [[esc(d["domain"]), num_cell(d.get("target_weight"), "target"),
                num_cell(d.get("achieved_share"), "achieved"), num_cell(d.get("target_tokens"), "target_tokens"),
                num_cell(d.get("tokens"), "tokens"), num_cell(packed_tok.get(d["domain"]), "packed_tokens"),
                num_cell(d.get("tokens_available"), "tokens_available"), num_cell(d.get("docs"), "docs"),
                esc(fmt(d.get("epochs")))] for d in mix["domains"]]
        unit = (f"real tokens ({esc(str(mix.get('tokenizer')))}, EOS included)" if mix.get("token_counts") == "exact"
                else "ESTIMATED tokens (n_tokens_est = bytes / 4)")
        body = plot_mixture(mix) + table(["domain", "target weight", "achieved share", "target tokens",
                                          "achieved tokens", "packed tokens", "available", "rows", "epochs"],
                                         trs, table_id="mixture")
        body += (f'<p class="src">Weights, budget and achieved tokens in {unit}; "packed tokens" is what the '
                 f'packed manifest records per domain (train + val){"" if packed_tok else " (not packed from this mixture)"}.</p>')
        body += "".join(f'<p class="warn">{esc(w)}</p>' for w in mix["warnings"])
    else:
        body = missing("No mixture data: the mix stage has not run.")
    parts.append(section("mixture", "Domain mixture: target vs achieved", body))

    # DoReMi
    dr = ctx.get("doremi")
    doremi_img = img = plot_doremi(dr) if dr else None
    if img:
        names = sorted(dr["domain_weights"])
        vl = dr.get("val_loss") or {}
        trs = [[esc(d), num_cell(dr.get("reference_weights", {}).get(d), "reference_weight"),
                num_cell(dr["domain_weights"][d], "doremi_weight"),
                num_cell((vl.get("reference") or {}).get(d), "val_loss_reference"),
                num_cell((vl.get("proxy") or {}).get(d), "val_loss_proxy")] for d in names]
        body = img + table(["domain", "reference weight", "DoReMi weight", "val loss reference",
                            "val loss proxy"], trs, table_id="doremi")
        body += (f'<p class="src">from reports/doremi.json (jobs/doremi.py): {dr.get("steps")} steps each, eta '
                 f'{dr.get("eta")}; the reference trains on uniform weights, the proxy with Group DRO.</p>')
        parts.append(section("doremi", "DoReMi domain weights", body))  # optional: only a lake that ran it

    # synthetic data (optional: only a lake where jobs/synthesize.py ran)
    srow = (latest.get("synthesize") or {})
    sx = srow.get("extra") or {}
    synthetic_img = plot_synthetic(sx) if sx.get("by_template") else None
    if synthetic_img:
        k = sx.get("k")
        trs = [[esc(t), num_cell(v.get("problems"), "problems"), num_cell(v.get("candidates"), "candidates"),
                num_cell(v.get("accepted"), "accepted"), esc(pct(v.get("acceptance"))),
                esc(fmt(v.get("pass@1"))), esc(fmt(v.get(f"pass@{k}"))),
                esc(", ".join(f"{a}={b:,}" for a, b in (v.get("verdicts") or {}).items()))]
               for t, v in sorted(sx["by_template"].items())]
        body = synthetic_img + table(["template", "problems", "candidates", "accepted", "acceptance", "pass@1",
                                      f"pass@{k}", "verdicts"], trs, table_id="synthetic")
        body += (f'<p class="src">latest synthesize run {esc(srow.get("run_id"))}: {k} candidates per problem from '
                 f'{esc(str(sx.get("generator")))}; accepted rows in <code>{esc(str(srow.get("output_table")))}'
                 f'</code>, the rest with their verdict in the rejected table.</p>')
        parts.append(section("synthetic", "Synthetic data: acceptance and pass@k", body))

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
    tok_info = (ctx.get("manifest") or {}).get("tokenizer") or {}
    vocab = tok_info.get("vocab_size")
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
                 ("median tokens/s", tps[len(tps) // 2] if tps else None),
                 ("tokenizer", f"{tok_info.get('name')} ({tok_info.get('vocab_size'):,} tokens)"
                  if tok_info.get("vocab_size") else None),
                 ("tokens seen", last.get("tokens_seen")), ("epochs of train", last.get("epoch")),
                 ("last grad norm", last.get("grad_norm")),
                 ("loss spikes", sum(1 for r in run if r.get("spike")) if "grad_norm" in last else None)]
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
        ("funnel", "funnel"), ("by_domain", "by domain"), ("rejections", "rejections"),
        ("filter_reasons", "filter reasons"), ("signals", "signals"), ("line_cleaning", "line cleaning"),
        ("languages", "languages"),
        ("duplicates", "duplicates"), ("mixture", "mixture"), *((("doremi", "doremi"),) if doremi_img else ()),
        *((("synthetic", "synthetic"),) if synthetic_img else ()),
        ("token_lengths", "token lengths"),
        ("tokenizers", "tokenizers"), ("training", "training"), ("metrics", "metrics"), ("audit", "audit")))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>lmrefinery report: '
            f'{esc(ctx["lake"])}</title><style>{CSS}</style></head><body>'
            f'<h1>lmrefinery report</h1><p class="sub">lake <code>{esc(ctx["lake"])}</code> · generated '
            f'{esc(ctx["generated_at"])} · {len(rows)} metrics rows</p><p class="toc">{toc}</p>'
            + "".join(parts) + "</body></html>\n")


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
    from udfs.common import exit_process

    exit_process(run_main("report", main))
