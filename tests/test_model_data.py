"""Packed-shard loader: windows, per-rank sampling, cursor, and refusal of shards that do not match the manifest."""
import glob
import json
import os
import shutil

import numpy as np
import pytest

from model.data import BatchLoader, PackedSplit, ShardError, bytes_per_token, eval_windows, load_manifest
from model.toy_pack import paragraphs_from_files, split_docs, write_packed

LICENSES = sorted(p for p in glob.glob("/usr/share/common-licenses/*") if os.path.isfile(p))


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("packed"))
    # small shards so windows cross shard boundaries
    write_packed(out, split_docs(paragraphs_from_files(LICENSES)), shard_tokens=40_000)
    return out


def raw_tokens(packed, split):
    m = load_manifest(packed)
    return np.concatenate([np.fromfile(os.path.join(packed, s["bin"]), dtype="<u2") for s in m["splits"][split]["shards"]])


def test_split_matches_manifest_and_reads_across_shards(packed):
    m = load_manifest(packed)
    d = PackedSplit(packed, "train")
    assert len(m["splits"]["train"]["shards"]) > 3
    allt = raw_tokens(packed, "train")
    assert d.n_tokens == len(allt) == m["splits"]["train"]["tokens"]
    assert d.eos_id == 256 and d.vocab_size == 257
    b = int(d.offsets[2])  # a shard boundary
    assert np.array_equal(d.read(b - 50, 100), allt[b - 50:b + 50])
    assert bytes_per_token(m, "val") == m["splits"]["val"]["text_bytes"] / m["splits"]["val"]["tokens"]


@pytest.mark.parametrize("mode", ["random", "sequential"])
def test_windows_are_shifted_by_one(packed, mode):
    d = PackedSplit(packed, "train")
    allt = raw_tokens(packed, "train")
    ld = BatchLoader(d, 32, 4, mode=mode, seed=7)
    for _ in range(3):
        starts = ld.starts_for(ld.batch)
        x, y = ld.next()
        assert x.shape == y.shape == (4, 32)
        assert x.dtype.is_floating_point is False
        assert np.array_equal(x[:, 1:].numpy(), y[:, :-1].numpy())
        for row, s in zip(x.numpy(), starts):
            assert np.array_equal(row, allt[s:s + 32])


def test_random_mode_ranks_split_the_global_batch(packed):
    d = PackedSplit(packed, "train")
    single = BatchLoader(d, 64, 8, rank=0, world_size=1, seed=3)
    r0 = BatchLoader(d, 64, 4, rank=0, world_size=2, seed=3)
    r1 = BatchLoader(d, 64, 4, rank=1, world_size=2, seed=3)
    for b in range(5):
        s0, s1 = r0.starts_for(b), r1.starts_for(b)
        assert np.array_equal(np.concatenate([s0, s1]), single.starts_for(b))
        assert not set(s0.tolist()) & set(s1.tolist())
    # deterministic for a seed, different for another
    assert np.array_equal(BatchLoader(d, 64, 4, seed=3).starts_for(2), BatchLoader(d, 64, 4, seed=3).starts_for(2))
    assert not np.array_equal(BatchLoader(d, 64, 4, seed=4).starts_for(2), BatchLoader(d, 64, 4, seed=3).starts_for(2))


def test_sequential_epoch_is_disjoint_per_rank_and_covers_the_split(packed):
    d = PackedSplit(packed, "val")
    T, B, W = 64, 2, 2
    loaders = [BatchLoader(d, T, B, rank=r, world_size=W, seed=5, mode="sequential") for r in range(W)]
    n = loaders[0].batches_per_epoch
    seen = [np.concatenate([ld.starts_for(b) for b in range(n)]) for ld in loaders]
    assert not set(seen[0].tolist()) & set(seen[1].tolist())
    allw = np.sort(np.concatenate(seen))
    # every window once: distinct, aligned to T, inside the split
    assert len(np.unique(allw)) == n * B * W
    assert np.all(allw % T == 0) and allw.max() + T + 1 <= d.n_tokens
    # next epoch: a different order of the same windows
    nxt = np.concatenate([loaders[0].starts_for(n + b) for b in range(n)])
    assert not np.array_equal(nxt, seen[0])
    assert loaders[0].epoch == 0
    # unshuffled: plain sequential order
    plain = BatchLoader(d, T, B, seed=5, mode="sequential", shuffle=False)
    assert np.array_equal(plain.starts_for(1), np.array([2, 3]) * T)


def test_cursor_resumes_the_same_batches(packed):
    d = PackedSplit(packed, "train")
    for mode in ("random", "sequential"):
        a = BatchLoader(d, 32, 4, rank=1, world_size=2, seed=11, mode=mode)
        for _ in range(5):
            a.next()
        st = a.state_dict()
        b = BatchLoader(d, 32, 4, rank=1, world_size=2, seed=11, mode=mode)
        b.load_state_dict(st)
        for _ in range(3):
            (xa, ya), (xb, yb) = a.next(), b.next()
            assert np.array_equal(xa.numpy(), xb.numpy()) and np.array_equal(ya.numpy(), yb.numpy())
        with pytest.raises(ValueError, match="seed"):
            BatchLoader(d, 32, 4, rank=1, world_size=2, seed=12, mode=mode).load_state_dict(st)


def test_eval_windows_split_round_robin(packed):
    d = PackedSplit(packed, "val")
    w0, w1 = eval_windows(d, 64, 7, 0, 2), eval_windows(d, 64, 7, 1, 2)
    assert w0.tolist() == [0, 128, 256, 384] and w1.tolist() == [64, 192, 320]


# ---- refusal of bad shards ------------------------------------------------------------------------------------
@pytest.fixture
def copy(packed, tmp_path):
    dst = str(tmp_path / "packed")
    shutil.copytree(packed, dst)
    return dst


def _manifest(path):
    with open(os.path.join(path, "manifest.json")) as f:
        return json.load(f)


def _write_manifest(path, m):
    with open(os.path.join(path, "manifest.json"), "w") as f:
        json.dump(m, f)


def test_flipped_byte_is_refused_by_checksum(copy):
    p = os.path.join(copy, "train-00001.bin")
    with open(p, "r+b") as f:
        f.seek(1000)
        b = f.read(1)
        f.seek(1000)
        f.write(bytes([b[0] ^ 0x01]))
    with pytest.raises(ShardError, match=r"train-00001\.bin: sha256 .*corrupted shard"):
        PackedSplit(copy, "train")
    PackedSplit(copy, "val")  # other splits are fine
    PackedSplit(copy, "train", verify="size")  # same size: only the checksum catches it


def test_truncated_shard_is_refused_by_size(copy):
    p = os.path.join(copy, "train-00000.bin")
    os.truncate(p, os.path.getsize(p) - 2)
    with pytest.raises(ShardError, match=r"train-00000\.bin: \d+ bytes, manifest says \d+ \(truncated"):
        PackedSplit(copy, "train", verify="size")


def test_wrong_dtype_is_refused(copy):
    m = _manifest(copy)
    m["dtype"] = "uint32"  # vocab 257 must be uint16
    _write_manifest(copy, m)
    with pytest.raises(ShardError, match="dtype"):
        PackedSplit(copy, "train")


def test_shard_rewritten_as_uint32_is_refused(copy):
    # a consistent manifest (checksums and sizes updated) whose .bin holds uint32 tokens
    import hashlib

    m = _manifest(copy)
    sh = m["splits"]["val"]["shards"][0]
    p = os.path.join(copy, sh["bin"])
    np.fromfile(p, dtype="<u2").astype("<u4").tofile(p)
    m["files"][sh["bin"]] = {"sha256": hashlib.sha256(open(p, "rb").read()).hexdigest(),
                             "bytes": os.path.getsize(p)}
    _write_manifest(copy, m)
    with pytest.raises(ShardError, match=r"val-00000\.bin: \d+ bytes is not \d+ tokens of uint16"):
        PackedSplit(copy, "val")


def test_missing_file_and_bad_index_are_refused(copy):
    os.remove(os.path.join(copy, "val-00000.bin"))
    with pytest.raises(ShardError, match=r"val-00000\.bin: file missing"):
        PackedSplit(copy, "val")
    # an index that does not end at EOS positions
    import hashlib

    m = _manifest(copy)
    sh = m["splits"]["train"]["shards"][0]
    p = os.path.join(copy, sh["idx"])
    idx = np.fromfile(p, dtype="<u8")
    idx[0] += 1
    idx.tofile(p)
    m["files"][sh["idx"]]["sha256"] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    _write_manifest(copy, m)
    with pytest.raises(ShardError, match="does not end with eos_id"):
        PackedSplit(copy, "train")
    os.remove(os.path.join(copy, "manifest.json"))
    with pytest.raises(ShardError, match="no manifest.json"):
        load_manifest(copy)


def test_trainer_refuses_corrupted_shards_with_one_line_error(copy, tmp_path, capsys):
    from jobs.cli import run_main
    from model import train

    with open(os.path.join(copy, "val-00000.bin"), "r+b") as f:
        f.write(b"\xff\xff")
    rc = run_main("train", train.main, ["--data", copy, "--set", f"out_dir={tmp_path / 'out'}",
                                        "--set", "max_steps=1", "--set", "num_threads=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("train: error: val-00000.bin: sha256") and "corrupted shard" in err[-1]


def test_one_format_home_for_writer_verifier_and_reader(packed, copy):
    """The toy packer, the pack job's verify and the trainer's loader share udfs/packed.py."""
    from model.toy_pack import byte_encoding
    from udfs import packed as fmt

    assert ShardError is fmt.PackedError and PackedSplit is fmt.PackedSplit
    m = fmt.verify(packed, level="full", check_ids=True)  # what jobs.pack.verify_packed runs
    assert m["files"]["tokenizer.json"]["bytes"] == os.path.getsize(os.path.join(packed, "tokenizer.json"))
    enc = byte_encoding()
    docs = split_docs(paragraphs_from_files(LICENSES))["val"]
    got = [enc.decode(t[:-1].tolist()) for t in fmt.read_documents(packed, "val")]
    assert got == docs
    d = PackedSplit(packed, "val")
    assert np.array_equal(d.doc_ends(0), np.fromfile(os.path.join(packed, "val-00000.idx"), dtype="<u8"))
    # a whole-folder check refuses names outside the folder too, not only the trainer's per-split check
    m = _manifest(copy)
    m["files"]["../x.bin"] = {"bytes": 0, "sha256": "0"}
    _write_manifest(copy, m)
    with pytest.raises(ShardError, match=r"names file '../x.bin', which is not a plain file name"):
        fmt.verify(copy)
