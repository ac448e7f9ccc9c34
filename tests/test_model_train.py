"""Trainer (single process, in-process calls of model/train.py main): learning on real text, exact resume,
metric conversions, schedule, NaN/divergence stops, flat-curve warning, config errors."""
import glob
import json
import math
import os

import numpy as np
import pytest
import torch

from jobs.cli import run_main
from model import train
from model.data import load_manifest
from model.toy_pack import paragraphs_from_files, split_docs, write_packed

LICENSES = sorted(p for p in glob.glob("/usr/share/common-licenses/*") if os.path.isfile(p))
TINY = ["n_layer=2", "n_head=2", "n_embd=64", "block_size=64", "batch_size=16", "num_threads=1", "log_interval=1",
        "warmup_steps=20", "lr=3e-3", "min_lr=3e-4"]


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("packed"))
    write_packed(out, split_docs(paragraphs_from_files(LICENSES)), shard_tokens=100_000)
    return out


def run(packed, out_dir, *sets, expect=0):
    argv = ["--data", packed, "--set", f"out_dir={out_dir}"]
    for s in list(TINY) + list(sets):
        argv += ["--set", s]
    rc = run_main("train", train.main, argv)
    assert rc == expect
    return out_dir


def metrics(out_dir):
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def unigram_entropy_nats(tokens):
    counts = np.bincount(tokens)
    p = counts[counts > 0] / len(tokens)
    return float(-(p * np.log(p)).sum())


def test_loss_falls_well_below_ln_v_on_real_text(packed, tmp_path):
    out = run(packed, str(tmp_path / "run"), "max_steps=150", "batch_size=32", "eval_interval=50", "log_interval=10")
    rows = metrics(out)
    ln_v = math.log(257)
    assert [r["step"] for r in rows] == list(range(10, 151, 10))
    first, last = rows[0], rows[-1]
    for key in ("step", "train_loss", "tokens_per_s", "mfu", "val_loss", "val_ppl", "val_bpb"):
        assert key in last
    assert "val_loss" not in rows[0] and sum("val_loss" in r for r in rows) == 3
    assert first["train_loss"] > 0.8 * ln_v
    assert last["val_loss"] < 0.55 * ln_v
    # better than any context-free model: below the val split's own unigram entropy
    m = load_manifest(packed)
    val = np.fromfile(os.path.join(packed, m["splits"]["val"]["shards"][0]["bin"]), dtype="<u2")
    assert last["val_loss"] < unigram_entropy_nats(val) - 0.3
    # the logged conversions follow from the manifest's bytes per token
    bpt = m["splits"]["val"]["text_bytes"] / m["splits"]["val"]["tokens"]
    assert last["val_ppl"] == pytest.approx(math.exp(last["val_loss"]), rel=1e-12)
    assert last["val_bpb"] == pytest.approx(last["val_loss"] / math.log(2) / bpt, rel=1e-12)
    with open(os.path.join(out, "loss.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["finished"] and summary["step"] == 150 and summary["val_loss"] == last["val_loss"]



def test_loss_falls_well_below_ln_v_on_the_bundled_sample_corpus(tmp_path):
    """The same check on the project's own sample data (data/sample books: Milton, Shakespeare, KJV)."""
    files = sorted(glob.glob(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                          "data", "sample", "books*", "*.txt")))
    assert len(files) >= 10
    packed = str(tmp_path / "packed")
    m = write_packed(packed, split_docs(paragraphs_from_files(files)), shard_tokens=200_000)
    assert m["splits"]["train"]["tokens"] > 500_000
    out = run(packed, str(tmp_path / "run"), "max_steps=150", "batch_size=32", "eval_interval=50", "log_interval=10")
    rows = metrics(out)
    ln_v = math.log(257)
    assert rows[0]["train_loss"] > 0.8 * ln_v and rows[-1]["val_loss"] < 0.55 * ln_v
    val = np.concatenate([np.fromfile(os.path.join(packed, s["bin"]), dtype="<u2")
                          for s in m["splits"]["val"]["shards"]])
    assert rows[-1]["val_loss"] < unigram_entropy_nats(val) - 0.15

def _state(out_dir):
    return torch.load(os.path.join(out_dir, "ckpt.pt"), map_location="cpu", weights_only=True)


def test_stopped_and_resumed_run_matches_uninterrupted_bitwise(packed, tmp_path, capsys):
    common = ["max_steps=12", "eval_interval=4", "dropout=0.1", "grad_accum=2", "batch_size=4", "warmup_steps=3",
              "sampling=sequential"]
    a = run(packed, str(tmp_path / "a"), *common)
    b = str(tmp_path / "b")
    run(packed, b, *common, "stop_at_step=7")  # interrupted between checkpoints' regular steps
    assert _state(b)["step"] == 7
    capsys.readouterr()
    run(packed, b, *common)
    assert "resumed from" in capsys.readouterr().out
    sa, sb = _state(a), _state(b)
    assert sb["step"] == sa["step"] == 12
    for k, v in sa["model"].items():
        assert torch.equal(v, sb["model"][k]), k
    for pid, st in sa["optimizer"]["state"].items():
        for k, v in st.items():
            assert torch.equal(v, sb["optimizer"]["state"][pid][k]), (pid, k)
    assert sa["data_cursor"] == sb["data_cursor"]
    ra, rb = metrics(a), metrics(b)
    assert [r["step"] for r in rb] == list(range(1, 13))
    for x, y in zip(ra, rb):
        assert (x["train_loss"], x["lr"]) == (y["train_loss"], y["lr"]), x["step"]
        if x["step"] % 4 == 0:
            assert x["val_loss"] == y["val_loss"]
    assert "val_loss" in rb[6]  # the stopped segment evaluated at its last step
    # a different run (another seed) is not equal: the comparison can fail
    c = run(packed, str(tmp_path / "c"), *common, "seed=2")
    assert not torch.equal(_state(c)["model"]["lm_head.weight"], sa["model"]["lm_head.weight"])


def test_resume_refuses_a_different_model(packed, tmp_path, capsys):
    out = run(packed, str(tmp_path / "r"), "max_steps=2")
    run(packed, out, "max_steps=4", "n_embd=32", expect=2)
    assert "was trained with n_embd=64" in capsys.readouterr().err


def test_perplexity_and_bits_per_byte_conversions():
    assert train.perplexity(math.log(10.0)) == pytest.approx(10.0, rel=1e-12)
    assert train.perplexity(0.0) == 1.0
    # ln 4 nats/token = 2 bits/token; at 4 bytes/token that is 0.5 bits/byte
    assert train.bits_per_byte(math.log(4.0), 4.0) == pytest.approx(0.5, rel=1e-12)
    # byte-level tokens (1 byte/token): bits/byte = loss / ln 2
    assert train.bits_per_byte(2.0794415416798357, 1.0) == pytest.approx(3.0, rel=1e-12)


def test_lr_schedule_warmup_cosine_floor():
    cfg = dict(train.DEFAULTS, lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110, lr_decay_steps=None)
    lrs = [train.get_lr(s, cfg) for s in range(130)]
    assert lrs[0] == pytest.approx(1 / 11) and lrs[9] == pytest.approx(10 / 11)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.55)  # halfway through the cosine: (1 + 0.1) / 2
    assert all(x >= y for x, y in zip(lrs[10:110], lrs[11:111]))
    assert lrs[110] == lrs[129] == pytest.approx(0.1)


def test_divergence_stops_with_message(packed, tmp_path, capsys):
    run(packed, str(tmp_path / "d"), "max_steps=30", "lr=1000.0", "warmup_steps=0", "grad_clip=0", expect=3)
    err = capsys.readouterr().err
    assert "train: stopped: diverged" in err and "lower lr" in err


def test_nan_loss_stops_with_message(packed, tmp_path, capsys):
    out = run(packed, str(tmp_path / "n"), "max_steps=2")
    ck = _state(out)
    ck["model"]["transformer.h.0.mlp.c_fc.weight"][0, 0] = float("nan")
    torch.save(ck, os.path.join(out, "ckpt.pt"))
    run(packed, out, "max_steps=4", expect=3)
    err = capsys.readouterr().err
    assert "train: stopped: train loss is nan at step 3" in err
    assert metrics(out)[-1]["step"] == 3 and math.isnan(metrics(out)[-1]["train_loss"])


def test_flat_loss_near_ln_v_warns(packed, tmp_path, capsys):
    run(packed, str(tmp_path / "f"), "max_steps=4", "lr=0.0", "min_lr=0.0", "warmup_steps=0")
    out = capsys.readouterr().out
    assert "WARNING: loss" in out and "near ln(V) = 5.549" in out


def test_config_errors_are_one_line(packed, tmp_path, capsys):
    run(packed, str(tmp_path / "e"), "max_stepz=3", expect=2)
    assert "unknown config key 'max_stepz' (did you mean 'max_steps'?)" in capsys.readouterr().err
    run(packed, str(tmp_path / "e"), "batch_size=many", expect=2)
    assert "cannot use 'many' as int" in capsys.readouterr().err
    cfg = train.build_config(None, ["lr=1e-3", "max_steps=5", "doc_mask=true", "stop_at_step=2"])
    assert cfg["lr"] == 1e-3 and cfg["max_steps"] == 5 and cfg["doc_mask"] is True and cfg["stop_at_step"] == 2


def test_logs_grad_norm_tokens_seen_epoch_and_eta(packed, tmp_path, capsys):
    out = run(packed, str(tmp_path / "g"), "max_steps=6", "eval_interval=3", "log_interval=2", "batch_size=4")
    rows = metrics(out)
    tokens_per_step = 4 * 64
    n_train = load_manifest(packed)["splits"]["train"]["tokens"]
    assert [r["step"] for r in rows] == [2, 3, 4, 6]
    for r in rows:
        assert r["tokens_seen"] == r["step"] * tokens_per_step
        assert r["epoch"] == pytest.approx(r["tokens_seen"] / n_train)
        assert r["grad_norm"] > 0 and math.isfinite(r["grad_norm"])
        assert r["elapsed_s"] > 0 and r["eta_s"] >= 0
    assert rows[-1]["eta_s"] == 0 and rows[0]["elapsed_s"] < rows[-1]["elapsed_s"]
    log = capsys.readouterr().out
    assert "gnorm " in log and "tok (epoch " in log and "ETA " in log and "elapsed" in log
    s = json.load(open(os.path.join(out, "summary.json")))
    assert s["tokens_seen"] == 6 * tokens_per_step and s["loss_spikes"] == 0 and s["autocast"] == "off"


def test_grad_norm_is_the_norm_before_clipping(packed, tmp_path):
    """grad_clip=1e-6 clips every step; the logged norm is the unclipped one, the same as without clipping at
    step 1 (same init, same batch)."""
    a = metrics(run(packed, str(tmp_path / "c1"), "max_steps=1", "grad_clip=1e-6"))[0]
    b = metrics(run(packed, str(tmp_path / "c0"), "max_steps=1", "grad_clip=0"))[0]
    assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-6) and a["grad_norm"] > 1e-3


def test_spike_detector():
    d = train.SpikeDetector(window=10, sigma=4.0)
    flagged = [d.check(v)[0] for v in [3.0, 2.9, 2.95, 2.9, 2.85, 2.88, 2.86]]
    assert not any(flagged)
    spike, mean = d.check(4.5)
    assert spike and mean == pytest.approx(sum([3.0, 2.9, 2.95, 2.9, 2.85, 2.88, 2.86]) / 7)
    assert not d.check(2.84)[0]     # the spike did not enter the window
    assert 4.5 not in d.recent


def test_fp16_with_grad_scaler_and_bf16_on_cpu(packed, tmp_path):
    # lr 1e-3: at the suite's 3e-3 this short run has a loss spike at step 27 (in fp32 too) whose fp16 gradients
    # overflow, and the scaler skips steps until its scale is small enough
    out = run(packed, str(tmp_path / "h"), "max_steps=30", "dtype=float16", "log_interval=10", "eval_interval=30",
              "lr=1e-3")
    rows = metrics(out)
    assert all("loss_scale" in r and r["loss_scale"] > 0 for r in rows)
    assert rows[-1]["val_loss"] < rows[0]["train_loss"] - 0.5  # it learns in fp16
    s = json.load(open(os.path.join(out, "summary.json")))
    assert s["autocast"] == "float16"
    assert _state(out)["scaler"]["scale"] > 0  # the scaler's state is checkpointed for resumes
    b = run(packed, str(tmp_path / "b16"), "max_steps=2", "dtype=bf16")
    assert json.load(open(os.path.join(b, "summary.json")))["autocast"] == "bfloat16"
    assert "loss_scale" not in metrics(b)[0]


def test_device_and_dtype_errors_are_one_line(packed, tmp_path, capsys):
    run(packed, str(tmp_path / "x"), "dtype=half", expect=2)
    assert "dtype must be one of auto, float32" in capsys.readouterr().err
    run(packed, str(tmp_path / "x"), "device=gpu", expect=2)
    assert "device must be auto, cpu, cuda or cuda:N, got 'gpu'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        run(packed, str(tmp_path / "x"), "device=cuda", expect=2)
        err = capsys.readouterr().err
        assert "device 'cuda': CUDA is not available on this host" in err and len(err.strip().splitlines()) == 1
