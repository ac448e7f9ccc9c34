"""Opening an input file by path: a local (or mounted) file, or an object in S3 (`s3://` / `s3a://`).

The per-document readers (udfs/records.py) open their files through `open_input`, so one reader serves a local
corpus and a bucket. The S3 client is pyarrow's; its settings come from the environment every S3 client reads:
credentials from the AWS default chain, `AWS_REGION` / `AWS_DEFAULT_REGION`, and `AWS_ENDPOINT_URL_S3` /
`AWS_ENDPOINT_URL` for an S3-compatible server. No Spark here (jobs/storage.py builds on this for the lake).
"""
from __future__ import annotations

import atexit
import io
import os
from urllib.parse import urlparse

S3_SCHEMES = ("s3", "s3a")


def is_remote(path: str) -> bool:
    return "://" in path


def endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


_S3FS: dict = {}


def filesystem(path: str):
    """(pyarrow FileSystem, path inside it) for a local path or an s3:// / s3a:// URI."""
    import pyarrow.fs as pafs

    if not is_remote(path):
        return pafs.LocalFileSystem(), os.path.abspath(path)
    u = urlparse(path)
    if u.scheme.lower() not in S3_SCHEMES:
        raise ValueError(f"{path}: the {u.scheme}:// scheme is not supported (local paths, s3:// and s3a:// are)")
    key = (endpoint(), region())
    if key not in _S3FS:
        kw = {}
        ep = endpoint()
        if ep:
            e = urlparse(ep)
            kw.update(endpoint_override=e.netloc or ep, scheme=e.scheme or "https")
        if region():
            kw["region"] = region()
        if not _S3FS:
            # the AWS SDK's threads must end before the interpreter does, else the process aborts at exit
            # ("terminate called without an active exception")
            atexit.register(_finalize_s3)
        _S3FS[key] = pafs.S3FileSystem(**kw)
    return _S3FS[key], (u.netloc + u.path).rstrip("/")


def _finalize_s3():
    import pyarrow.fs as pafs

    _S3FS.clear()
    try:
        pafs.finalize_s3()
    except Exception:  # noqa: BLE001 - already finalized
        pass


class _Raw(io.RawIOBase):
    """A pyarrow random-access file as a raw stream, so that io.BufferedReader gives it readline and iteration."""

    def __init__(self, f):
        self.f = f

    def readable(self):
        return True

    def seekable(self):
        return True

    def readinto(self, b):
        data = self.f.read(len(b))
        b[:len(data)] = data
        return len(data)

    def seek(self, pos, whence=0):
        return self.f.seek(pos, whence)

    def tell(self):
        return self.f.tell()

    def close(self):
        self.f.close()
        super().close()


def open_input(path: str, buffer_size: int = 1 << 20):
    """A seekable binary file with readline: builtin `open` locally, a buffered S3 range reader otherwise."""
    if not is_remote(path):
        return open(path, "rb")
    fs, p = filesystem(path)
    return io.BufferedReader(_Raw(fs.open_input_file(p)), buffer_size=buffer_size)


def size(path: str) -> int:
    if not is_remote(path):
        return os.path.getsize(path)
    fs, p = filesystem(path)
    return fs.get_file_info(p).size
