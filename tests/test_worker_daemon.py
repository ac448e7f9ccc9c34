"""jobs/worker_daemon.py: a local session's Python workers are forked from a daemon that did the kernels' start-up."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_local_session_workers_come_from_the_warm_daemon(spark):
    assert spark.conf.get("spark.python.daemon.module") == "jobs.worker_daemon"

    def probe(_):
        import sys as s
        # numba's compiled MinHash kernel is in the worker before any task of it ran a dedup function
        mh = s.modules.get("udfs.minhash")
        return (os.environ.get("LMR_WORKER_DAEMON"), mh is not None and bool(mh._minhash_kernel.signatures))

    got = spark.sparkContext.parallelize(range(4), 4).map(probe).collect()
    assert got == [("warm", True)] * 4


def test_warm_up_starts_no_thread_and_writes_nothing_to_stdout():
    """The daemon forks after the warm-up (a Python thread would not survive the fork) and tells Spark its port on
    stdout, so the warm-up must leave both alone; the kernels it ran are then compiled in the process."""
    code = ("import threading, sys; from jobs import worker_daemon as w; w.warm_up(); "
            "from udfs import minhash; "
            "assert minhash._minhash_kernel.signatures and minhash._sorted_sets_kernel.signatures; "
            "sys.stderr.write(str(threading.active_count()))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": REPO})
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr.strip().endswith("1"), (r.stdout, r.stderr)
