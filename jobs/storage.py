"""Where the lake and the inputs live: a local (or mounted) folder, or an S3 bucket (`s3://` / `s3a://`).

Spark reads and writes both through Hadoop (`s3a`, set up in jobs/session.py); everything the driver or a Python
worker touches outside Spark (write folders, the Delta log checks, leases, reports, ingest's byte ranges) goes through
this module: plain `os` calls for a local path, `pyarrow.fs.S3FileSystem` for a bucket, and the matching
`storage_options` for delta-rs. A Databricks Unity Catalog volume (`/Volumes/...`) or DBFS mount (`/dbfs/...`) is a
local path here.

Connection settings come only from the environment every S3 client reads: credentials from the AWS default chain
(`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, a profile, or an instance role), the region
from `AWS_REGION` (or `AWS_DEFAULT_REGION`), and an S3-compatible server from `AWS_ENDPOINT_URL_S3` (or
`AWS_ENDPOINT_URL`). Nothing here logs a credential.
"""
from __future__ import annotations

import os
import posixpath
import shutil
from urllib.parse import urlparse

from udfs import fileio
from udfs.common import UserError

S3_SCHEMES = ("s3", "s3a")


def scheme(path: str) -> str:
    """'' for a local path, else the URI scheme ('s3', 's3a', ...)."""
    return urlparse(path).scheme.lower() if "://" in path else ""


def is_remote(path: str) -> bool:
    return scheme(path) != ""


def check_supported(path: str, what: str = "path") -> None:
    s = scheme(path)
    if s and s not in S3_SCHEMES:
        raise UserError(f"{what} {path}: the {s}:// scheme is not supported (local or mounted folders and s3:// / "
                        f"s3a:// are; on Databricks use a Unity Catalog volume path /Volumes/...)")


def normalise(path: str) -> str:
    """A local path made absolute; a URI with its trailing slashes removed."""
    if is_remote(path):
        check_supported(path)
        return path.rstrip("/")
    return os.path.abspath(path)


def join(base: str, *parts: str) -> str:
    return posixpath.join(base, *parts) if is_remote(base) else os.path.join(base, *parts)


def basename(path: str) -> str:
    return posixpath.basename(path.rstrip("/")) if is_remote(path) else os.path.basename(path)


endpoint, region = fileio.endpoint, fileio.region


def delta_storage_options(path: str) -> dict | None:
    """delta-rs `storage_options` for a table under `path` (None for a local one). Credentials stay in the
    environment, where delta-rs reads them itself. Commits use S3's conditional writes (`If-None-Match`), so two
    writers cannot both create the same log entry without a DynamoDB lock."""
    if scheme(path) not in S3_SCHEMES:
        return None
    opts = {"aws_conditional_put": "etag"}
    ep = endpoint()
    if ep:
        opts["AWS_ENDPOINT_URL"] = ep
        if ep.startswith("http://"):
            opts["AWS_ALLOW_HTTP"] = "true"
    if region():
        opts["AWS_REGION"] = region()
    return opts


def filesystem(path: str):
    """(pyarrow FileSystem, path inside it) for a local path or an s3:// / s3a:// URI."""
    check_supported(path)
    return fileio.filesystem(path)


# ---- small file operations, local or remote -------------------------------------------------------------------
def exists(path: str) -> bool:
    if not is_remote(path):
        return os.path.exists(path)
    import pyarrow.fs as pafs

    fs, p = filesystem(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def isdir(path: str) -> bool:
    """A folder (local), or a prefix with at least one object under it (S3 has no empty folders)."""
    if not is_remote(path):
        return os.path.isdir(path)
    import pyarrow.fs as pafs

    fs, p = filesystem(path)
    if fs.get_file_info(p).type == pafs.FileType.Directory:
        return True
    try:
        return bool(fs.get_file_info(pafs.FileSelector(p, recursive=False)))
    except (FileNotFoundError, OSError):
        return False


def makedirs(path: str) -> None:
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)  # on S3 a prefix exists once an object is under it


def entries(path: str) -> list[tuple[str, bool, int, float]]:
    """(name, is_dir, size, mtime seconds) of what is directly in folder `path`; [] when it does not exist."""
    if not is_remote(path):
        if not os.path.isdir(path):
            return []
        out = []
        for fn in os.listdir(path):
            st = os.stat(os.path.join(path, fn))
            out.append((fn, os.path.isdir(os.path.join(path, fn)), st.st_size, st.st_mtime))
        return out
    import pyarrow.fs as pafs

    fs, p = filesystem(path)
    try:
        infos = fs.get_file_info(pafs.FileSelector(p, recursive=False, allow_not_found=True))
    except FileNotFoundError:
        return []
    return [(posixpath.basename(i.path), i.type == pafs.FileType.Directory, i.size or 0,
             i.mtime.timestamp() if i.mtime else 0.0) for i in infos]


def listdir(path: str) -> list[str]:
    return [e[0] for e in entries(path)]


def remove(path: str) -> None:
    if not is_remote(path):
        os.remove(path)
        return
    fs, p = filesystem(path)
    fs.delete_file(p)


def rmtree(path: str) -> None:
    if not is_remote(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    fs, p = filesystem(path)
    try:
        fs.delete_dir(p)
    except (FileNotFoundError, OSError):
        pass


def read_bytes(path: str) -> bytes:
    if not is_remote(path):
        with open(path, "rb") as f:
            return f.read()
    fs, p = filesystem(path)
    with fs.open_input_stream(p) as f:
        return f.read()


def write_bytes(path: str, data: bytes) -> None:
    """Write a whole small file: atomically (temporary file + rename) locally; S3 objects appear whole anyway."""
    if not is_remote(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return
    fs, p = filesystem(path)
    with fs.open_output_stream(p) as f:
        f.write(data)


open_input, size = fileio.open_input, fileio.size


def stat(path: str) -> tuple[int, float]:
    """(size in bytes, mtime seconds) of a file or object."""
    if not is_remote(path):
        st = os.stat(path)
        return st.st_size, st.st_mtime
    fs, p = filesystem(path)
    i = fs.get_file_info(p)
    return i.size, i.mtime.timestamp() if i.mtime else 0.0


def list_files(uri: str) -> list[str]:
    """Every object under prefix `uri` (recursively), as URIs with the same scheme; `uri` itself when it is one."""
    import pyarrow.fs as pafs

    fs, p = filesystem(uri)
    scheme_ = scheme(uri)
    info = fs.get_file_info(p)
    if info.type == pafs.FileType.File:
        return [uri]
    try:
        infos = fs.get_file_info(pafs.FileSelector(p, recursive=True, allow_not_found=True))
    except FileNotFoundError:
        return []
    return sorted(f"{scheme_}://{i.path}" for i in infos if i.type == pafs.FileType.File)


def upload_tree(local_dir: str, remote_dir: str, last: str | None = None) -> int:
    """Replace what is under `remote_dir` with a local folder's files; returns the bytes copied. The old content
    goes first and file `last` (a manifest) is uploaded after all others, so a reader that starts from it never
    sees it before the files it names."""
    import pyarrow.fs as pafs

    fs, p = filesystem(remote_dir)
    rmtree(remote_dir)
    todo = []
    for d, _, files in os.walk(local_dir):
        for fn in files:
            src = os.path.join(d, fn)
            todo.append((os.path.relpath(src, local_dir).replace(os.sep, "/"), src))
    todo.sort(key=lambda t: (t[0] == last, t[0]))
    total = 0
    for rel, src in todo:
        pafs.copy_files(src, posixpath.join(p, rel), source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=fs)
        total += os.path.getsize(src)
    return total
