"""DoReMi: the exponentiated-gradient update, and domain weights from proxy/reference runs over per-domain packed
folders, written in the form jobs/mix.py --strategy doremi reads."""
import glob
import json
import math
import os
import random
import string

import pytest
import torch

from jobs.cli import run_main
from model import doremi
from model.toy_pack import paragraphs_from_files, split_docs, write_packed

LICENSES = sorted(p for p in glob.glob("/usr/share/common-licenses/*") if os.path.isfile(p))


def test_exponentiated_gradient_step_by_hand():
    a = doremi.exponentiated_gradient_step(torch.tensor([0.5, 0.5], dtype=torch.float64),
                                           torch.tensor([1.0, 0.0], dtype=torch.float64), eta=1.0, smoothing=0.0)
    e = math.e
    assert a.tolist() == pytest.approx([e / (e + 1), 1 / (e + 1)], rel=1e-12)
    # smoothing mixes in the uniform distribution
    b = doremi.exponentiated_gradient_step(torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64),
                                           torch.zeros(3, dtype=torch.float64), eta=1.0, smoothing=0.1)
    assert b.tolist() == pytest.approx([0.9 * 0.2 + 0.1 / 3, 0.9 * 0.3 + 0.1 / 3, 0.9 * 0.5 + 0.1 / 3], rel=1e-12)
    assert float(b.sum()) == pytest.approx(1.0)


def test_doremi_upweights_the_learnable_domain(tmp_path, capsys):
    rng = random.Random(0)
    alphabet = string.ascii_letters + string.digits + " ."
    noise = ["".join(rng.choice(alphabet) for _ in range(400)) for _ in range(300)]
    text_dir, noise_dir = str(tmp_path / "text"), str(tmp_path / "noise")
    write_packed(text_dir, split_docs(paragraphs_from_files(LICENSES)))
    write_packed(noise_dir, split_docs(noise))
    out = str(tmp_path / "doremi.json")
    argv = ["--domain", f"text={text_dir}", "--domain", f"noise={noise_dir}", "--out", out, "--steps", "40",
            "--eta", "0.1"]
    for s in ("n_layer=2", "n_head=2", "n_embd=64", "block_size=64", "batch_size=8", "num_threads=1",
              "warmup_steps=5"):
        argv += ["--set", s]
    assert run_main("doremi", doremi.main, argv) == 0
    res = json.load(open(out))
    w = res["domain_weights"]
    assert set(w) == {"text", "noise"} and sum(w.values()) == pytest.approx(1.0, abs=1e-5)
    # random characters: the proxy soon matches the reference, so little excess loss; text keeps an excess
    assert w["text"] > 0.55 > w["noise"]
    assert "proxy step 40/40" in capsys.readouterr().out

    from udfs.mixture import load_weights_file

    assert load_weights_file(out, "domain_weights") == w


def test_needs_two_domains(tmp_path, capsys):
    rc = run_main("doremi", doremi.main, ["--domain", f"a={tmp_path}", "--out", str(tmp_path / "o.json")])
    assert rc == 2 and "at least two --domain" in capsys.readouterr().err
