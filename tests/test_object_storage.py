"""Lakes and inputs on object storage, against a real S3-compatible server on loopback (moto's server mode: an HTTP
endpoint that Hadoop's S3A, delta-rs, pyarrow and boto3 all talk to as they would to S3; no client is mocked).

The end-to-end test runs the README's pipeline (ingest -> filter -> dedup -> decontaminate -> mix -> pack) with the
inputs in one bucket and the lake in another, as a user would (`python jobs/pipeline.py --lake s3://...`, the
endpoint and credentials in the environment), and checks that the tables and the shards are the ones a local run
gives: the digest committed in tests/data/sample_digest.json, which tests/test_pipeline.py checks for a lake on
local disk. It runs under the table backend of the session (`LMR_TABLE_BACKEND`: the Makefile runs it on native
Delta and on delta-rs)."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = "lmr-test-secret-5b1f0c"  # must never appear in any output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_env():
    from jobs.session import s3a_jars

    if not s3a_jars():
        pytest.skip("the S3A connector JARs are not installed (scripts/install_jars.py, run by make setup)")
    port = _free_port()
    log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"lmr-moto-{port}.log"), "w")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(endpoint, timeout=1).read()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail(f"the S3 server on {endpoint} did not start (see {log.name})")
    env = {"AWS_ACCESS_KEY_ID": "lmr-test-key", "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    s3 = boto3.client("s3")
    for bucket in ("inputs", "lake"):
        s3.create_bucket(Bucket=bucket)
    try:
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _digest_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("lake_digest", os.path.join(REPO, "scripts", "lake_digest.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _pipeline(lake, sources, env):
    r = subprocess.run([sys.executable, os.path.join(REPO, "jobs", "pipeline.py"), "--lake", lake, "--sources",
                        sources, "--no-train"], cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True,
                       timeout=1800)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert SECRET not in out
    return out


def test_pipeline_on_s3_gives_the_tables_and_shards_of_a_local_run(s3_env, tmp_path):
    import boto3
    import deltalake

    from jobs import storage

    s3 = boto3.client("s3")
    for d, _, files in os.walk(os.path.join(REPO, "data", "sample")):
        for fn in files:
            full = os.path.join(d, fn)
            s3.upload_file(full, "inputs", os.path.relpath(full, REPO))
    src = yaml.safe_load(open(os.path.join(REPO, "conf", "sources.yaml")))
    for s in src["sources"]:
        s["path"] = "s3://inputs/" + s["path"]
    sources = tmp_path / "sources.yaml"
    sources.write_text(yaml.safe_dump(src))

    out = _pipeline("s3://lake/sample", str(sources), s3_env)
    assert "pack: uploaded" in out and "s3://lake/sample/packed" in out

    got = _digest_module().lake_digest("s3://lake/sample", input_root="s3://inputs/")
    want = json.load(open(os.path.join(REPO, "tests", "data", "sample_digest.json")))
    assert got["packed"] == want["packed"]  # byte-identical shards (sha256 of every file)
    assert {t: d["rows"] for t, d in got["tables"].items()} == {t: d["rows"] for t, d in want["tables"].items()}
    assert got == want

    # written by the backend this session runs under; readable by delta-rs with the lake's storage options
    dt = deltalake.DeltaTable("s3://lake/sample/documents",
                              storage_options=storage.delta_storage_options("s3://lake/sample"))
    engine = dt.history(1)[0].get("engineInfo", "")
    native = os.environ.get("LMR_TABLE_BACKEND", "auto") != "delta-rs"
    assert ("Delta-Lake/" in engine) if native else engine.startswith("delta-rs")
    # the lake's leases are gone after the run, and no write folder was left behind
    assert storage.listdir("s3://lake/sample/_leases") == []

    again = _pipeline("s3://lake/sample", str(sources), s3_env)  # every stage, pack included, is already done
    for stage in ("ingest", "filter", "dedup", "decontaminate", "mix"):
        assert f"{stage}: already done" in again, again[-3000:]
    assert "pack: s3://lake/sample/packed already holds this input and config" in again


def test_leases_on_s3_are_exclusive_and_a_dead_owners_lease_is_taken_over(s3_env):
    from jobs.leases import LeaseError, Leases, _lease_file, _s3_put, read_lease

    root = "s3://lake/leases-test"
    # a live run elsewhere (another host, a fresh heartbeat) holds 'filtered'
    other = {"name": "filtered", "run_id": "run-a", "stage": "filter", "host": "other-host", "pid": 1, "start": "1",
             "since": "2026-12-02T00:00:00Z"}
    path = _lease_file(root, "filtered")
    assert _s3_put(path, other, if_none_match=True) is not None
    assert _s3_put(path, {**other, "run_id": "run-x"}, if_none_match=True) is None  # the create is exclusive
    b = Leases(root, "run-b", "filter")
    with pytest.raises(LeaseError, match="'filtered' is being written by another run: filter run run-a "
                                         r"\(pid 1 on other-host"):
        b.acquire(["filtered", "rejected"])
    assert not b.held and read_lease(root, "rejected") is None  # all or none
    # its owner is gone (this host, a pid that does not exist): the lease is taken over
    assert _s3_put(path, {**other, "host": socket.gethostname(), "pid": 2 ** 22 + 12345},
                   if_match=read_lease(root, "filtered")["etag"]) is not None
    assert read_lease(root, "filtered")["alive"] is False
    b.acquire(["filtered", "rejected"])
    assert read_lease(root, "filtered")["run_id"] == "run-b"
    b.release()
    assert read_lease(root, "filtered") is None and read_lease(root, "rejected") is None


def test_inputs_are_listed_and_read_from_a_bucket(s3_env):
    import boto3

    from jobs.ingest import list_files
    from udfs import fileio
    from udfs.records import SourceSpec

    s3 = boto3.client("s3")
    for key, body in (("c/a/x.jsonl", b'{"text": "one"}\n{"text": "two"}\n'), ("c/b/y.jsonl", b'{"text": "3"}\n'),
                      ("c/b/_skip.jsonl", b"{}\n"), ("c/b/z.txt", b"zzz")):
        s3.put_object(Bucket="inputs", Key=key, Body=body)
    d = {"name": "s", "domain": "d", "format": "jsonl", "path": "s3://inputs/c", "text_field": "text"}
    assert list_files(SourceSpec.from_dict(d)) == [("s3://inputs/c/a/x.jsonl", "a/x.jsonl"),
                                                   ("s3://inputs/c/b/y.jsonl", "b/y.jsonl")]
    assert list_files(SourceSpec.from_dict({**d, "path": "s3://inputs/c/*/y.jsonl"})) == [("s3://inputs/c/b/y.jsonl", "b/y.jsonl")]
    with fileio.open_input("s3://inputs/c/a/x.jsonl") as f:
        assert f.readline() == b'{"text": "one"}\n'
        f.seek(16)
        assert f.read() == b'{"text": "two"}\n'
    assert fileio.size("s3://inputs/c/a/x.jsonl") == 32


def test_an_unsupported_scheme_is_one_line_naming_it():
    from jobs.tables import Lake
    from udfs.common import UserError

    with pytest.raises(UserError, match=r"gs://bucket/lake: the gs:// scheme is not supported .*s3://"):
        Lake(None, "gs://bucket/lake", backend="delta-rs")
