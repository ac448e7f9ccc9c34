# Databricks notebook source
# MAGIC %md
# MAGIC # 02 · Filter rejections
# MAGIC Why the `filter` stage dropped documents: counts per reason, the quality signals of rejected documents side
# MAGIC by side with those of kept documents, and a few rejected documents per reason next to their signals.
# MAGIC
# MAGIC Reasons are `langid:<lang>`, `langid:low_score`, `<quality filter>:<rule>` (udfs/quality.py; signals are
# MAGIC measured up to the failing rule only) and `classifier:low_score`.
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

from pyspark.sql import Window  # noqa: E402

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
