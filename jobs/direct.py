"""Tables whose Parquet files the Python workers write themselves, for stages whose output is their input's text.

Spark's own writer makes every text cross from the Python worker into the JVM (Arrow), become rows, and be
encoded to Parquet there; a stage with two or three outputs also caches its whole result to write it two or three
times. Where the lake is local and delta-rs commits it, a stage can instead let each task write its rows straight into
one Parquet file per output table (pyarrow, the table's Arrow schema) and return only narrow rows: the files it
wrote and the counts the stage reports. The driver then commits each table's write folder in one Delta transaction,
exactly as it commits the files of Spark's writer, so readers see the same tables.

    folders = WriteFolders(ctx.lake, {"doc": "documents", "quarantine": "quarantine"})
    rows = frame.mapInArrow(worker(folders.paths, ...), META_DDL).collect()   # the worker: part_stem(), pyarrow
    folders.keep_only(("doc", part) for ...)                                  # drop files of failed attempts
    folders.commit(ctx.run, mode, schemas)

A task attempt names its file after its partition and attempt number (`part_stem`), so a failed or speculative
attempt never shares a file with the one that succeeded; `keep_only` deletes every file that no returned row names.
A run that dies leaves uncommitted `w-*` folders, which the next run of the stage removes (`remove_uncommitted`).
"""
from __future__ import annotations

import os
import shutil

from jobs.cli import UserError


def enabled(ctx, key: str = "writer") -> bool:
    """`<stage>.writer`: auto (the default) = the workers write when the delta-rs backend commits a local lake;
    spark = Spark's writer, which the native Delta backend always uses."""
    mode = ctx.params.get(key, "auto")
    if mode not in ("auto", "spark"):
        raise UserError(f"{ctx.stage.name}.{key} must be auto or spark (got {mode!r})")
    return mode == "auto" and ctx.lake.backend == "delta-rs" and "://" not in ctx.lake.root


def part_stem() -> str:
    """The file name stem of this task attempt: its partition and attempt number (the pid outside Spark)."""
    from pyspark import TaskContext

    tc = TaskContext.get()
    return f"part-{tc.partitionId():05d}-a{tc.attemptNumber()}" if tc else f"part-{os.getpid()}"


class WriteFolders:
    """One fresh write folder per output table; `paths` (role -> absolute folder) goes to the workers."""

    def __init__(self, lake, tables: dict[str, str]):
        self.tables = dict(tables)  # role -> table name
        self.dirs, self.paths = {}, {}
        for role, table in self.tables.items():
            self.dirs[role], self.paths[role] = lake.new_write_folder(table)
            os.makedirs(self.paths[role])

    def discard(self) -> None:
        for p in self.paths.values():
            shutil.rmtree(p, ignore_errors=True)

    def keep_only(self, files) -> None:
        """Delete every file of the folders that is not one of `files` ((role, file name) pairs)."""
        keep = set(files)
        for role, folder in self.paths.items():
            for fn in os.listdir(folder):
                if (role, fn) not in keep:
                    os.remove(os.path.join(folder, fn))

    def commit(self, run, mode: str, schemas: dict, seconds_data: dict | None = None) -> None:
        """Commit every folder, in the order the tables were given (`StageRun.commit_folder`)."""
        for role, table in self.tables.items():
            run.commit_folder(table, self.dirs[role], mode, (lambda s=schemas[role]: s),
                              seconds_data=(seconds_data or {}).get(role, 0.0))
