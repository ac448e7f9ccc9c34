"""Progress lines for long stages: one line per running Spark stage at a steady interval, readable in a log file.

Spark's console progress bar redraws one terminal line with carriage returns; in a file it becomes one line of
hundreds of thousands of characters, so it is off (jobs/session.py). Instead, while a stage of ours runs, a daemon
thread reads Spark's status store every `interval` seconds and logs, for each active Spark stage:

    filter: progress 0:02:30 | spark stage 7 (mapInArrow): 17/40 tasks (42%), 1,275,000 records in (8,500/s),
    310.2 MB read, 1,190,000 rows out | ETA 0:03:24

Counts are those of finished tasks (Spark updates task metrics when a task ends). The ETA is the stage's remaining
tasks at the rate its tasks have finished so far. `LMR_PROGRESS_S` sets the interval (default 30 s; 0 = off).
"""
from __future__ import annotations

import os
import threading
import time

DEFAULT_INTERVAL_S = 30.0


def _hms(seconds: float) -> str:
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _short_name(name: str) -> str:
    """' (mapInArrow)' from 'mapInArrow at NativeMethodAccessorImpl.java:0'; '' for Spark's internal closures
    ('$anonfun$withThreadLocalCaptured$1'), which say nothing to a reader."""
    head = name.split(" at ", 1)[0][:40]
    return f" ({head})" if head.isidentifier() else ""


def stage_lines(sc, first_seen: dict, now: float) -> list[str]:
    """One description per active Spark stage, from the status store; [] when none is running or the store cannot
    be read (a cluster manager without it)."""
    try:
        stages = sc._jsc.sc().statusStore().activeStages()
    except Exception:  # noqa: BLE001 - progress is best effort; the job itself must not fail for it
        return []
    out = []
    it = stages.iterator()
    while it.hasNext():
        s = it.next()
        sid, total, done = int(s.stageId()), int(s.numTasks()), int(s.numCompleteTasks())
        t0 = first_seen.get(sid)
        if t0 is None:
            try:  # when Spark submitted the stage; else when we first saw it
                t0 = s.submissionTime().get().getTime() / 1000.0
            except Exception:  # noqa: BLE001
                t0 = now
            first_seen[sid] = t0
        elapsed = max(now - t0, 1.0)
        parts = [f"spark stage {sid}{_short_name(str(s.name()))}: {done}/{total} tasks "
                 f"({100 * done / max(total, 1):.0f}%)"]
        rec_in, bytes_in, rec_out = int(s.inputRecords()), int(s.inputBytes()), int(s.outputRecords())
        shuffle_in = int(s.shuffleReadRecords())
        if rec_in:
            parts.append(f"{rec_in:,} records in ({rec_in / elapsed:,.0f}/s)")
        elif shuffle_in:
            parts.append(f"{shuffle_in:,} shuffled records in ({shuffle_in / elapsed:,.0f}/s)")
        if bytes_in >= 100_000:
            parts.append(f"{bytes_in / 1e6:,.1f} MB read")
        if rec_out:
            parts.append(f"{rec_out:,} rows out")
        line = ", ".join(parts)
        if 0 < done < total:
            line += f" | ETA {_hms(elapsed * (total - done) / done)}"
        out.append(line)
    return out


class Progress:
    """`with Progress(spark, "filter", log):` logs progress lines every `interval` seconds while the block runs."""

    def __init__(self, spark, stage: str, log, interval: float | None = None):
        if interval is None:
            try:
                interval = float(os.environ.get("LMR_PROGRESS_S", DEFAULT_INTERVAL_S))
            except ValueError:
                interval = DEFAULT_INTERVAL_S
        self.sc, self.stage, self.log, self.interval = spark.sparkContext, stage, log, interval
        self._stop = threading.Event()
        self._thread = None
        self._first_seen: dict = {}

    def __enter__(self):
        if self.interval > 0:
            self._t0 = time.time()
            self._thread = threading.Thread(target=self._run, name=f"lmr-progress-{self.stage}", daemon=True)
            self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.interval):
            now = time.time()
            for line in stage_lines(self.sc, self._first_seen, now):
                self.log(f"{self.stage}: progress {_hms(now - self._t0)} | {line}")

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return False
