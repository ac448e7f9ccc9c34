"""scaling.py against worked numbers from the literature."""
import json

import pytest

from model import scaling


def test_gpt3_training_flops():
    # Brown et al. 2020: GPT-3 175B on 300B tokens, ~3.14e23 FLOPs
    assert scaling.train_flops(175e9, 300e9) == pytest.approx(3.15e23, rel=1e-9)


def test_chinchilla_flops_and_compute_optimal_allocation():
    # Hoffmann et al. 2022: Chinchilla 70B on 1.4T tokens, ~5.9e23 FLOPs, ~20 tokens per parameter
    c = scaling.train_flops(70e9, 1.4e12)
    assert c == pytest.approx(5.88e23, rel=1e-9)
    n, d = scaling.compute_optimal(c)
    assert n == pytest.approx(70e9, rel=1e-9) and d == pytest.approx(1.4e12, rel=1e-9)
    # tokens-per-parameter override: same budget, more tokens, fewer parameters
    n2, d2 = scaling.compute_optimal(c, tokens_per_param=80)
    assert n2 == pytest.approx(35e9, rel=1e-9) and d2 == pytest.approx(2.8e12, rel=1e-9)
    assert 6 * n2 * d2 == pytest.approx(c, rel=1e-9)


def test_gpt3_wall_clock_narayanan():
    # Narayanan et al. 2021, sec. 5.1: GPT-3 (175B, 300B tokens) on 1024 A100s at 140 TFLOP/s per GPU with
    # activation recomputation (8ND) takes ~34 days. 140/312 of the A100 bf16 peak is an MFU-style 0.449.
    c = scaling.train_flops(175e9, 300e9, recompute=True)
    days = scaling.wall_clock_seconds(c, devices=1024, peak_flops=312e12, mfu=140 / 312) / 86400
    assert days == pytest.approx(33.9, abs=0.1)
    with pytest.raises(ValueError):
        scaling.wall_clock_seconds(c, 1, 312e12, 0)


def test_mfu_from_throughput():
    # 124M params at 1e5 tokens/s on one 989 TFLOP/s GPU: 6 * 124e6 * 1e5 / 989e12 = 7.5%
    assert scaling.mfu_from_throughput(124e6, 1e5, 1, 989e12) == pytest.approx(0.07523, rel=1e-3)


def test_cli(capsys):
    assert scaling.main(["flops", "--params", "175e9", "--tokens", "300e9"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert json.loads(out[-1])["flops"] == pytest.approx(3.15e23)
    scaling.main(["optimal", "--flops", "5.88e23"])
    res = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert res["params"] == pytest.approx(70e9) and res["tokens"] == pytest.approx(1.4e12)
    scaling.main(["time", "--params", "175e9", "--tokens", "300e9", "--recompute", "--devices", "1024",
                  "--peak-flops", "312e12", "--mfu", str(140 / 312)])
    out = capsys.readouterr().out
    assert "33.9 days" in out
    scaling.main(["time", "--tokens", "1e9", "--tokens-per-s", "5e4"])
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["seconds"] == pytest.approx(2e4)
