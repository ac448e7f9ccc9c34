"""JSONL export: parseable lines, order by id, byte-identical across partition counts, manifest checksums."""
import hashlib
import json
import os

from jobs import export_jsonl
from jobs.schema import document_row, documents_df


def _docs(spark, n=300):
    rows = [document_row(f"s/{i:04d}", f"text {i} \u00e9\u4e2d\U0001F600 \"quoted\"\nline", source="s",
                         domain=["web", "code"][i % 2], meta=json.dumps({"k": i})) for i in range(n)]
    return documents_df(spark, rows)


def _export(spark, lake, out, partitions):
    old = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", str(partitions))
    try:
        assert export_jsonl.main(["--lake", lake.root, "--table", "documents", "--out", str(out), "--shards", "3"]) == 0
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", old)
    return {f: open(os.path.join(out, f), "rb").read() for f in sorted(os.listdir(out))}


def test_export_is_byte_identical_across_partitions(spark, lake, tmp_path):
    lake.write(_docs(spark).repartition(7), "documents")
    a = _export(spark, lake, tmp_path / "a", 2)
    lake.write(_docs(spark).repartition(2), "documents")  # same content, different file layout
    b = _export(spark, lake, tmp_path / "b", 8)
    assert sorted(a) == ["manifest.json", "part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl"]
    for name in a:
        if name != "manifest.json":
            assert a[name] == b[name], name
    manifest = json.loads(a["manifest.json"])
    assert manifest["rows"] == 300 and sum(f["lines"] for f in manifest["files"]) == 300
    for f in manifest["files"]:
        assert hashlib.sha256(a[f["file"]]).hexdigest() == f["sha256"]


def test_lines_parse_and_are_sorted_within_shard(spark, lake, tmp_path):
    lake.write(_docs(spark, 50), "documents")
    files = _export(spark, lake, tmp_path / "o", 4)
    seen = []
    for name, blob in files.items():
        if name.endswith(".jsonl"):
            ids = [json.loads(line)["id"] for line in blob.decode().splitlines()]
            assert ids == sorted(ids)
            seen += ids
            first = json.loads(blob.decode().splitlines()[0])
            assert first["trace"] == {"file": None, "line": None, "row": None, "byte_offset": None}
            assert "\U0001F600" in first["text"] and first["text"].endswith("\nline")
    assert sorted(seen) == [f"s/{i:04d}" for i in range(50)]


def test_reexport_with_fewer_shards_removes_stale_files(spark, lake, tmp_path):
    lake.write(_docs(spark, 20), "documents")
    out = tmp_path / "o"
    _export(spark, lake, out, 2)
    assert export_jsonl.main(["--lake", lake.root, "--table", "documents", "--out", str(out), "--shards", "1"]) == 0
    assert sorted(os.listdir(out)) == ["manifest.json", "part-00000.jsonl"]
