"""scaling.py against worked numbers from the literature."""
import json
import math

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


def test_chinchilla_approach3_at_1e21_flops_matches_hand_computation():
    # By hand: G = (0.34*406.4 / (0.28*410.7))^(1/0.62) = 1.20157^1.6129 = 1.3447; (C/6)^(0.28/0.62) with
    # C/6 = 1.6667e20 is e^(46.5625*0.45161) = 1.3565e9, so N = 1.824e9 and D = C/(6N) = 9.137e10;
    # L = 1.69 + 406.4/N^0.34 + 410.7/D^0.28 = 1.69 + 0.2886 + 0.3504 = 2.329.
    n, d, loss = scaling.chinchilla_optimal(1e21)
    assert n == pytest.approx(1.824e9, rel=2e-3)
    assert d == pytest.approx(9.137e10, rel=2e-3)
    assert loss == pytest.approx(2.329, abs=1e-3)
    assert 6 * n * d == pytest.approx(1e21, rel=1e-9)
    # it is the minimum of the fitted loss on the compute line: a grid of N around it does no better
    for f in (0.5, 0.8, 0.95, 1.05, 1.25, 2.0):
        assert scaling.fitted_loss(n * f, 1e21 / (6 * n * f)) > loss


def test_repeated_tokens_are_worth_less_muennighoff():
    u = 1e9
    assert scaling.effective_tokens(0.5e9, u) == 0.5e9          # no repetition: face value
    e4 = scaling.effective_tokens(4e9, u)                       # 4 epochs: almost as good as unique
    assert 3.5e9 < e4 < 4e9
    e40 = scaling.effective_tokens(40e9, u)
    assert e40 < 16.4e9 and e40 == pytest.approx(u + u * 15.4 * (1 - math.exp(-39 / 15.4)), rel=1e-12)
    assert scaling.effective_tokens(1e15, u) == pytest.approx(u * 16.4, rel=1e-6)  # the ceiling U (1 + R*)
    assert scaling.data_constrained_loss(1e9, 40e9, u) > scaling.fitted_loss(1e9, 40e9)


def test_plan_reads_the_lakes_token_counts(tmp_path, capsys):
    lake = tmp_path / "lake"
    (lake / "reports").mkdir(parents=True)
    (lake / "reports" / "mixture.json").write_text(json.dumps({
        "token_counts": "exact", "tokenizer": "gpt2",
        "domains": [{"domain": "web", "tokens_available": 8_000_000, "target_weight": 0.8},
                    {"domain": "code", "tokens_available": 500_000, "target_weight": 0.2}]}))
    assert scaling.main(["plan", "--lake", str(lake), "--params", "10e6", "--tokens", "10e6"]) == 0
    out = capsys.readouterr().out
    res = json.loads(out.strip().splitlines()[-1])
    dom = {r["domain"]: r for r in res["domains"]}
    assert dom["web"]["epochs"] == pytest.approx(1.0) and dom["code"]["epochs"] == pytest.approx(4.0)
    assert dom["web"]["effective_tokens"] == 8e6 and dom["code"]["effective_tokens"] < 2e6
    assert res["loss_with_repeats"] > res["loss_unique"] and res["exact_token_counts"] is True
    assert "exact token counts" in out
    assert scaling.main(["plan", "--lake", str(lake), "--params", "10e6", "--tokens", "20e6"]) == 0
    assert "code" in capsys.readouterr().out.split("<- more than --max-epochs")[0].splitlines()[-1]
    from jobs.cli import run_main
    assert run_main("scaling", scaling.main, ["plan", "--lake", str(tmp_path / "none"), "--flops", "1e18"]) == 2
    assert "run jobs/mix.py on the lake first" in capsys.readouterr().err
