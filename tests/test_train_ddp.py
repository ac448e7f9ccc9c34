"""Two-process torchrun (gloo, CPU) training: both ranks end with identical parameters, equal to the same global
batch trained in one process."""
import glob
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from jobs.cli import run_main
from model import train
from model.toy_pack import paragraphs_from_files, split_docs, write_packed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")
LICENSES = sorted(p for p in glob.glob("/usr/share/common-licenses/*") if os.path.isfile(p))
COMMON = ["n_layer=2", "n_head=2", "n_embd=64", "block_size=64", "num_threads=1", "log_interval=5",
          "eval_interval=6", "max_steps=12", "warmup_steps=3", "grad_accum=2", "dropout=0.0"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sets(items):
    out = []
    for s in items:
        out += ["--set", s]
    return out


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("packed"))
    write_packed(out, split_docs(paragraphs_from_files(LICENSES)), shard_tokens=100_000)
    return out


def test_torchrun_two_ranks_gloo(packed, tmp_path):
    out = str(tmp_path / "ddp")
    cmd = [TORCHRUN, "--nproc_per_node=2", f"--master_port={free_port()}", "--master_addr=127.0.0.1",
           os.path.join(REPO, "model", "train.py"), "--data", packed,
           *sets(COMMON + ["batch_size=8", f"out_dir={out}"])]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "2 rank(s) on cpu" in p.stdout and "done at step 12" in p.stdout

    summary = json.load(open(os.path.join(out, "summary.json")))
    hashes = summary["param_sha256_per_rank"]
    assert summary["world_size"] == 2 and len(hashes) == 2 and hashes[0] == hashes[1]
    ck = torch.load(os.path.join(out, "ckpt.pt"), map_location="cpu", weights_only=True)
    assert ck["world_size"] == 2 and len(ck["rng"]["per_rank"]) == 2
    # the checkpoint (rank 0) holds the parameters both ranks reported
    model = train.GPT(train.GPTConfig.from_dict(ck["model_args"]))
    model.load_state_dict(ck["model"])
    assert train.params_sha256(model) == hashes[0]
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [5, 6, 10, 12]  # only rank 0 writes
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]

    # one process with the whole global batch (16 windows per micro-step) follows the same trajectory
    single = str(tmp_path / "single")
    assert run_main("train", train.main, ["--data", packed, *sets(COMMON + ["batch_size=16", f"out_dir={single}"])]) == 0
    cs = torch.load(os.path.join(single, "ckpt.pt"), map_location="cpu", weights_only=True)
    for k, v in ck["model"].items():
        assert torch.allclose(v, cs["model"][k], rtol=0, atol=1e-4), (k, (v - cs["model"][k]).abs().max())
    assert rows[-1]["val_loss"] == pytest.approx(json.load(open(os.path.join(single, "summary.json")))["val_loss"],
                                                 abs=1e-4)
