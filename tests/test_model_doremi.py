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


def test_one_command_pack_per_domain_weights_and_mix(spark, lake, lake_dir, capsys):
    """jobs/doremi.py on a lake whose table holds licence prose and random-character noise: it packs each domain
    into its own folder, trains reference and proxy, writes weights with their trajectory and per-domain val
    losses, and mixes with them; the weights move away from the noise."""
    from jobs import doremi as doremi_job
    from jobs.schema import document_row, documents_df

    rng = random.Random(1)
    alphabet = string.ascii_letters + string.digits + " ."
    rows = [document_row(f"noise-{i}", "".join(rng.choice(alphabet) for _ in range(400)), domain="noise")
            for i in range(150)]
    rows += [document_row(f"text-{i}", t, domain="text")
             for i, t in enumerate(paragraphs_from_files(LICENSES))]
    lake.write(documents_df(spark, rows).repartition(3), "decontaminated")
    # a byte-level tokenizer (a .tiktoken file of the 256 single bytes; EOS = 256), as the toy packs above use:
    # small models learn it in a few steps, and the noise's floor (ln 64 nats per character) is reached soon
    import base64

    ranks = os.path.join(lake_dir, "..", "bytes.tiktoken")
    with open(ranks, "w") as f:
        f.writelines(f"{base64.b64encode(bytes([i])).decode()} {i}\n" for i in range(256))
    argv = ["--lake", lake_dir, "--steps", "40", "--eta", "0.1", "--set", "pack.val_fraction=0.05",
            "--set", f"pack.tokenizer={os.path.abspath(ranks)}"]
    for s in ("n_layer=2", "n_head=2", "n_embd=64", "block_size=64", "batch_size=8", "num_threads=1",
              "warmup_steps=5", "eval_windows=8"):
        argv += ["--model-set", s]
    assert run_main("doremi", doremi_job.main, argv) == 0
    out = capsys.readouterr().out
    index = json.load(open(os.path.join(lake_dir, "packed_domains", "domains.json")))
    assert set(index["domains"]) == {"noise", "text"}
    for d, v in index["domains"].items():
        m = json.load(open(os.path.join(lake_dir, "packed_domains", v["dir"], "manifest.json")))
        assert m["source"]["domain"] == d and m["splits"]["val"]["tokens"] > 0
        assert set(m["mixture"]["achieved_tokens"]) == {d}  # one domain per folder
    res = json.load(open(os.path.join(lake_dir, "reports", "doremi.json")))
    w = res["domain_weights"]
    assert w["text"] > 0.55 > w["noise"], w
    traj = res["trajectory"]
    assert traj["domains"] == ["noise", "text"] and len(traj["alpha"]) == 40
    assert traj["alpha"][-1][1] > traj["alpha"][0][1]  # text's weight grows over the proxy's steps
    for model_name in ("reference", "proxy"):
        assert set(res["val_loss"][model_name]) == {"noise", "text"}
        assert all(math.isfinite(v) for v in res["val_loss"][model_name].values())
    assert "DoReMi w" in out and "val loss proxy" in out
    # mix took the weights: the mixture's target weights are DoReMi's
    mixm = sorted((r for r in lake.read_arrow("metrics").to_pylist() if r["stage"] == "mix"),
                  key=lambda r: r["started_at"])[-1]
    ex = json.loads(mixm["extra"])
    assert ex["strategy"] == "doremi" and ex["weights"]["text"] == pytest.approx(w["text"] / sum(w.values()))
    assert lake.exists("mixed")
    # the report plots the trajectory and tabulates both models' val losses
    from jobs.report_gather import load_doremi
    from jobs.report_plots import plot_doremi

    assert load_doremi(lake_dir)["trajectory"] == traj
    assert 'data-plot="doremi"' in plot_doremi(load_doremi(lake_dir))
    # a second call skips every step
    assert run_main("doremi", doremi_job.main, argv) == 0
    err = capsys.readouterr().err
    assert "skipping the training" in err and "already" in err


def test_doremi_packs_with_the_tokenizer_the_pipeline_trained(tmp_path):
    """On a pipeline lake jobs/doremi.py uses <lake>/tokenizer/bpe.json (what mix counted and pack packed with);
    pack.tokenizer on the command line, pipeline.tokenizer.train=false or no such file leave pack's default."""
    import argparse

    from jobs import doremi as doremi_job

    lake = str(tmp_path / "lake")

    def ns(*sets):
        return argparse.Namespace(conf=None, overrides=list(sets))

    assert doremi_job._lake_tokenizer(ns(), lake) is None  # no tokenizer trained
    os.makedirs(os.path.join(lake, "tokenizer"))
    bpe = os.path.join(lake, "tokenizer", "bpe.json")
    with open(bpe, "w") as f:
        f.write("{}")
    assert doremi_job._lake_tokenizer(ns(), lake) == bpe
    assert doremi_job._lake_tokenizer(ns("pack.tokenizer=gpt2"), lake) is None
    assert doremi_job._lake_tokenizer(ns("pipeline.tokenizer.train=false"), lake) is None
