#!/usr/bin/env python
"""Fetch the JARs of conf/jars.lock (delta-spark and delta-storage) from Maven Central into `.cache/jars`.

Set-up only: jobs/session.py puts the JARs it finds there on the classpath with the Delta extension and catalog, and
nothing is resolved at run time (no `spark.jars.packages`). Each JAR is checked against the sha256 in the lock file;
a file already present with the right hash is kept (idempotent). `mvn dependency:copy` fetches where Maven is
installed (with strict checksums); otherwise the JAR is fetched over HTTPS from Maven Central's repository layout.

    python scripts/install_jars.py [--dest DIR] [--lock FILE]

Exit 0 with every JAR in place; 1 with a one-line reason (the caller decides whether the delta-rs backend will do).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from jobs.session import JARS_DIR, read_jars_lock  # noqa: E402

CENTRAL = "https://repo.maven.apache.org/maven2"


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_mvn(group: str, artifact: str, version: str, dest: str) -> None:
    subprocess.run(["mvn", "-q", "-B", "-C", "dependency:copy", f"-Dartifact={group}:{artifact}:{version}",
                    f"-DoutputDirectory={dest}"], check=True, cwd=dest, stdout=subprocess.DEVNULL)


def fetch_https(group: str, artifact: str, version: str, dest: str) -> None:
    name = f"{artifact}-{version}.jar"
    url = f"{CENTRAL}/{group.replace('.', '/')}/{artifact}/{version}/{name}"
    with urllib.request.urlopen(url, timeout=120) as r, open(os.path.join(dest, name), "wb") as f:
        shutil.copyfileobj(r, f)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dest", default=JARS_DIR)
    ap.add_argument("--lock", default=os.path.join(REPO, "conf", "jars.lock"))
    args = ap.parse_args(argv)
    os.makedirs(args.dest, exist_ok=True)
    try:
        lock = read_jars_lock(args.lock)
    except ValueError as e:
        print(f"install_jars: {e}", file=sys.stderr)
        return 1
    for group, artifact, version, sha in lock:
        name = f"{artifact}-{version}.jar"
        final = os.path.join(args.dest, name)
        if os.path.exists(final) and sha256_file(final) == sha:
            continue
        errors = []
        for how, fetch in (("mvn", fetch_mvn), ("https", fetch_https)):
            if how == "mvn" and shutil.which("mvn") is None:
                continue
            with tempfile.TemporaryDirectory(dir=args.dest, prefix=".fetch-") as tmp:
                try:
                    fetch(group, artifact, version, tmp)
                except Exception as e:  # noqa: BLE001 - try the next way, report all at the end
                    errors.append(f"{how}: {str(e).strip().splitlines()[-1][:160] if str(e).strip() else e!r}")
                    continue
                got = os.path.join(tmp, name)
                if not os.path.exists(got):
                    errors.append(f"{how}: {name} not written")
                    continue
                digest = sha256_file(got)
                if digest != sha:
                    errors.append(f"{how}: sha256 {digest} is not the locked {sha}")
                    continue
                os.replace(got, final)
                print(f"[install_jars] {group}:{artifact}:{version} ({os.path.getsize(final)} bytes, sha256 ok, "
                      f"{how}) -> {final}", file=sys.stderr)
                break
        else:
            print(f"install_jars: could not fetch {group}:{artifact}:{version} ({'; '.join(errors) or 'no way'})",
                  file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
