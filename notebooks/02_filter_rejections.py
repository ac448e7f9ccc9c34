# Databricks notebook source
# MAGIC %md
# MAGIC # 02 · Filter rejections
# MAGIC Why the `filter` stage dropped documents: counts per reason, documents and tokens in and out per domain and
# MAGIC per source with the top reasons of each domain, the quality signals of rejected documents side by side with
# MAGIC those of kept documents, and a few rejected documents per reason next to their signals.
# MAGIC
# MAGIC Reasons are `langid:<lang>`, `langid:low_score`, `<quality filter>:<rule>` (udfs/quality.py) and
# MAGIC `classifier:low_score`: the first rule that failed. To see what other thresholds would keep or drop, see
# MAGIC notebooks/05_threshold_tuning.py.
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

from pyspark.sql import functions as F  # noqa: E402

from jobs.notebook import open_lake, snippet  # noqa: E402

lake, spark, show = open_lake(globals())
ON_DATABRICKS = "dbutils" in globals()

# COMMAND ----------

# MAGIC %md
# MAGIC ## Rejected documents per reason

# COMMAND ----------

kept = lake.read("filtered")
rejected = lake.read("rejected")
n_kept, n_rej = kept.count(), rejected.count()
print("## Rejected documents per reason")
print(f"documents in: {n_kept + n_rej}  kept: {n_kept}  rejected: {n_rej}")
per_reason = (rejected.groupBy("reason")
              .agg(F.count(F.lit(1)).alias("documents"), F.sum("n_tokens_est").alias("tokens_est"),
                   F.round(F.avg("lang_score"), 3).alias("avg_lang_score"))
              .withColumn("share_of_input", F.round(F.col("documents") / F.lit(max(n_kept + n_rej, 1)), 4))
              .withColumn("step", F.split("reason", ":").getItem(0))
              .orderBy(F.desc("documents"), "reason"))
show(per_reason, 100)
per_step = per_reason.groupBy("step").agg(F.sum("documents").alias("documents")).orderBy(F.desc("documents"), "step")
print("## Rejected documents per filter step")
show(per_step)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Per domain and per source
# MAGIC From the filter's signals table (`filter_signals`, one row per input document): documents and tokens in and
# MAGIC kept per domain and per source (tokens in: the raw text, tokens out: the line-cleaned text that `filtered`
# MAGIC holds), marked `LOUD` where more than half the documents were lost, and the top 5 reasons per domain with
# MAGIC the rest grouped as `other (N reasons)`.

# COMMAND ----------

from pyspark.sql import Window  # noqa: E402

filter_rows = ([r for r in lake.read_arrow("metrics").to_pylist() if r["stage"] == "filter"]
               if lake.exists("metrics") else [])
filter_row = max(filter_rows, key=lambda r: r["started_at"]) if filter_rows else None
filter_extra = json.loads(filter_row["extra"] or "{}") if filter_row else {}
signals_name = filter_extra.get("signals_table") or "filter_signals"
if lake.exists(signals_name):
    sig = lake.read(signals_name, version=dict(filter_row["outputs"] or []).get(signals_name) if filter_row else None)
    for key in ("domain", "source"):
        per_key = (sig.groupBy(key)
                   .agg(F.count(F.lit(1)).alias("docs_in"), F.sum(F.col("kept").cast("int")).alias("docs_out"),
                        F.sum("n_tokens_raw").alias("tokens_in"),
                        F.coalesce(F.sum(F.when(F.col("kept"), F.col("n_tokens_clean"))), F.lit(0)).alias("tokens_out"))
                   .withColumn("doc_acceptance", F.round(F.col("docs_out") / F.col("docs_in"), 4))
                   .withColumn("token_acceptance", F.round(F.col("tokens_out") / F.col("tokens_in"), 4))
                   .withColumn("loss", F.when(F.col("docs_out") < F.col("docs_in") / 2, F.lit("LOUD")).otherwise(""))
                   .orderBy(F.desc("docs_in"), key))
        print(f"## Per {key}: documents and tokens in -> out")
        show(per_key, 200)
    for line in filter_extra.get("loud_losses") or []:
        print(f"loud loss: {line}")
    wr = Window.partitionBy("domain").orderBy(F.desc("documents"), "reason")
    ranked = (sig.where(~F.col("kept")).groupBy("domain", "reason").agg(F.count(F.lit(1)).alias("documents"))
              .withColumn("rank", F.row_number().over(wr)))
    top_per_domain = (ranked.withColumn("group", F.when(F.col("rank") <= 5, F.col("rank")).otherwise(F.lit(6)))
                      .groupBy("domain", "group")
                      .agg(F.sum("documents").alias("documents"), F.count(F.lit(1)).alias("n"),
                           F.first("reason").alias("first_reason"))
                      .withColumn("reason", F.when(F.col("group") <= 5, F.col("first_reason"))
                                  .otherwise(F.concat(F.lit("other ("), F.col("n").cast("string"),
                                                      F.lit(" reasons)"))))
                      .orderBy("domain", "group").select("domain", "reason", "documents"))  # "other" last
    print("## Top reasons per domain")
    show(top_per_domain, 200, truncate=60)
else:
    print(f"## Per domain and per source\nno {signals_name} table in this lake (the filter ran before it was added)")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Signals: kept vs rejected, side by side
# MAGIC Median of every quality signal among kept documents and among the documents of each of the most frequent
# MAGIC quality reasons (blank: that signal was not measured before the rule failed).

# COMMAND ----------

TOP_REASONS = 6
signals_long = (kept.select(F.lit("kept").alias("group"), F.explode("quality_signals").alias("signal", "value"))
                .unionByName(rejected.where(F.size("quality_signals") > 0)
                             .select(F.col("reason").alias("group"),
                                     F.explode("quality_signals").alias("signal", "value"))))
top = [r["reason"] for r in per_reason.where(F.col("step") != "langid").limit(TOP_REASONS).collect()]
side_by_side = (signals_long.where(F.col("group").isin(["kept", *top]))
                .groupBy("signal").pivot("group", ["kept", *top])
                .agg(F.round(F.percentile_approx("value", 0.5), 4))
                .orderBy("signal"))
print("## Signals: kept vs rejected (median)")
print("columns: kept, " + ", ".join(top))
show(side_by_side, 100, truncate=30)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Rejected documents with their signals
# MAGIC The three smallest ids per reason: text (first characters) next to the language score and signals.

# COMMAND ----------

w = Window.partitionBy("reason").orderBy("id")
signal_str = F.array_join(F.transform(F.sort_array(F.map_entries("quality_signals")),
                                      lambda e: F.concat(e["key"], F.lit("="),
                                                         F.format_number(e["value"], 3))), ", ")
examples = (rejected.withColumn("k", F.row_number().over(w)).where("k <= 3")
            .select("reason", "id", "lang", F.round("lang_score", 3).alias("lang_score"),
                    snippet("text", 120).alias("text"), signal_str.alias("signals"))
            .orderBy("reason", "id"))
print("## Rejected documents with their signals")
rows = examples.collect()
for reason in sorted({r["reason"] for r in rows}):
    print(f"--- {reason}")
    for r in (x for x in rows if x["reason"] == reason):
        print(f"  {r['id']}  [lang {r['lang']} {r['lang_score']}]")
        print(f"    text:    {r['text']}")
        print(f"    signals: {r['signals'] or '(none measured)'}")
if ON_DATABRICKS:
    show(examples, 300)
