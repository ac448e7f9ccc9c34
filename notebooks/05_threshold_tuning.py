# Databricks notebook source
# MAGIC %md
# MAGIC # 05 · Threshold tuning
# MAGIC What a change to the filter's thresholds would do, without re-running the filter: the `filter_signals` table
# MAGIC holds every quality signal of every input document, and `jobs.filter.decision_column(cfg)` turns a resolved
# MAGIC filter config into the reason (null = kept) each row would get. This notebook decides every row under the
# MAGIC current config and under the changed one and shows, per domain, the documents and tokens (of the
# MAGIC line-cleaned text, `n_tokens_clean`) the change would add and remove, the reason transitions, and audit
# MAGIC samples at the margin: for each (old reason -> new reason), the documents nearest the new cut, with the
# MAGIC signal value and the first 300 characters of their text.
# MAGIC
# MAGIC Write the change as `--set` strings in `CHANGE` below (on Databricks: the `overrides` widget; as plain Python:
# MAGIC env `LMR_TUNING_SET`, `;`-separated). The current config is conf/pipeline.yaml (env `LMR_CONF` for another
# MAGIC file). Rules that rewrite the text (C4 line rules) are not re-decided: changing them needs a filter re-run.
# MAGIC On Databricks set the `lake` widget; as plain Python set `LMR_LAKE` (default `./lake`).

# COMMAND ----------

# Lake path from the widget on Databricks (where `spark` is predefined), else from env LMR_LAKE (default ./lake).
import os
import sys

try:
    REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
except NameError:  # Databricks Repos run a notebook with its own folder as working directory
    REPO = os.path.dirname(os.getcwd())
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import json  # noqa: E402

from pyspark.sql import Window  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from jobs.notebook import open_lake, snippet  # noqa: E402

lake, spark, show = open_lake(globals())
ON_DATABRICKS = "dbutils" in globals()

# COMMAND ----------

# MAGIC %md
# MAGIC ## The change
# MAGIC One global threshold and one per-domain threshold, as examples; any `filter.*` key of conf/pipeline.yaml works
# MAGIC (`filter.langid.threshold=0.5`, `filter.domains.docs.preset=legal`, ...).

# COMMAND ----------

CHANGE = [
    "filter.quality.gopher_quality.min_alpha_words_ratio=0.7",        # every domain without its own value
    "filter.domains.reference.quality.gopher_quality.min_doc_words=60",  # one domain (on top of its preset)
]
SAMPLES_PER_TRANSITION = 5
if ON_DATABRICKS:  # the notebook's own dbutils
    widgets = globals()["dbutils"].widgets
    widgets.text("overrides", "; ".join(CHANGE))
    CHANGE = [x.strip() for x in widgets.get("overrides").split(";") if x.strip()]
elif os.environ.get("LMR_TUNING_SET"):
    CHANGE = [x.strip() for x in os.environ["LMR_TUNING_SET"].split(";") if x.strip()]

from jobs.config import load_config  # noqa: E402
from jobs.filter import cut_lines, decision_column, resolve_config  # noqa: E402

CONF_PATH = os.environ.get("LMR_CONF") or None
old_cfg = resolve_config(load_config(CONF_PATH)["filter"])
new_cfg = resolve_config(load_config(CONF_PATH, CHANGE)["filter"])  # checked like --set: unknown keys are refused
print("## The change")
for item in CHANGE:
    print(f"set {item}")


def _cuts(cfg):
    """{domain or "*": {(reason, kind, signal): threshold}} of the document-level rules in force."""
    return {d: {(r, k, s): t for r, k, s, t in rules} for d, rules in cut_lines(cfg).items()}


old_cuts, new_cuts = _cuts(old_cfg), _cuts(new_cfg)
print("cut lines that change (domain  reason  kind  signal  old -> new; '*' = domains without their own rules):")
n_changed = 0
for d in sorted(set(old_cuts) | set(new_cuts)):
    a, b = old_cuts.get(d, old_cuts["*"]), new_cuts.get(d, new_cuts["*"])
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            n_changed += 1
            print(f"  {d:<12}{key[0]:<42}{key[1]:<7}{key[2]:<22}{a.get(key, 'off')} -> {b.get(key, 'off')}")
if not n_changed:
    print("  (none: the change touches no document-level threshold; langid languages or rules switched on / off "
          "still count below)")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Both decisions over the signals table
# MAGIC The signals table of the latest filter run, at the version it wrote. `old_reason` is the decision under the
# MAGIC current config: where the lake was filtered with that config it equals the stored `reason`.

# COMMAND ----------

metric_rows = ([r for r in lake.read_arrow("metrics").to_pylist() if r["stage"] == "filter"]
               if lake.exists("metrics") else [])
filter_row = max(metric_rows, key=lambda r: r["started_at"]) if metric_rows else None
filter_extra = json.loads(filter_row["extra"] or "{}") if filter_row else {}
outputs = dict(filter_row["outputs"] or []) if filter_row else {}
signals_name = filter_extra.get("signals_table") or "filter_signals"
if not lake.exists(signals_name):
    raise SystemExit(f"no {signals_name} table in {lake.root}: run jobs/filter.py (it writes the signals table)")
sig = lake.read(signals_name, version=outputs.get(signals_name))
decided = (sig.withColumn("old_reason", decision_column(old_cfg, sig.columns))
           .withColumn("new_reason", decision_column(new_cfg, sig.columns)))
check = decided.agg(F.count(F.lit(1)).alias("n"),
                    F.sum(F.col("reason").eqNullSafe(F.col("old_reason")).cast("int")).alias("same")).first()
print("## Both decisions")
print(f"signals table: {signals_name} v{outputs.get(signals_name, 'latest')}  documents: {check['n']}")
print(f"current config reproduces the stored decision for {check['same']} of {check['n']} documents"
      + ("" if check["same"] == check["n"] else
         " (the lake was filtered with another config, a classifier or a text-rewriting rule: compare with care)"))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Tokens and documents added and removed, per domain
# MAGIC added: rejected now, kept after the change; removed: kept now, rejected after; tokens are `n_tokens_clean`
# MAGIC (what `filtered` would hold); net = added - removed = kept after - kept before.

# COMMAND ----------

old_kept, new_kept = F.col("old_reason").isNull(), F.col("new_reason").isNull()
added, removed = ~old_kept & new_kept, old_kept & ~new_kept
tok = F.coalesce(F.col("n_tokens_clean"), F.lit(0))


def _sum_if(cond, value=F.lit(1)):
    return F.coalesce(F.sum(F.when(cond, value)), F.lit(0))


per_domain = (decided.groupBy(F.coalesce("domain", F.lit("(none)")).alias("domain"))
              .agg(F.count(F.lit(1)).alias("docs"),
                   _sum_if(old_kept).alias("kept_before"), _sum_if(new_kept).alias("kept_after"),
                   _sum_if(added).alias("docs_added"), _sum_if(removed).alias("docs_removed"),
                   _sum_if(~old_kept & ~new_kept & ~F.col("old_reason").eqNullSafe(F.col("new_reason")))
                   .alias("reason_changed"),
                   _sum_if(old_kept, tok).alias("tokens_before"), _sum_if(new_kept, tok).alias("tokens_after"),
                   _sum_if(added, tok).alias("tokens_added"), _sum_if(removed, tok).alias("tokens_removed"))
              .orderBy(F.desc("docs"), "domain"))
rows = per_domain.collect()
cols = ["docs", "kept_before", "kept_after", "docs_added", "docs_removed", "reason_changed", "tokens_before",
        "tokens_after", "tokens_added", "tokens_removed"]
total = {c: sum(int(r[c]) for r in rows) for c in cols}
print("## Change per domain")
print(f"{'domain':<14}" + "".join(f"{c:>15}" for c in cols) + f"{'tokens_net':>15}")
for r in [*(r.asDict() for r in rows), {"domain": "ALL", **total}]:
    print(f"{r['domain']:<14}" + "".join(f"{int(r[c]):>15}" for c in cols)
          + f"{int(r['tokens_added']) - int(r['tokens_removed']):>+15}")
print(f"total: docs added {total['docs_added']} removed {total['docs_removed']} "
      f"net {total['docs_added'] - total['docs_removed']:+d} | tokens added {total['tokens_added']} "
      f"removed {total['tokens_removed']} net {total['tokens_added'] - total['tokens_removed']:+d} | "
      f"kept tokens before {total['tokens_before']} after {total['tokens_after']}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Reason transitions
# MAGIC Every (old reason -> new reason) pair that differs: `kept` where the document is kept.

# COMMAND ----------

flips = decided.where(~F.col("old_reason").eqNullSafe(F.col("new_reason")))
label_old = F.coalesce("old_reason", F.lit("kept"))
label_new = F.coalesce("new_reason", F.lit("kept"))
transitions = (flips.groupBy(label_old.alias("old"), label_new.alias("new"))
               .agg(F.count(F.lit(1)).alias("documents"), F.sum(tok).alias("tokens"),
                    F.countDistinct("domain").alias("domains"))
               .orderBy(F.desc("documents"), "old", "new"))
print("## Reason transitions")
show(transitions, 100, truncate=60)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Audit samples at the margin
# MAGIC For each transition, the documents whose signal lies nearest the new cut of the rule that decides it (the new
# MAGIC reason's rule, or the old one's for documents the change keeps), joined with the filter's input table for
# MAGIC their text.

# COMMAND ----------

# the rule behind a reason: its signal, and its threshold per domain before and after the change
signal_of = {r: s for cuts in (old_cuts, new_cuts) for rules in cuts.values() for (r, _, s) in rules}
own = sorted((set(old_cuts) | set(new_cuts)) - {"*"})
dom_key = F.when(F.col("domain").isin(own), F.col("domain")).otherwise(F.lit("*")) if own else F.lit("*")


def _thr_map(cuts):
    """ "domain|reason" -> the thresholds of that reason's rules (word_count has a minimum and a maximum)."""
    by: dict = {}
    for d, rules in cuts.items():
        for (r, _, _), t in rules.items():
            by.setdefault(f"{d}|{r}", []).append(float(t))
    pairs = [x for k, ts in sorted(by.items()) for x in (F.lit(k), F.array(*[F.lit(t) for t in ts]))]
    return F.create_map(*pairs) if pairs else F.create_map().cast("map<string,array<double>>")


def _nearest(thresholds, value):
    """The threshold nearest `value` (the one that decides a document at the margin)."""
    pairs = F.transform(thresholds, lambda t: F.struct(F.abs(value - t).alias("d"), t.alias("t")))
    return F.element_at(F.array_sort(pairs), 1)["t"]


def _by_reason(reason_col, mapping):
    out = F.lit(None)
    for r, v in sorted(mapping.items()):
        out = F.when(reason_col == r, v).otherwise(out)
    return out


rule_reason = F.coalesce("new_reason", "old_reason")
signal_name = _by_reason(rule_reason, {r: F.lit(s) for r, s in signal_of.items()})
signal_value = _by_reason(rule_reason, {r: F.col(f"`{s}`") for r, s in signal_of.items() if s in sig.columns})
key = F.concat(dom_key, F.lit("|"), rule_reason)
old_thr = _nearest(_thr_map(old_cuts)[key], signal_value)
new_thr = _nearest(_thr_map(new_cuts)[key], signal_value)
margin = F.abs(signal_value - F.coalesce(new_thr, old_thr))
wt = Window.partitionBy("old", "new").orderBy(F.asc_nulls_last("margin"), "id")
samples = (flips.select("id", "domain", "lang", "lang_score", label_old.alias("old"), label_new.alias("new"),
                        signal_name.alias("signal"), signal_value.alias("value"), old_thr.alias("old_cut"),
                        new_thr.alias("new_cut"), margin.alias("margin"), tok.alias("tokens"))
           .withColumn("k", F.row_number().over(wt)).where(f"k <= {SAMPLES_PER_TRANSITION}"))
in_table = (filter_row or {}).get("input_table") or "documents"
try:
    docs_in = lake.read(in_table, version=(filter_row or {}).get("input_version"))
except Exception:  # that version was vacuumed: the latest one (texts of unchanged documents are the same)
    docs_in = lake.read(in_table)
audit = (docs_in.select("id", snippet("text", 300).alias("text")).join(F.broadcast(samples), "id")
         .orderBy("old", "new", "k"))
print("## Audit samples at the margin")
audit_rows = audit.limit(SAMPLES_PER_TRANSITION * 200).collect()
for t in sorted({(r["old"], r["new"]) for r in audit_rows}):
    print(f"--- {t[0]} -> {t[1]}")
    for r in (x for x in audit_rows if (x["old"], x["new"]) == t):
        if r["signal"]:
            val = "n/a" if r["value"] is None else f"{r['value']:.4g}"
            what = f"{r['signal']}={val}  (cut {r['old_cut']} -> {r['new_cut']})"
        elif (r["new"] if r["new"] != "kept" else r["old"]).startswith("langid:"):  # the language list
            what = f"lang={r['lang']} lang_score=" + ("n/a" if r["lang_score"] is None else f"{r['lang_score']:.3f}")
        else:  # a rule without a threshold (a line with a curly bracket, lorem ipsum, a bad word, empty text)
            what = "(rule without a threshold)"
        print(f"  {r['id']}  [{r['domain']}]  {what}  tokens {r['tokens']}")
        print(f"    text: {r['text']}")
if not audit_rows:
    print("(no document changes its decision)")
if ON_DATABRICKS:
    show(audit, 500)
