"""SparkSession creation shared by every job.

Embedded default: `local[*]`, settings from conf/spark.yaml. Under `spark-submit` the master and any
`--conf` given there win, because `getOrCreate` keeps what the submitter configured.
"""
from __future__ import annotations

import os
import sys
import tempfile
import zipfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Settings every session needs for the tables to be standard Delta/Parquet and the output deterministic.
REQUIRED_CONF = {
    # delta-rs and other readers reject INT96 timestamps
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # no _SUCCESS markers inside Delta table folders
    "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
    # no _metadata / _common_metadata summary files (the older parquet.enable.summary-metadata key is deprecated
    # and makes Parquet log a warning for every write task)
    "spark.hadoop.parquet.summary.metadata.level": "NONE",
    "spark.sql.parquet.compression.codec": "zstd",
}


def _ensure_python_path() -> None:
    """Executors unpickle functions from `udfs`/`jobs` by module name, so they must find the repo."""
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if REPO_ROOT not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([REPO_ROOT] + [p for p in paths if p])
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


def load_spark_conf(path: str | None = None) -> dict:
    import yaml

    path = path or os.path.join(REPO_ROOT, "conf", "spark.yaml")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    return {str(k): str(v) for k, v in (data.get("conf") or {}).items()}


JARS_DIR = os.environ.get("LMR_JARS_DIR", os.path.join(REPO_ROOT, ".cache", "jars"))
DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"


def read_jars_lock(path: str | None = None) -> list[tuple[str, str, str, str]]:
    """(group, artifact, version, sha256) of each JAR in conf/jars.lock (scripts/install_jars.py fetches them)."""
    path = path or os.path.join(REPO_ROOT, "conf", "jars.lock")
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            try:
                coord, sha = line.split()
                group, artifact, version = coord.split(":")
            except ValueError:
                raise ValueError(f"{path}:{n}: expected 'group:artifact:version sha256'") from None
            out.append((group, artifact, version, sha.lower()))
    return out


def _locked_jars(delta: bool) -> list[str]:
    """The JARs of conf/jars.lock that scripts/install_jars.py put in `.cache/jars`: Delta's (group io.delta) or
    the S3A connector's (hadoop-aws and the AWS SDK modules it uses); all of the kind, or none."""
    if not os.path.exists(os.path.join(REPO_ROOT, "conf", "jars.lock")):
        return []
    names = [os.path.join(JARS_DIR, f"{artifact}-{version}.jar") for group, artifact, version, _ in read_jars_lock()
             if (group == "io.delta") == delta]
    return names if names and all(os.path.exists(p) for p in names) else []


def delta_jars() -> list[str]:
    return _locked_jars(True)


def s3a_jars() -> list[str]:
    return _locked_jars(False)


def _add_jars(merged: dict, jars: list[str]) -> str:
    given = [j for j in merged.get("spark.jars", "").split(",") if j]
    return ",".join(given + [j for j in jars if j not in given])


def s3_conf(merged: dict) -> dict:
    """Spark's side of an `s3://` / `s3a://` lake or input, where the S3A JARs are installed: Hadoop's S3A
    filesystem for both schemes, and an S3-compatible server from `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`
    (path-style addressing, TLS as its URL says). Credentials are left to S3A's default chain (the AWS
    environment variables, a profile, an instance role) and never put in the conf. Settings the user gave win;
    under spark-submit the cluster's own conf decides (EMR's s3:// is EMRFS)."""
    jars = s3a_jars()
    if not jars or _launched_by_spark_submit():
        return {}
    from jobs import storage

    out = {"spark.jars": _add_jars(merged, jars), "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem"}
    ep = storage.endpoint()
    if ep:
        out.update({"spark.hadoop.fs.s3a.endpoint": ep, "spark.hadoop.fs.s3a.path.style.access": "true",
                    "spark.hadoop.fs.s3a.connection.ssl.enabled": str(ep.startswith("https://")).lower()})
    if storage.region():
        out["spark.hadoop.fs.s3a.endpoint.region"] = storage.region()
    return {k: (merged[k] if k in merged and k != "spark.jars" else v) for k, v in out.items()}


def delta_conf(merged: dict) -> dict:
    """The native Delta backend's settings, where the JARs are installed and `LMR_TABLE_BACKEND` is not delta-rs:
    the JARs on the classpath, Delta's SQL extension and catalog (so `format("delta")`, `DESCRIBE HISTORY`,
    `OPTIMIZE` and `VACUUM` work), and a snapshot of the log in few partitions (the default, 50, costs 50 tasks
    each time a small local table's state is rebuilt). Settings the user gave win."""
    if os.environ.get("LMR_TABLE_BACKEND", "auto") == "delta-rs" or _launched_by_spark_submit():
        return {}  # under spark-submit the submitter's --jars / --packages and --conf decide (docs/cluster.md)
    jars = delta_jars()
    if not jars:
        return {}
    exts = [e for e in merged.get("spark.sql.extensions", "").split(",") if e]
    return {
        "spark.jars": _add_jars(merged, jars),
        "spark.sql.extensions": ",".join(exts + ([DELTA_EXTENSION] if DELTA_EXTENSION not in exts else [])),
        "spark.sql.catalog.spark_catalog": merged.get("spark.sql.catalog.spark_catalog",
                                                      "org.apache.spark.sql.delta.catalog.DeltaCatalog"),
        "spark.databricks.delta.snapshotPartitions": merged.get("spark.databricks.delta.snapshotPartitions", "2"),
    }


def _ship_code(spark) -> None:
    """On a real cluster ship udfs/ and jobs/ as a zip (spark-submit --py-files does the same)."""
    master = spark.sparkContext.master
    if master.startswith("local"):
        return
    # a unique file name: Spark refuses a second file of the same name (e.g. a spark-submit --py-files zip)
    zdir = tempfile.mkdtemp(prefix="lmrefinery-code-")
    zpath = os.path.join(zdir, f"{os.path.basename(zdir)}.zip")
    with zipfile.ZipFile(zpath, "w") as zf:
        for pkg in ("udfs", "jobs"):
            for dirpath, _, files in os.walk(os.path.join(REPO_ROOT, pkg)):
                for fn in files:
                    if fn.endswith(".py"):
                        full = os.path.join(dirpath, fn)
                        zf.write(full, os.path.relpath(full, REPO_ROOT))
    spark.sparkContext.addPyFile(zpath)


def get_spark(app_name: str = "lmrefinery", master: str | None = None, conf: dict | None = None):
    """Return the active SparkSession or build one (default `local[*]`)."""
    _ensure_python_path()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName(app_name)
    # spark-submit sets spark.master in the JVM conf; only default it when launched as plain python
    if not master:
        master = os.environ["SPARK_MASTER"] if "SPARK_MASTER" in os.environ else (
            None if _launched_by_spark_submit() else "local[*]")
    if master:
        builder = builder.master(master)
    merged = {**load_spark_conf(), **(conf or {}), **REQUIRED_CONF}
    if master and master.startswith("local"):
        # workers forked from a daemon that has done the kernels' start-up (jobs/worker_daemon.py); the workers
        # of a local master find the repo on PYTHONPATH (_ensure_python_path), a cluster's only once told so
        merged.setdefault("spark.python.daemon.module", "jobs.worker_daemon")
    merged.update(delta_conf(merged))
    merged.update(s3_conf(merged))
    if os.environ.get("LMR_SPARK_PROGRESS", "") not in ("", "0", "false"):
        merged["spark.ui.showConsoleProgress"] = "true"  # Spark's console progress bar, off by default
    if os.environ.get("LMR_SPARK_NOISE", "") in ("", "0", "false"):
        # conf/log4j2.properties: Spark's warnings without the known-noise ones (loopback hostname, no native
        # Hadoop, truncated plan strings); LMR_SPARK_NOISE=1 keeps Spark's default logging
        opt = f"-Dlog4j2.configurationFile=file:{os.path.join(REPO_ROOT, 'conf', 'log4j2.properties')}"
        java_opts = merged.get("spark.driver.extraJavaOptions", "")
        if "log4j2.configurationFile" not in java_opts:
            merged["spark.driver.extraJavaOptions"] = f"{java_opts} {opt}".strip()
    for k, v in merged.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("LMR_SPARK_LOG_LEVEL", "WARN"))
    _ship_code(spark)
    return spark


def _launched_by_spark_submit() -> bool:
    return "PYSPARK_GATEWAY_PORT" in os.environ or "SPARK_SUBMIT_OPTS" in os.environ
