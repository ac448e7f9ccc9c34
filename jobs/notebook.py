"""What every notebook in notebooks/ starts with: the lake, a SparkSession and a `show` that suits where it runs.

On Databricks the lake path comes from the `lake` widget and `spark` / `display` are the notebook's own; run as plain
Python, the path comes from env LMR_LAKE (default ./lake) and a local session is started (jobs/session.py).
"""
from __future__ import annotations

import os


def open_lake(namespace: dict):
    """(lake, spark, show) for a notebook whose globals() are `namespace`."""
    from jobs.tables import Lake

    dbutils = namespace.get("dbutils")
    if dbutils is not None:
        dbutils.widgets.text("lake", "./lake")
        path, spark, display = dbutils.widgets.get("lake"), namespace["spark"], namespace["display"]

        def show(df, n=20, truncate=100):
            display(df.limit(n))
    else:
        from jobs.session import get_spark

        path, spark = os.environ.get("LMR_LAKE", "./lake"), get_spark("lmrefinery-notebook")

        def show(df, n=20, truncate=100):
            df.show(n, truncate=truncate)
    lake = Lake(spark, path)
    print(f"lake: {lake.root}")
    return lake, spark, show


def snippet(col, chars=160):
    """First `chars` characters with whitespace runs collapsed, so a table row stays one line."""
    from pyspark.sql import functions as F

    return F.regexp_replace(F.substring(col, 1, chars), r"\s+", " ")
