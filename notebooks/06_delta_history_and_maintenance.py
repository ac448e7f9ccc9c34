# Databricks notebook source
# MAGIC %md
# MAGIC # 06 · Delta history, time travel and maintenance
# MAGIC Every table of the lake is a Delta table: Spark reads it with `format("delta")`, its log says which run wrote
# MAGIC each version (`DESCRIBE HISTORY`), any version can be read again (`versionAsOf`), and Delta's own `OPTIMIZE`
# MAGIC and `VACUUM` keep it tidy. The SQL cells need delta-spark (on Databricks it is built in; locally `make setup`
# MAGIC fetches its JARs); with the delta-rs backend the same history comes from `deltalake.DeltaTable`.
# MAGIC
# MAGIC On Databricks set the `lake` widget; as plain Python set `LMR_LAKE` (default `./lake`):
# MAGIC `LMR_LAKE=./lake python notebooks/06_delta_history_and_maintenance.py`

# COMMAND ----------

import os
import sys

try:
    REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
except NameError:  # Databricks Repos run a notebook with its own folder as working directory
    REPO = os.path.dirname(os.getcwd())
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from pyspark.sql import functions as F  # noqa: E402

from jobs.notebook import open_lake  # noqa: E402

lake, spark, show = open_lake(globals())
native = lake.backend == "delta-spark"
print(f"table backend: {lake.backend}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Reading a table with `format("delta")`
# MAGIC The stage tables are plain Delta tables at `<lake>/<name>`, so any Delta reader opens them: Spark, delta-rs,
# MAGIC Polars (`pl.read_delta`), DuckDB (over delta-rs' Arrow dataset).

# COMMAND ----------

path = lake.path("documents")
docs = spark.read.format("delta").load(path) if native else lake.read("documents")
print(f"documents: {docs.count()} rows at {path}")
show(docs.groupBy("domain").count().orderBy("domain"))

# COMMAND ----------

# MAGIC %md
# MAGIC ## `DESCRIBE HISTORY`: who wrote each version
# MAGIC The `metrics` table gets one append per stage run, so its history is the run log. Each commit names the
# MAGIC engine that wrote it (`engineInfo`) and carries the run's application transaction: Spark's writer puts it in
# MAGIC `userMetadata`, which `DESCRIBE HISTORY` shows; commits written by delta-rs keep it in the commit's tags
# MAGIC (`lmrefinery.app_id`), which delta-rs' `history()` shows (open-source Delta's `DESCRIBE HISTORY` has no
# MAGIC tags column).

# COMMAND ----------

metrics_path = lake.path("metrics")
if native:
    hist = spark.sql(f"DESCRIBE HISTORY delta.`{metrics_path}`")
    show(hist.select("version", "timestamp", "operation", "operationParameters.mode", "engineInfo",
                     F.col("userMetadata").alias("app_id"))
         .orderBy("version"), 50)
    span = hist.agg(F.min("version").alias("first"), F.max("version").alias("last"), F.count(F.lit(1)).alias("n"))
    first, last, n_versions = span.first()
else:
    rows = lake._dt("metrics").history()
    for h in sorted(rows, key=lambda h: h["version"]):
        print(h["version"], h.get("operation"), h.get("engineInfo", ""), h.get("lmrefinery.app_id", ""))
    first, last, n_versions = min(h["version"] for h in rows), max(h["version"] for h in rows), len(rows)
print(f"metrics: {n_versions} versions, {first}..{last}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Time travel: a table as an earlier version saw it
# MAGIC `versionAsOf` (or `timestampAsOf`) reads an old snapshot; a stage records the input version it read, so a
# MAGIC run can be redone on exactly the data it saw. Old versions stay readable until `VACUUM` removes their files.

# COMMAND ----------

if native:
    old = spark.read.format("delta").option("versionAsOf", first).load(metrics_path)
    new = spark.read.format("delta").load(metrics_path)
else:
    old, new = lake.read("metrics", version=first), lake.read("metrics")
print(f"metrics at version {first}: {old.count()} rows; at version {last}: {new.count()} rows")
show(old.select("stage", "run_id", "docs_in", "docs_out"))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Maintenance: `OPTIMIZE` and `VACUUM`
# MAGIC `OPTIMIZE` rewrites many small files into few (the metrics table has one file per stage run). It changes no
# MAGIC row (`dataChange=false`): readers and the runner's idempotence see the same table.
# MAGIC
# MAGIC `VACUUM` deletes files that no version younger than the retention period still needs. The default retention is
# MAGIC 7 days (`delta.deletedFileRetentionDuration`); shorter is refused unless
# MAGIC `spark.databricks.delta.retentionDurationCheck.enabled=false`, because a reader or a time-travel query of an
# MAGIC older version would lose its files. `DRY RUN` lists what would go. (`jobs/vacuum.py` is another thing: it removes
# MAGIC the uncommitted write folders of dead runs, which no version references.)

# COMMAND ----------

if native:
    files_before = len(lake.files("metrics"))
    opt = spark.sql(f"OPTIMIZE delta.`{metrics_path}`").select("metrics.numFilesAdded", "metrics.numFilesRemoved")
    show(opt)
    print(f"metrics: {files_before} data files before OPTIMIZE, {len(lake.files('metrics'))} after; "
          f"{spark.read.format('delta').load(metrics_path).count()} rows")
    dry = spark.sql(f"VACUUM delta.`{metrics_path}` RETAIN 168 HOURS DRY RUN")
    print(f"VACUUM RETAIN 168 HOURS DRY RUN would delete {dry.count()} files (those replaced more than 7 days ago)")
else:
    print("OPTIMIZE / VACUUM: delta-rs has DeltaTable.optimize.compact() and DeltaTable.vacuum(); "
          "with delta-spark the SQL above runs")
