"""Write leases: at most one live run writes a table (or a packed folder) at a time.

A run takes the lease of every table it will write before it computes anything: a file
`<lake>/_leases/<name>.lease` created with O_EXCL (atomic on a POSIX filesystem, local or shared), holding the
run id, stage, host, pid and the process start time, and refreshed every HEARTBEAT_S seconds. A second run that
wants the same table fails at once with one line naming the table and the live run; it never writes a duplicate
and never silently replaces the other run's output. A lease whose owner is dead (same host: the pid is gone or
belongs to a newer process; other host: no heartbeat for STALE_S seconds) is taken over, and the taker may then
remove what the dead run left behind (see `jobs/tables.remove_uncommitted`). A lease left by an earlier run of the
same process (a stage that failed inside a notebook or a test) counts as dead: one process runs stages in turn.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import re
import socket
import threading
import time
import uuid

from udfs.common import UserError

HEARTBEAT_S = 20.0
STALE_S = 120.0


class LeaseError(UserError):
    pass


def _proc_start(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _lease_file(lake_root: str, name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:60]
    if safe != name:
        safe += "-" + hashlib.sha1(name.encode()).hexdigest()[:10]
    return os.path.join(lake_root, "_leases", safe + ".lease")


def _alive(rec: dict, mtime: float) -> bool:
    if rec.get("host") == socket.gethostname():
        pid = rec.get("pid")
        if pid == os.getpid():
            return False  # an earlier run of this same process (stages run one after another in a process)
        if not isinstance(pid, int):
            return time.time() - mtime < STALE_S
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return rec.get("start") is None or _proc_start(pid) == rec.get("start")
    return time.time() - mtime < STALE_S


def read_lease(lake_root: str, name: str) -> dict | None:
    """The lease record of `name` with `alive` set, or None when nobody holds it."""
    path = _lease_file(lake_root, name)
    try:
        mtime = os.path.getmtime(path)
        with open(path) as f:
            rec = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):  # being written right now: treat as live until it is old
        return {"run_id": "?", "stage": "?", "alive": time.time() - os.path.getmtime(path) < STALE_S}
    rec["alive"] = _alive(rec, mtime)
    return rec


class Leases:
    """The leases one run holds; released by `release()`, at interpreter exit, or by death (then stale)."""

    def __init__(self, lake_root: str, run_id: str, stage: str):
        self.lake_root, self.run_id, self.stage = lake_root, run_id, stage
        self.held: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = None
        atexit.register(self.release)

    def acquire(self, names) -> None:
        """Take the lease of every name (all or none)."""
        got = []
        try:
            for name in sorted(set(names)):
                if name in self.held:
                    continue
                self._take(name)
                got.append(name)
        except BaseException:
            for name in got:
                self._drop(name)
            raise
        if self.held and self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="lmr-lease-heartbeat", daemon=True)
            self._thread.start()

    def _take(self, name: str) -> None:
        path = _lease_file(self.lake_root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pid = os.getpid()
        rec = {"name": name, "run_id": self.run_id, "stage": self.stage, "host": socket.gethostname(), "pid": pid,
               "start": _proc_start(pid), "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        # The record is written to a private file first and then hard-linked into place: link() fails atomically
        # when the lease exists (like O_EXCL), and a reader never sees a lease file that is still empty.
        tmp = f"{path}.new-{uuid.uuid4().hex[:12]}"
        with open(tmp, "w") as f:
            json.dump(rec, f)
        try:
            self._link_into_place(name, path, tmp)
        finally:
            try:
                os.remove(tmp)
            except FileNotFoundError:
                pass

    def _link_into_place(self, name: str, path: str, tmp: str) -> None:
        for _ in range(5):
            try:
                os.link(tmp, path)
            except FileExistsError:
                other = read_lease(self.lake_root, name)
                if other is None:
                    continue
                if other.get("run_id") == self.run_id:
                    self.held[name] = path
                    return
                if other["alive"]:
                    where = f"pid {other.get('pid')} on {other.get('host')}" if other.get("pid") else "a live process"
                    raise LeaseError(f"{name!r} is being written by another run: {other.get('stage')} run "
                                     f"{other.get('run_id')} ({where}, since {other.get('since', '?')}); wait for "
                                     f"it to finish or stop it") from None
                # dead owner: move its lease aside (atomic; of two takers only one succeeds), then retry
                try:
                    os.rename(path, f"{path}.stale-{uuid.uuid4().hex[:8]}")
                    for old in os.listdir(os.path.dirname(path)):
                        if old.startswith(os.path.basename(path) + ".stale-"):
                            os.remove(os.path.join(os.path.dirname(path), old))
                except FileNotFoundError:
                    pass
                continue
            self.held[name] = path
            return
        raise LeaseError(f"could not take the lease of {name!r} ({path}) after 5 tries")

    def _beat(self):
        while not self._stop.wait(HEARTBEAT_S):
            for path in list(self.held.values()):
                try:
                    os.utime(path)
                except OSError:
                    pass

    def _drop(self, name: str):
        path = self.held.pop(name, None)
        if path:
            try:
                with open(path) as f:
                    if json.load(f).get("run_id") != self.run_id:
                        return  # not ours any more (taken over after we were presumed dead)
                os.remove(path)
            except (OSError, ValueError):
                pass

    def release(self):
        self._stop.set()
        for name in list(self.held):
            self._drop(name)
