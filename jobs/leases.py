"""Write leases: at most one live run writes a table (or a packed folder) at a time.

A run takes the lease of every table it will write before it computes anything: a file
`<lake>/_leases/<name>.lease` created with O_EXCL (atomic on a POSIX filesystem, local or shared), holding the
run id, stage, host, pid and the process start time, and refreshed every HEARTBEAT_S seconds. On an `s3://` lake
the lease is an object created with S3's conditional write (`If-None-Match: *`, refused when it exists) and
refreshed, taken over and released only while its ETag is the one this run saw (`If-Match`). A second run that
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

from jobs import storage
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
    return storage.join(lake_root, "_leases", safe + ".lease")


# ---- leases as S3 objects: the same records, atomic through conditional writes ------------------------------------
def _s3():
    import boto3  # credentials from the AWS default chain; the endpoint and region as jobs/storage.py reads them

    return boto3.client("s3", endpoint_url=storage.endpoint(), region_name=storage.region())


def _bucket_key(uri: str) -> tuple[str, str]:
    _, p = storage.filesystem(uri)
    bucket, _, key = p.partition("/")
    return bucket, key


def _precondition_failed(e) -> bool:
    code = str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


def _s3_read(path: str) -> tuple[dict, float, str] | None:
    from botocore.exceptions import ClientError

    b, k = _bucket_key(path)
    try:
        obj = _s3().get_object(Bucket=b, Key=k)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    return json.loads(obj["Body"].read()), obj["LastModified"].timestamp(), obj["ETag"]


def _s3_put(path: str, rec: dict, if_none_match: bool = False, if_match: str | None = None) -> str | None:
    """Write the lease object; the new ETag, or None when the condition failed."""
    from botocore.exceptions import ClientError

    b, k = _bucket_key(path)
    kw = {"IfNoneMatch": "*"} if if_none_match else ({"IfMatch": if_match} if if_match else {})
    try:
        return _s3().put_object(Bucket=b, Key=k, Body=json.dumps(rec).encode(), **kw)["ETag"]
    except ClientError as e:
        if _precondition_failed(e):
            return None
        raise


def _s3_delete(path: str, etag: str) -> bool:
    from botocore.exceptions import ClientError

    b, k = _bucket_key(path)
    try:
        _s3().delete_object(Bucket=b, Key=k, IfMatch=etag)
        return True
    except ClientError as e:
        if _precondition_failed(e) or e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return False
        raise


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
    if storage.is_remote(path):
        got = _s3_read(path)
        if got is None:
            return None
        rec, mtime, etag = got
        rec["alive"], rec["etag"] = _alive(rec, mtime), etag
        return rec
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
        self.etags: dict[str, str] = {}  # S3 lakes: the ETag of each lease object as this run last wrote it
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
        pid = os.getpid()
        rec = {"name": name, "run_id": self.run_id, "stage": self.stage, "host": socket.gethostname(), "pid": pid,
               "start": _proc_start(pid), "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if storage.is_remote(path):
            self._take_s3(name, path, rec)
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
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

    def _busy(self, name: str, other: dict) -> LeaseError:
        where = f"pid {other.get('pid')} on {other.get('host')}" if other.get("pid") else "a live process"
        return LeaseError(f"{name!r} is being written by another run: {other.get('stage')} run "
                          f"{other.get('run_id')} ({where}, since {other.get('since', '?')}); wait for "
                          f"it to finish or stop it")

    def _take_s3(self, name: str, path: str, rec: dict) -> None:
        for _ in range(5):
            etag = _s3_put(path, rec, if_none_match=True)
            if etag is not None:
                self.held[name], self.etags[name] = path, etag
                return
            other = read_lease(self.lake_root, name)
            if other is None:
                continue
            if other.get("run_id") == self.run_id:
                self.held[name], self.etags[name] = path, other["etag"]
                return
            if other["alive"]:
                raise self._busy(name, other) from None
            _s3_delete(path, other["etag"])  # dead owner: only the lease we judged, not a newer taker's
        raise LeaseError(f"could not take the lease of {name!r} ({path}) after 5 tries")

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
                    raise self._busy(name, other) from None
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
            for name, path in list(self.held.items()):
                try:
                    if storage.is_remote(path):
                        got = _s3_read(path)
                        if got is not None and got[0].get("run_id") == self.run_id:
                            etag = _s3_put(path, got[0], if_match=self.etags.get(name))
                            if etag:
                                self.etags[name] = etag
                    else:
                        os.utime(path)
                except Exception:  # noqa: BLE001 - a missed beat only ages the lease
                    pass

    def _drop(self, name: str):
        path = self.held.pop(name, None)
        etag = self.etags.pop(name, None)
        if path and storage.is_remote(path):
            try:
                if etag:
                    _s3_delete(path, etag)  # not ours any more when it was taken over: the ETag differs
            except Exception:  # noqa: BLE001
                pass
            return
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
