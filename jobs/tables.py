"""The lake: Delta tables by fixed name under one root, read and written through one interface.

Two implementations, chosen at start-up (`LMR_TABLE_BACKEND=auto|delta-spark|delta-rs`):

* **delta-spark** when the Delta extension is on the session (`spark.sql.extensions`), e.g. on Databricks or with
  the delta-spark JARs on the classpath: plain `format("delta")`.
* **delta-rs** otherwise: executors write Parquet files into a fresh folder inside the table, then the driver
  commits them to the Delta log as `AddAction`s in one atomic transaction with the `deltalake` package.
  Files of a write that never committed (a crash) are not in the log, so no reader sees them.

Either way a write can carry an application transaction `(app_id, version)`: when the table already holds that
transaction the write is skipped, which makes a re-run of a finished stage a no-op instead of a second append.
Reads always go through the snapshot's file list (`file_uris()`), never a folder glob, which would also return
removed and uncommitted files.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import time
import uuid
from dataclasses import dataclass

import pyarrow.parquet as pq

from jobs import storage
from udfs.common import UserError


class TableError(UserError):
    """A table is missing or cannot be read/written; the message is one line for the user."""


@dataclass
class WriteResult:
    table: str
    version: int
    skipped: bool  # True when the app transaction was already committed
    num_files: int
    num_rows: int
    seconds_data: float = 0.0    # writing the data files (the Spark job)
    seconds_commit: float = 0.0  # the Delta commit after it (delta-rs backend; native commits are in seconds_data)


def _delta_rs():
    import deltalake

    return deltalake


def _native_delta_available(spark) -> bool:
    exts = spark.conf.get("spark.sql.extensions", "") or ""
    if "DeltaSparkSessionExtension" not in exts:
        return False
    try:
        # through Spark's class loader, which holds the JARs of spark.jars (java.lang.Class.forName does not)
        spark.sparkContext._jvm.org.apache.spark.util.Utils.classForName(
            "io.delta.sql.DeltaSparkSessionExtension", True, False)
        return True
    except Exception:
        return False


class Lake:
    """Tables under `root`, e.g. `Lake(spark, "./lake").read("documents")`."""

    def __init__(self, spark, root: str, backend: str | None = None):
        self.spark = spark
        self.root = storage.normalise(root)  # a local folder, or s3://bucket/prefix (jobs/storage.py)
        self.storage_options = storage.delta_storage_options(self.root)
        if not storage.is_remote(self.root) and os.path.exists(self.root) and not os.path.isdir(self.root):
            raise TableError(f"lake {self.root} is a file, not a folder (--lake names the folder of the tables)")
        backend = backend or os.environ.get("LMR_TABLE_BACKEND", "auto")
        if backend == "auto":
            backend = "delta-spark" if (spark is not None and _native_delta_available(spark)) else "delta-rs"
        if backend not in ("delta-spark", "delta-rs"):
            raise TableError(f"unknown table backend {backend!r} (use auto, delta-spark or delta-rs)")
        self.backend = backend

    # ---- metadata -------------------------------------------------------------------------------------------
    def path(self, name: str) -> str:
        """The folder of table `name`; only plain names, so that nothing is ever written outside the lake."""
        check_table_name(name)
        return storage.join(self.root, name)

    def exists(self, name: str) -> bool:
        try:
            return _delta_rs().DeltaTable.is_deltatable(self.path(name), storage_options=self.storage_options)
        except TableError:
            raise
        except Exception as e:  # noqa: BLE001 - delta-rs reports a broken log here too
            raise TableError(_log_error(self.path(name), name, e)) from None

    def _dt(self, name: str, version: int | None = None):
        if not self.exists(name):
            raise TableError(f"table '{name}' not found under lake {self.root} (run the stage that writes it first)")
        try:
            dt = _delta_rs().DeltaTable(self.path(name), storage_options=self.storage_options)
            if version is not None:
                dt.load_as_version(version)
        except Exception as e:  # noqa: BLE001
            raise TableError(_log_error(self.path(name), name, e)) from None
        return dt

    def version(self, name: str) -> int | None:
        return self._dt(name).version() if self.exists(name) else None

    def txn_version(self, name: str, app_id: str) -> int | None:
        if not self.exists(name):
            return None
        return self._dt(name).transaction_version(app_id)

    def files(self, name: str, version: int | None = None) -> list[str]:
        return list(self._dt(name, version).file_uris())

    def size(self, name: str, version: int | None = None) -> tuple[int, int | None]:
        """(bytes of the snapshot's data files, records or None where a file has no row count in the log)."""
        import pyarrow as pa

        adds = pa.table(self._dt(name, version).get_add_actions(flatten=True))
        nbytes = int(pa.compute.sum(adds["size_bytes"]).as_py() or 0) if adds.num_rows else 0
        if "num_records" not in adds.column_names:
            return nbytes, None
        rec = adds["num_records"]
        return nbytes, (int(pa.compute.sum(rec).as_py() or 0) if rec.null_count == 0 else None)

    # ---- reads ----------------------------------------------------------------------------------------------
    def read(self, name: str, version: int | None = None):
        """A Spark DataFrame over the table's snapshot (latest, or `version`)."""
        dt = self._dt(name, version)
        uris = list(dt.file_uris())
        for uri in uris:  # a file deleted behind Delta's back: name it now, not in a Spark stack trace later
            local = uri[7:] if uri.startswith("file://") else uri
            if "://" not in local and not os.path.exists(local):
                raise TableError(f"table '{name}' (version {dt.version()}): data file {local} is missing; the table "
                                 f"was changed outside its Delta log (restore the file or rewrite the table)")
        if self.backend == "delta-spark":
            reader = self.spark.read.format("delta")
            if version is not None:
                reader = reader.option("versionAsOf", version)
            return reader.load(self.path(name))
        if not uris:
            import pyarrow as pa
            from pyspark.sql.pandas.types import from_arrow_schema

            # deltalake >= 1.0 hands out an arro3 schema; pyarrow takes it through the Arrow C interface
            schema = from_arrow_schema(_arrow_schema_for_spark(pa.schema(dt.schema().to_arrow())))
            return self.spark.createDataFrame([], schema)
        return self.spark.read.parquet(*uris)

    def read_arrow(self, name: str, version: int | None = None):
        """The whole table as a pyarrow Table on the driver: only for small tables such as `metrics`."""
        return self._dt(name, version).to_pyarrow_table()

    # ---- writes ---------------------------------------------------------------------------------------------
    def last_commit_info(self, name: str) -> dict:
        if not self.exists(name):
            return {}
        hist = self._dt(name).history(1)
        return hist[0] if hist else {}

    def latest_commit_is(self, name: str, app_id: str) -> bool:
        """Whether the table's latest commit is the write of application transaction `app_id`."""
        info = self.last_commit_info(name)
        # delta-rs keeps custom metadata at the top of commitInfo, a delta-spark commit of a write folder in its
        # tags, and Spark's own writer in userMetadata
        return app_id in (info.get("lmrefinery.app_id"), (info.get("tags") or {}).get("lmrefinery.app_id"),
                          info.get("userMetadata"))

    def write(self, df, name: str, mode: str = "overwrite", app_id: str | None = None,
              txn_version: int = 0) -> WriteResult:
        """Write `df` as the new content (`overwrite`) or an addition (`append`) of table `name`.

        With `app_id`, the commit records the transaction `(app_id, txn_version)` and the write is skipped
        (`skipped=True`) when it is already done: for `append`, when the table holds that transaction at all;
        for `overwrite`, when the table's latest commit is that transaction (an older overwrite with the same
        app id that was since replaced does not count).
        """
        if mode not in ("overwrite", "append"):
            raise TableError(f"unknown write mode {mode!r}")
        if self.already_written(name, mode, app_id, txn_version):
            return WriteResult(name, self.version(name), True, 0, 0)
        if self.backend == "delta-spark":
            return self._write_native(df, name, mode, app_id, txn_version)
        return self._write_rs(df, name, mode, app_id, txn_version)

    def _write_native(self, df, name, mode, app_id, txn_version) -> WriteResult:
        t0 = time.perf_counter()
        writer = df.write.format("delta").mode(mode)
        if mode == "overwrite":
            writer = writer.option("overwriteSchema", "true")
        if app_id is not None:
            done = self.txn_version(name, app_id)
            # Delta's writer silently skips a write whose (txnAppId, txnVersion) the table already holds; an
            # overwrite that was since replaced by another write must run again (see `write`), so it goes
            # without the options and the table keeps the transaction it already records
            if done is None or done < txn_version:
                writer = writer.option("txnAppId", app_id).option("txnVersion", txn_version)
            writer = writer.option("userMetadata", app_id)
        with _delta_conflicts(name):
            writer.save(self.path(name))
        dt = self._dt(name)
        hist = dt.history(1)
        metrics = (hist[0].get("operationMetrics") or {}) if hist else {}
        return WriteResult(name, dt.version(), False, int(metrics.get("numFiles", -1)),
                           int(metrics.get("numOutputRows", -1)), time.perf_counter() - t0)

    def _write_rs(self, df, name, mode, app_id, txn_version) -> WriteResult:
        batch_dir, folder = self.new_write_folder(name)
        t0 = time.perf_counter()
        df.write.mode("error").parquet(folder)
        t_data = time.perf_counter() - t0
        from pyspark.sql.pandas.types import to_arrow_schema

        return self.commit_folder(name, batch_dir, mode, app_id, txn_version, lambda: to_arrow_schema(df.schema),
                                  seconds_data=t_data)

    # ---- writes from Python workers ---------------------------------------------------------------------------
    def new_write_folder(self, name: str) -> tuple[str, str]:
        """(folder name, absolute path) of a fresh write folder inside table `name`: the data files of one write go
        there, and nothing reads them before `commit_folder` adds them to the log. The name must not start with
        '_' or '.', which Delta treats as hidden; `w-` marks it for `remove_uncommitted`."""
        table_path = self.path(name)
        storage.makedirs(table_path)
        batch_dir = f"w-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}"
        return batch_dir, storage.join(table_path, batch_dir)

    def already_written(self, name: str, mode: str, app_id: str | None, txn_version: int = 0) -> bool:
        """Whether a write with this application transaction is already done (see `write`)."""
        if app_id is None or not self.exists(name):
            return False
        done = self.txn_version(name, app_id)
        return done is not None and done >= txn_version and (mode == "append" or self.latest_commit_is(name, app_id))

    def commit_folder(self, name, batch_dir, mode, app_id=None, txn_version=0, empty_schema=None,
                      seconds_data: float = 0.0) -> WriteResult:
        """Commit every Parquet file of write folder `batch_dir` of table `name` in one Delta transaction, as the
        table's new content (`overwrite`) or an addition (`append`): through delta-spark's transaction log API on
        the native backend, through delta-rs otherwise. `empty_schema()` gives the Arrow schema when the folder
        holds no file. Files of Spark's own writer and of Python workers (`pyarrow.parquet`) alike; the caller has
        removed any file that is not part of the write."""
        t0 = time.perf_counter()
        table_path = self.path(name)
        folder = storage.join(table_path, batch_dir)
        files, arrow_schema, total_rows = [], None, 0  # (path in the table, size, mtime ms, rows)
        for fn, is_dir, size, mtime in sorted(storage.entries(folder)):
            if is_dir or not fn.endswith(".parquet"):
                continue
            full = storage.join(folder, fn)
            if storage.is_remote(full):
                fs, p = storage.filesystem(full)
                with fs.open_input_file(p) as f:
                    meta = pq.read_metadata(f)
            else:
                meta = pq.read_metadata(full)
            if arrow_schema is None:
                arrow_schema = meta.schema.to_arrow_schema()
            total_rows += meta.num_rows
            files.append((f"{batch_dir}/{fn}", size, int(mtime * 1000), meta.num_rows))
        if arrow_schema is None:
            arrow_schema = empty_schema()
        arrow_schema = _strip_arrow_metadata(arrow_schema)

        def result(version=None):
            if not files:  # no data file: nothing references the folder, which must not look like a leftover
                storage.rmtree(folder)
            return WriteResult(name, self.version(name) if version is None else version, False, len(files),
                               total_rows, seconds_data, time.perf_counter() - t0)

        tags = {"lmrefinery.write": batch_dir, "lmrefinery.app_id": app_id or ""}
        if self.backend == "delta-spark":
            with _delta_conflicts(name):
                version = _commit_native(self.spark, table_path, name, files, arrow_schema, mode, app_id,
                                         txn_version, tags, storage_options=self.storage_options)
            return result(version)

        dl = _delta_rs()
        from deltalake.transaction import AddAction, CommitProperties, Transaction, create_table_with_add_actions

        adds = [AddAction(path=path, size=size, partition_values={}, modification_time=mtime, data_change=True,
                          stats=json.dumps({"numRecords": rows})) for path, size, mtime, rows in files]
        schema = dl.Schema.from_arrow(arrow_schema)
        props = CommitProperties(
            app_transactions=[Transaction(app_id=app_id, version=txn_version)] if app_id else None,
            custom_metadata=tags,
        )

        if not self.exists(name):
            try:
                create_table_with_add_actions(table_path, schema, adds, mode="error", commit_properties=props,
                                              storage_options=self.storage_options)
                return result()
            except Exception:
                if not self.exists(name):
                    raise
        dt = dl.DeltaTable(table_path, storage_options=self.storage_options)
        if mode == "overwrite" and _schema_changed(dt, schema):
            # create_write_transaction keeps the old metadata; replace table content and schema together
            create_table_with_add_actions(table_path, schema, adds, mode="overwrite", commit_properties=props,
                                          storage_options=self.storage_options)
        else:
            dt.create_write_transaction(adds, mode=mode, schema=schema, commit_properties=props)
        return result()


# ---- delta-spark: commits of write folders, conflicts ------------------------------------------------------------
_PLAIN_PATH = re.compile(r"[A-Za-z0-9._=/-]+\Z")


def _snapshot_removes(table_path: str, version: int, storage_options: dict | None) -> list[dict] | None:
    """Remove actions for every data file of the table at `version`, from its log as delta-rs reads it (a few
    milliseconds). delta-spark's `txn.filterFiles()` gives the same list through a Spark job over the snapshot's
    state, ~0.7 s for each new version even on a table of one file: most of a small stage's commit time.
    None (the caller then asks delta-spark) where a plain remove of each file is not the whole story or the list
    might not be read exactly: reader features (deletion vectors, column mapping), partition columns, a path
    that is not plain (URL-encoded in the log), or a log delta-rs cannot read."""
    try:
        dl = _delta_rs()
        import pyarrow as pa

        dt = dl.DeltaTable(table_path, version=version, storage_options=storage_options or None)
        proto = dt.protocol()
        if proto.min_reader_version != 1 or proto.reader_features or dt.metadata().partition_columns:
            return None
        adds = pa.table(dt.get_add_actions(flatten=True)).select(["path", "size_bytes"]).to_pylist()
    except Exception:  # noqa: BLE001 - any doubt: delta-spark's own way
        return None
    if not all(_PLAIN_PATH.match(a["path"] or "") for a in adds):
        return None
    now = int(time.time() * 1000)
    return [{"path": a["path"], "deletionTimestamp": now, "dataChange": True, "extendedFileMetadata": True,
             "partitionValues": {}, "size": int(a["size_bytes"])} for a in adds]


def _commit_native(spark, table_path, name, files, arrow_schema, mode, app_id, txn_version, tags,
                   storage_options: dict | None = None) -> int:
    """One delta-spark transaction adding `files` (already in the table folder) and, for `overwrite`, removing
    every file of the snapshot it read: the commit Spark's own writer would make, so `engineInfo` names Delta Lake
    and Delta's conflict detection applies. A new table gets protocol (1, 2) and its metadata; an overwrite with
    another schema replaces the metadata (same table id), an append must match the table's columns."""
    from pyspark.sql.pandas.types import from_arrow_schema

    jvm = spark._jvm
    delta = jvm.org.apache.spark.sql.delta
    conv = jvm.scala.jdk.javaapi.CollectionConverters
    txn = delta.DeltaLog.forTable(spark._jsparkSession, table_path).startTransaction()
    # Delta's own writer stores every column as nullable (`asNullable`); so does this commit, so that a table's
    # schema does not depend on which writer made it
    schema_json = json.dumps(_as_nullable(json.loads(from_arrow_schema(arrow_schema).json())))
    actions = []
    if txn.readVersion() < 0:
        actions.append({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}})
        actions.append({"metaData": _metadata_action(str(uuid.uuid4()), schema_json, int(time.time() * 1000))})
    else:
        current = txn.metadata()
        if _columns(current.schemaString()) != _columns(schema_json):
            if mode == "append":
                raise TableError(f"table '{name}': the files to append have columns {_columns(schema_json)}, the "
                                 f"table has {_columns(current.schemaString())}")
            created = current.createdTime()
            actions.append({"metaData": _metadata_action(current.id(), schema_json,
                                                         created.get() if created.isDefined() else None)})
    java_actions = jvm.java.util.ArrayList()
    if mode == "overwrite" and txn.readVersion() >= 0:
        removes = _snapshot_removes(table_path, int(txn.readVersion()), storage_options)
        if removes is None:
            for f in conv.asJava(txn.filterFiles()):
                java_actions.add(f.remove())
        else:
            # what filterFiles() records too: the whole table was read, so any concurrent commit that adds or
            # removes files conflicts with this overwrite
            txn.readWholeTable()
            actions.extend({"remove": r} for r in removes)
    for path, size, mtime, rows in files:
        actions.append({"add": {"path": path, "partitionValues": {}, "size": size, "modificationTime": mtime,
                                "dataChange": True, "stats": json.dumps({"numRecords": rows})}})
    if app_id:
        actions.append({"txn": {"appId": app_id, "version": txn_version, "lastUpdated": int(time.time() * 1000)}})
    for a in actions:
        java_actions.add(delta.actions.Action.fromJson(json.dumps(a)))
    none = jvm.scala.Option.empty()
    operation = delta.DeltaOperations.Write(jvm.org.apache.spark.sql.SaveMode.valueOf(mode.capitalize()),
                                            none, none, none, none, none, none, none, none)
    jtags = jvm.java.util.HashMap()
    for k, v in tags.items():
        jtags.put(k, v)
    scala_map = getattr(getattr(jvm.scala.collection.immutable, "Map$"), "MODULE$")
    return int(txn.commit(conv.asScala(java_actions).toList(), operation, getattr(scala_map, "from")(conv.asScala(jtags))))


def _as_nullable(t):
    """A Spark schema's JSON with every field, array element and map value nullable."""
    if isinstance(t, dict):
        t = {k: _as_nullable(v) for k, v in t.items()}
        for key in ("nullable", "containsNull", "valueContainsNull"):
            if key in t:
                t[key] = True
    elif isinstance(t, list):
        t = [_as_nullable(v) for v in t]
    return t


def _metadata_action(table_id: str, schema_json: str, created_ms) -> dict:
    meta = {"id": table_id, "format": {"provider": "parquet", "options": {}}, "schemaString": schema_json,
            "partitionColumns": [], "configuration": {}}
    if created_ms is not None:
        meta["createdTime"] = created_ms
    return meta


def _columns(schema_json: str) -> list[tuple[str, str]]:
    """Names and types of a Spark schema's JSON, nullability aside (workers and Spark's writer may differ there)."""
    return [(f["name"], json.dumps(_as_nullable(f["type"]), sort_keys=True)) for f in json.loads(schema_json)["fields"]]


@contextlib.contextmanager
def _delta_conflicts(name: str):
    """delta-spark's conflict exceptions (another writer committed in between) as one line naming the table."""
    try:
        yield
    except Exception as e:
        java = getattr(e, "java_exception", None)  # py4j's Py4JJavaError
        cls = java.getClass().getName() if java is not None else ""
        if not any(k in cls for k in ("Concurrent", "ProtocolChanged", "MetadataChanged")):
            raise
        first = (java.getMessage() or "").strip()
        first = first.splitlines()[0][:200] if first else ""
        raise TableError(f"table '{name}': another writer committed to it during this write "
                         f"({cls.rsplit('.', 1)[-1]}: {first}); run the stage again") from None


# ---- names, broken logs, leftovers ----------------------------------------------------------------------------
_TABLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")


def check_table_name(name: str) -> str:
    if not isinstance(name, str) or not _TABLE_NAME.fullmatch(name) or ".." in name:
        raise TableError(f"table name {name!r} is not a plain name (letters, digits, '_', '.', '-'; no path "
                         f"separators or '..'): tables live directly under the lake")
    return name


def _log_error(table_path: str, name: str, e: Exception) -> str:
    """One line naming the table and, where one can be found, the log file that does not parse."""
    log_dir = storage.join(table_path, "_delta_log")
    bad = None
    try:
        names = sorted(storage.listdir(log_dir))
    except OSError:
        names = []
    for fn in names:
        if not fn.endswith(".json"):
            continue
        try:
            for line in storage.read_bytes(storage.join(log_dir, fn)).decode("utf-8").splitlines():
                if line.strip():
                    json.loads(line)
        except (ValueError, OSError):
            bad = storage.join(log_dir, fn)
            break
    first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    where = f"log file {bad} does not parse" if bad else f"cannot read its Delta log ({first[:200]})"
    return f"table '{name}' at {table_path}: {where}"


def committed_folders(table_path: str) -> set[str]:
    """Top-level folders of every data file any commit of the table's log ever added (JSON commits and
    checkpoints): a `w-*` write folder outside this set belongs to a write that never committed."""
    log_dir = storage.join(table_path, "_delta_log")
    out: set[str] = set()
    for fn in storage.listdir(log_dir):
        full = storage.join(log_dir, fn)
        if fn.endswith(".json"):
            for line in storage.read_bytes(full).decode("utf-8").splitlines():
                if '"add"' in line:
                    path = (json.loads(line).get("add") or {}).get("path")
                    if path:
                        out.add(path.split("/", 1)[0])
        elif ".checkpoint" in fn and fn.endswith(".parquet"):
            fs, p = storage.filesystem(full)
            t = pq.read_table(p, columns=["add"], filesystem=fs)
            for a in t.column("add").to_pylist():
                if a and a.get("path"):
                    out.add(a["path"].split("/", 1)[0])
    return out


def remove_uncommitted(table_path: str, dry_run: bool = False) -> list[str]:
    """Delete the `w-*` folders of writes that never committed (call only while no live run writes the table:
    the caller holds its lease). Returns the folders removed (with `dry_run`: the ones that would be)."""
    if not storage.isdir(storage.join(table_path, "_delta_log")):
        return []
    keep = committed_folders(table_path)
    gone = sorted(d for d, is_dir, _, _ in storage.entries(table_path) if is_dir and d.startswith("w-") and d not in keep)
    if not dry_run:
        for d in gone:
            storage.rmtree(storage.join(table_path, d))
    return gone


def _strip_arrow_metadata(schema):
    return schema.remove_metadata()


def _schema_changed(dt, schema) -> bool:
    try:
        return dt.schema().to_json() != schema.to_json()
    except Exception:
        return True


def _arrow_schema_for_spark(schema):
    """delta-rs reports large/view string types that Spark's arrow converter may not know."""
    import pyarrow as pa

    def conv(t):
        if pa.types.is_large_string(t) or pa.types.is_string_view(t):
            return pa.string()
        if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
            return pa.binary()
        if pa.types.is_large_list(t) or pa.types.is_list_view(t) or pa.types.is_list(t):
            return pa.list_(conv(t.value_type))
        if pa.types.is_struct(t):
            return pa.struct([pa.field(f.name, conv(f.type), f.nullable) for f in t])
        if pa.types.is_map(t):
            return pa.map_(conv(t.key_type), conv(t.item_type))
        return t

    return pa.schema([pa.field(f.name, conv(f.type), f.nullable) for f in schema])
