"""The two table backends on one lake: tables written by delta-rs open in delta-spark and the other way round,
write folders commit through delta-spark's own transactions, Delta's SQL (history, time travel, OPTIMIZE,
VACUUM) works on the lake's tables, and a conflicting commit is one line naming the table.

Needs the delta-spark JARs (`scripts/install_jars.py`, run by `make setup`); without them the session has no Delta
extension and these tests are skipped with that reason. `LMR_TABLE_BACKEND=delta-rs` runs the rest of the table
tests without the JARs (the Makefile's second pass)."""
import os

import deltalake
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from jobs.tables import Lake, TableError, _delta_conflicts


@pytest.fixture
def native(spark, lake_dir):
    lake = Lake(spark, lake_dir)
    if lake.backend != "delta-spark":
        pytest.skip("no delta-spark JARs on this session's classpath (run scripts/install_jars.py), or "
                    "LMR_TABLE_BACKEND=delta-rs")
    return lake


def _engines(path):
    return [h.get("engineInfo", "") for h in deltalake.DeltaTable(path).history()]


def _write_folder(lake, name, table: pa.Table, mode="append", app_id=None):
    batch_dir, folder = lake.new_write_folder(name)
    os.makedirs(folder)
    pq.write_table(table, os.path.join(folder, "part-00000.parquet"))
    return lake.commit_folder(name, batch_dir, mode, app_id, empty_schema=lambda: table.schema)


def test_tables_of_either_backend_open_and_grow_in_the_other(spark, native, lake_dir):
    rs = Lake(spark, lake_dir, backend="delta-rs")
    rs.write(spark.range(10).withColumn("s", F.col("id").cast("string")), "a")      # delta-rs commit
    _write_folder(native, "a", pa.table({"id": pa.array([10, 11], pa.int64()), "s": ["10", "11"]}))
    native.write(spark.range(12, 15).withColumn("s", F.col("id").cast("string")), "a", mode="append")
    _write_folder(rs, "a", pa.table({"id": pa.array([15], pa.int64()), "s": ["15"]}))
    assert _engines(native.path("a"))[::-1][0].startswith("delta-rs")
    assert sum("Delta-Lake/" in e for e in _engines(native.path("a"))) == 2
    want = [(i, str(i)) for i in range(16)]
    assert sorted(map(tuple, native.read("a").select("id", "s").collect())) == want   # format("delta")
    assert sorted(map(tuple, rs.read("a").select("id", "s").collect())) == want       # delta-rs file list
    pdf = deltalake.DeltaTable(native.path("a")).to_pyarrow_table().to_pandas()
    assert sorted(zip(pdf["id"], pdf["s"])) == want


def test_write_folder_commits_through_delta_spark_with_transaction_and_overwrite(spark, native):
    t = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "text": ["a", "b", "c"]})
    r0 = _write_folder(native, "t", t, mode="overwrite", app_id="run-1")
    assert (r0.version, r0.num_files, r0.num_rows) == (0, 1, 3)
    assert _engines(native.path("t"))[0].startswith("Apache-Spark/") and "Delta-Lake/" in _engines(native.path("t"))[0]
    assert native.txn_version("t", "run-1") == 0 and native.latest_commit_is("t", "run-1")
    assert native.already_written("t", "overwrite", "run-1")
    # an overwrite with another schema replaces content and schema; the old version stays readable
    r1 = _write_folder(native, "t", pa.table({"id": pa.array([9], pa.int64()), "n": pa.array([1], pa.int32())}),
                       mode="overwrite", app_id="run-2")
    assert r1.version == 1 and native.read("t").columns == ["id", "n"] and native.read("t").count() == 1
    assert sorted(r.text for r in native.read("t", version=0).collect()) == ["a", "b", "c"]
    # an append whose columns differ from the table's is refused, naming the table
    with pytest.raises(TableError, match="table 't': the files to append have columns"):
        _write_folder(native, "t", pa.table({"other": ["x"]}))


def test_overwrite_removes_the_files_delta_spark_would(spark, native, monkeypatch):
    """A native overwrite reads the files to remove from the log with delta-rs instead of delta-spark's Spark job
    over the snapshot (filterFiles): the same list, on a table grown by both backends and by Spark's own writer;
    where the shortcut does not hold (here: delta-rs cannot read the log) filterFiles is used, with the same
    result, and a concurrent append still conflicts with the overwrite."""
    from jobs import tables

    rs = Lake(spark, native.root, backend="delta-rs")
    _write_folder(native, "o", pa.table({"id": pa.array([1, 2], pa.int64())}), mode="overwrite")
    native.write(spark.range(3, 6), "o", mode="append")                       # Spark's writer
    _write_folder(rs, "o", pa.table({"id": pa.array([6], pa.int64())}))       # delta-rs commit
    path, log = native.path("o"), spark._jvm.org.apache.spark.sql.delta.DeltaLog
    snap = log.forTable(spark._jsparkSession, path).startTransaction().snapshot()
    theirs = sorted((f.path(), f.size()) for f in snap.allFiles().collectAsList())
    ours = tables._snapshot_removes(path, int(snap.version()), None)
    assert len(theirs) >= 3 and sorted((r["path"], r["size"]) for r in ours) == theirs
    r = _write_folder(native, "o", pa.table({"id": pa.array([7, 8], pa.int64())}), mode="overwrite")
    assert sorted(x.id for x in native.read("o").collect()) == [7, 8] == sorted(rs.read_arrow("o")["id"].to_pylist())
    monkeypatch.setattr(tables, "_snapshot_removes", lambda *a: None)        # delta-spark's own list
    _write_folder(native, "o", pa.table({"id": pa.array([9], pa.int64())}), mode="overwrite")
    assert [x.id for x in native.read("o").collect()] == [9] and native.version("o") == r.version + 1
    monkeypatch.undo()
    # a commit between the overwrite's snapshot and its commit: a conflict, as with filterFiles
    real = tables._snapshot_removes

    def racing(*a):
        _write_folder(rs, "o", pa.table({"id": pa.array([10], pa.int64())}))
        return real(*a)

    monkeypatch.setattr(tables, "_snapshot_removes", racing)
    with pytest.raises(TableError, match="'o'"):
        _write_folder(native, "o", pa.table({"id": pa.array([11], pa.int64())}), mode="overwrite")
    assert sorted(x.id for x in native.read("o").collect()) == [9, 10]


def test_delta_sql_on_lake_tables_history_time_travel_optimize_vacuum(spark, native):
    for i in range(3):
        native.write(spark.range(i * 10, i * 10 + 10).repartition(3), "h", mode="append")
    path = native.path("h")
    hist = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").orderBy("version").collect()
    assert [h.version for h in hist] == [0, 1, 2] and {h.operation for h in hist} == {"WRITE"}
    assert spark.read.format("delta").option("versionAsOf", 1).load(path).count() == 20
    files_before = len(native.files("h"))
    spark.sql(f"OPTIMIZE delta.`{path}`").collect()
    assert len(native.files("h")) < files_before and native.read("h").count() == 30
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    try:
        spark.sql(f"VACUUM delta.`{path}` RETAIN 0 HOURS").collect()
    finally:
        spark.conf.unset("spark.databricks.delta.retentionDurationCheck.enabled")
    on_disk = sum(f.endswith(".parquet") for d, _, fs in os.walk(path) if "_delta_log" not in d for f in fs)
    assert on_disk == len(native.files("h"))
    assert deltalake.DeltaTable(path).to_pyarrow_table().num_rows == 30  # delta-rs still reads it


def test_a_conflicting_commit_is_one_line_naming_the_table(spark, native):
    native.write(spark.range(5), "c")
    jvm = spark._jvm
    # a transaction that read the table's files, then another writer overwrites it before that one commits
    txn = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, native.path("c")).startTransaction()
    conv = jvm.scala.jdk.javaapi.CollectionConverters
    removes = jvm.java.util.ArrayList()
    for f in conv.asJava(txn.filterFiles()):
        removes.add(f.remove())
    _write_folder(native, "c", pa.table({"id": pa.array([7], pa.int64())}), mode="overwrite")
    none = jvm.scala.Option.empty()
    op = jvm.org.apache.spark.sql.delta.DeltaOperations.Write(jvm.org.apache.spark.sql.SaveMode.Overwrite,
                                                              none, none, none, none, none, none, none, none)
    with pytest.raises(TableError) as err:
        with _delta_conflicts("c"):
            txn.commit(conv.asScala(removes).toList(), op)
    msg = str(err.value)
    assert msg.startswith("table 'c': another writer committed to it during this write (Concurrent")
    assert "\n" not in msg and "run the stage again" in msg
    assert [r.id for r in native.read("c").collect()] == [7]


def test_tables_of_either_backend_open_in_polars_and_duckdb(spark, native, lake_dir):
    import duckdb
    import polars as pl

    rs = Lake(spark, lake_dir, backend="delta-rs")
    rs.write(spark.range(6).withColumn("s", F.col("id").cast("string")), "by_rs")
    native.write(spark.range(6).withColumn("s", F.col("id").cast("string")), "by_spark")
    _write_folder(native, "by_spark", pa.table({"id": pa.array([6], pa.int64()), "s": ["6"]}))  # a delta-spark txn
    for name, n in (("by_rs", 6), ("by_spark", 7)):
        path = native.path(name)
        got = pl.read_delta(path).sort("id")
        assert got["id"].to_list() == list(range(n)) and got["s"].to_list() == [str(i) for i in range(n)]
        # DuckDB over delta-rs' snapshot (its Arrow dataset): the committed files only, no extension download
        con = duckdb.connect()
        con.register("t", deltalake.DeltaTable(path).to_pyarrow_dataset())
        assert con.execute("select count(*), sum(id), max(s) from t").fetchone() == (n, sum(range(n)), str(n - 1))
