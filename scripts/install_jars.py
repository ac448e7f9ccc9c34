#!/usr/bin/env python
"""Fetch the JARs of conf/jars.lock (delta-spark, delta-storage, the S3A connector) from Maven Central into `.cache/jars`.

Set-up only: jobs/session.py puts the JARs it finds there on the classpath with the Delta extension and catalog, and
nothing is resolved at run time (no `spark.jars.packages`). Each JAR is checked against the sha256 in the lock file;
a file already present with the right hash is kept (idempotent). `mvn dependency:copy` fetches where Maven is
installed (one run for every missing JAR, strict checksums); otherwise each JAR is fetched over HTTPS from Maven Central's repository layout.

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


def fetch_mvn(coords: list[tuple[str, str, str]], dest: str) -> None:
    """One Maven run for all of `coords` (no transitive resolution: the lock lists every JAR), strict checksums."""
    deps = "".join(f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version>"
                   f"<exclusions><exclusion><groupId>*</groupId><artifactId>*</artifactId></exclusion></exclusions>"
                   f"</dependency>" for g, a, v in coords)
    with open(os.path.join(dest, "pom.xml"), "w") as f:
        f.write('<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
                '<groupId>lmrefinery</groupId><artifactId>jars</artifactId><version>0</version>'
                f'<dependencies>{deps}</dependencies></project>')
    subprocess.run(["mvn", "-q", "-B", "-C", "dependency:copy-dependencies", f"-DoutputDirectory={dest}",
                    "-DexcludeTransitive=true"], check=True, cwd=dest, stdout=subprocess.DEVNULL)


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
    missing = [(g, a, v, sha) for g, a, v, sha in lock
               if not (os.path.exists(os.path.join(args.dest, f"{a}-{v}.jar"))
                       and sha256_file(os.path.join(args.dest, f"{a}-{v}.jar")) == sha)]
    errors: dict[str, list[str]] = {}

    def place(got: str, group, artifact, version, sha, how) -> bool:
        name = f"{artifact}-{version}.jar"
        if not os.path.exists(got):
            errors.setdefault(name, []).append(f"{how}: {name} not written")
            return False
        digest = sha256_file(got)
        if digest != sha:
            errors.setdefault(name, []).append(f"{how}: sha256 {digest} is not the locked {sha}")
            return False
        final = os.path.join(args.dest, name)
        os.replace(got, final)
        print(f"[install_jars] {group}:{artifact}:{version} ({os.path.getsize(final)} bytes, sha256 ok, {how})",
              file=sys.stderr)
        return True

    if missing and shutil.which("mvn") is not None:
        with tempfile.TemporaryDirectory(dir=args.dest, prefix=".fetch-") as tmp:
            try:
                fetch_mvn([(g, a, v) for g, a, v, _ in missing], tmp)
            except Exception as e:  # noqa: BLE001 - fall back to HTTPS per JAR, report all at the end
                msg = str(e).strip().splitlines()[-1][:160] if str(e).strip() else repr(e)
                for _, a, v, _ in missing:
                    errors.setdefault(f"{a}-{v}.jar", []).append(f"mvn: {msg}")
            missing = [(g, a, v, sha) for g, a, v, sha in missing
                       if not place(os.path.join(tmp, f"{a}-{v}.jar"), g, a, v, sha, "mvn")]
    for group, artifact, version, sha in missing:
        name = f"{artifact}-{version}.jar"
        with tempfile.TemporaryDirectory(dir=args.dest, prefix=".fetch-") as tmp:
            try:
                fetch_https(group, artifact, version, tmp)
            except Exception as e:  # noqa: BLE001
                errors.setdefault(name, []).append(f"https: {e}"[:200])
                continue
            if place(os.path.join(tmp, name), group, artifact, version, sha, "https"):
                continue
        print(f"install_jars: could not fetch {group}:{artifact}:{version} ({'; '.join(errors.get(name, []))})",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
