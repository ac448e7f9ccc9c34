# Databricks notebook source
# MAGIC %md
# MAGIC # 03 · Duplicate clusters
# MAGIC What the `dedup` stage removed: cluster sizes, and the largest clusters with the kept text next to each removed
# MAGIC text (`duplicates` joined to `deduped` on `kept_id`), with their word 5-gram Jaccard similarity.
# MAGIC
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

# COMMAND ----------

# MAGIC %md
# MAGIC ## Duplicates per method and cluster sizes
# MAGIC A cluster is a survivor (`kept_id`, in `deduped`) plus the documents removed in its favour.

# COMMAND ----------

dups = lake.read("duplicates")
deduped = lake.read("deduped")
print("## Duplicates per method")
print(f"kept: {deduped.count()}  removed: {dups.count()}")
show(dups.groupBy("method").agg(F.count(F.lit(1)).alias("documents"), F.sum("n_tokens_est").alias("tokens_est"))
     .orderBy("method"))

clusters = (dups.groupBy("kept_id", "cluster_id")
            .agg((F.count(F.lit(1)) + 1).alias("size"), F.collect_set("method").alias("methods")))
print("## Cluster sizes")
print(f"clusters: {clusters.count()}")
show(clusters.groupBy("size").agg(F.count(F.lit(1)).alias("clusters")).orderBy("size"), 50)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Clusters side by side: kept vs removed
# MAGIC The largest clusters first (ties by cluster id); each row is one removed document next to its survivor.

# COMMAND ----------

TOP_CLUSTERS = 5
top = clusters.orderBy(F.desc("size"), "cluster_id").limit(TOP_CLUSTERS)
pairs = (dups.select(F.col("id").alias("removed_id"), "kept_id", "method", F.col("text").alias("removed_text"))
         .join(top, "kept_id")
         .join(deduped.select(F.col("id").alias("kept_id"), F.col("text").alias("kept_text")), "kept_id", "left")
         .orderBy(F.desc("size"), "cluster_id", "removed_id"))
show(pairs.select("cluster_id", "size", "method", "kept_id", snippet("kept_text", 70).alias("kept"), "removed_id",
                  snippet("removed_text", 70).alias("removed")), 50, truncate=70)

import textwrap  # noqa: E402

from udfs.normalise import jaccard  # noqa: E402

print("## Clusters side by side: kept vs removed")
COL = 60
for r in pairs.limit(12).collect():
    sim = jaccard(r["kept_text"], r["removed_text"], n=5)
    print(f"--- cluster {r['cluster_id']} (size {r['size']}, {r['method']}, jaccard {sim:.3f})")
    print(f"{'KEPT ' + r['kept_id']:<{COL}} | REMOVED {r['removed_id']}")
    left = textwrap.wrap(" ".join((r["kept_text"] or "").split())[:400], COL)
    right = textwrap.wrap(" ".join((r["removed_text"] or "").split())[:400], COL)
    for i in range(max(len(left), len(right))):
        print(f"{(left[i] if i < len(left) else ''):<{COL}} | {right[i] if i < len(right) else ''}")
