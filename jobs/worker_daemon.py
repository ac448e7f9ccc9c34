"""Spark's Python worker daemon (pyspark.daemon), with the kernels' start-up done once before it forks workers.

Spark starts one daemon per executor and forks a Python worker from it for each task slot. A fresh worker used to
pay ~1 s before its first batch of a dedup pass: numpy and pyarrow imported (0.26 s), numba imported (0.27 s), the
MinHash kernels loaded from numba's cache (0.40 s) and normalise's punctuation table (1.1M unicodedata lookups,
0.14 s). Workers are fresh more often than it seems: Spark stops a worker idle for a minute, so in
`jobs/pipeline.py` the dedup stage runs in the filter's workers, or in new ones. Done here, the work is shared by
every forked worker (copy on write).

Used where `jobs.session.get_spark` builds a `local[*]` session (spark.python.daemon.module, unless the user's
conf names another); a cluster's executors need the repo on their Python path first (docs/cluster.md). Nothing
here starts a thread before the fork: imports and single-threaded calls only. Any failure of the warm-up leaves
the plain daemon: a worker then does the same work itself, as before.
"""
import os
import sys


def warm_up() -> None:
    """Import the worker-side kernels and run each compiled one once on a tiny input (numba loads its cached
    machine code on a function's first call with given argument types)."""
    import importlib

    import numpy as np

    # what the stages' worker functions import (their closures are unpickled by module name)
    for name in ("pyarrow", "pyarrow.compute", "pyarrow.parquet", "pyarrow.ipc", "jobs.direct", "jobs.dedup",
                 "jobs.filter", "jobs.ingest"):
        importlib.import_module(name)
    from udfs import graph, minhash
    from udfs.normalise import normalise

    texts = [normalise("Warm-up: the quick brown fox jumps over the lazy dog, twice.", True), "",
             normalise("Another line, another five shingles of text to hash", True)]
    for scheme in minhash.SCHEMES:
        perms = minhash.permutations(128, 1, scheme)
        sig, (h, offs) = minhash.signatures_and_sets(texts, 5, 128, 1, scheme, perms=perms)
        minhash.signatures(texts, 5, 128, 1, scheme, normalised=True, perms=perms)
        minhash.band_keys(sig, 8, 16)
    h, offs = minhash.shingle_sets(texts, 5)
    idx = np.array([0, 2], np.int64)
    minhash.jaccard_sets_indexed(h, offs, idx, idx[::-1].copy())
    keys = np.zeros((3, 8), np.int64)
    minhash.bucket_pairs(keys, 1000, with_shared=True)
    graph.min_label_components(np.array([0], np.int64), np.array([2], np.int64), 3)


def main() -> None:
    # the daemon tells Spark its port on stdout: nothing else may reach it, so the warm-up writes to stderr
    stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        warm_up()
        os.environ["LMR_WORKER_DAEMON"] = "warm"  # inherited by every worker it forks (tests read it)
    except BaseException as e:  # noqa: BLE001 - never keep the daemon from serving tasks
        print(f"lmrefinery worker daemon: warm-up skipped ({type(e).__name__}: {e})", file=sys.stderr)
    finally:
        sys.stdout.flush()
        os.dup2(stdout, 1)
        os.close(stdout)
    from pyspark import daemon

    daemon.manager()


if __name__ == "__main__":
    main()
