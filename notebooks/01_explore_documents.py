# Databricks notebook source
# MAGIC %md
# MAGIC # 01 · Explore documents
# MAGIC What ingest produced: documents per source and domain, a few samples per domain, and the quarantine
# MAGIC (records that failed validation) per reason with samples of the raw payload.
# MAGIC
# MAGIC On Databricks set the `lake` widget; as plain Python set `LMR_LAKE` (default `./lake`):
# MAGIC `LMR_LAKE=./lake python notebooks/01_explore_documents.py`

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

# COMMAND ----------

# MAGIC %md
# MAGIC ## Documents per source and domain

# COMMAND ----------

docs = lake.read("documents")
per_source = (docs.groupBy("domain", "source")
              .agg(F.count(F.lit(1)).alias("documents"), F.sum("n_bytes").alias("bytes"),
                   F.sum("n_tokens_est").alias("tokens_est"),
                   F.round(F.avg("n_bytes"), 1).alias("avg_bytes"), F.max("n_bytes").alias("max_bytes"))
              .orderBy("domain", "source"))
totals = docs.agg(F.count(F.lit(1)).alias("d"), F.sum("n_tokens_est").alias("t"), F.sum("n_bytes").alias("b")).first()
print("## Documents per source and domain")
print(f"documents: {totals['d']}  tokens_est: {totals['t']}  bytes: {totals['b']}")
show(per_source, 50)

per_domain = (docs.groupBy("domain")
              .agg(F.count(F.lit(1)).alias("documents"), F.sum("n_tokens_est").alias("tokens_est"))
              .withColumn("token_share", F.round(F.col("tokens_est") / F.lit(totals["t"] or 1), 4))
              .orderBy("domain"))
print("## Documents per domain")
show(per_domain)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Samples per domain
# MAGIC The three smallest ids of each domain (deterministic), first characters of the text.

# COMMAND ----------

from pyspark.sql import Window  # noqa: E402

w = Window.partitionBy("domain").orderBy("id")
samples = (docs.withColumn("k", F.row_number().over(w)).where("k <= 3")
           .select("domain", "id", "n_bytes", snippet("text").alias("text"))
           .orderBy("domain", "id"))
print("## Samples per domain")
show(samples, 60)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Quarantine per reason
# MAGIC Records ingest could not turn into documents; `raw` keeps the payload (truncated), `detail` the cause.
# MAGIC Payloads that are not valid UTF-8 are shown with U+FFFD in place of the bad bytes.

# COMMAND ----------

print("## Quarantine per reason")
if lake.exists("quarantine"):
    q = lake.read("quarantine")
    q_reasons = q.groupBy("reason").agg(F.count(F.lit(1)).alias("records"),
                                        F.countDistinct("source").alias("sources")).orderBy(F.desc("records"), "reason")
    print(f"quarantined: {q.count()}")
    show(q_reasons, 50)
    wq = Window.partitionBy("reason").orderBy("quarantine_id")
    q_samples = (q.withColumn("k", F.row_number().over(wq)).where("k <= 2")
                 .select("reason", "source", F.col("trace.file").alias("file"), F.col("trace.line").alias("line"),
                         "detail", snippet(F.make_valid_utf8(F.col("raw").cast("string")), 100).alias("raw"))
                 .orderBy("reason", "source", "file", "line"))
    print("## Quarantine samples")
    show(q_samples, 60)
else:
    print("quarantined: 0 (no quarantine table)")
