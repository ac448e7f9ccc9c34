"""Mixture weight math (udfs/mixture.py), checked against values computed by hand."""
import math

import pytest

from udfs import mixture as mx

# 3 domains: web 100 docs / 8000 tokens, code 20 docs / 4000 tokens, books 4 docs / 4000 tokens (16000 total)
DOCS = {"web": 100, "code": 20, "books": 4}
TOKS = {"web": 8000, "code": 4000, "books": 4000}


def approx(d):
    return {k: pytest.approx(v, abs=1e-12) for k, v in d.items()}


def test_proportional_by_hand():
    w, warn = mx.compute_weights("proportional", DOCS, TOKS)
    assert w == approx({"web": 0.5, "code": 0.25, "books": 0.25}) and warn == []


def test_uniform_token_by_hand():
    w, _ = mx.compute_weights("uniform_token", DOCS, TOKS)
    assert w == approx({"web": 1 / 3, "code": 1 / 3, "books": 1 / 3})


def test_uniform_doc_by_hand():
    # mean doc lengths 80, 200, 1000 -> weights 80/1280, 200/1280, 1000/1280: equal document counts per domain
    w, _ = mx.compute_weights("uniform_doc", DOCS, TOKS)
    assert w == approx({"web": 80 / 1280, "code": 200 / 1280, "books": 1000 / 1280})
    budget = 12800
    docs_each = {d: w[d] * budget / (TOKS[d] / DOCS[d]) for d in w}
    assert all(v == pytest.approx(10.0) for v in docs_each.values())


def test_temperature_by_hand():
    # alpha 0.5: sqrt(8000)=89.44, sqrt(4000)=63.25 (x2): total 215.94
    w, _ = mx.compute_weights("temperature", DOCS, TOKS, alpha=0.5)
    s = math.sqrt(8000) + 2 * math.sqrt(4000)
    assert w == approx({"web": math.sqrt(8000) / s, "code": math.sqrt(4000) / s, "books": math.sqrt(4000) / s})
    assert w["web"] == pytest.approx(0.41421, abs=1e-5)
    # alpha 1 is proportional, alpha 0 is uniform over domains
    assert mx.compute_weights("temperature", DOCS, TOKS, alpha=1.0)[0] == approx({"web": .5, "code": .25, "books": .25})
    assert mx.compute_weights("temperature", DOCS, TOKS, alpha=0.0)[0] == approx({d: 1 / 3 for d in TOKS})


def test_manual_and_doremi_weights_files(tmp_path):
    y = tmp_path / "w.yaml"
    y.write_text("web: 2\ncode: 1\nbooks: 1\n")
    w, warn = mx.compute_weights("manual", DOCS, TOKS, file_weights=mx.load_weights_file(str(y)))
    assert w == approx({"web": 0.5, "code": 0.25, "books": 0.25})
    assert any("normalised" in m for m in warn)
    j = tmp_path / "doremi.json"
    j.write_text('{"domain_weights": {"web": 0.2, "code": 0.3, "books": 0.5}, "step": 100}')
    w, warn = mx.compute_weights("doremi", DOCS, TOKS, file_weights=mx.load_weights_file(str(j), "domain_weights"))
    assert w == approx({"web": 0.2, "code": 0.3, "books": 0.5}) and warn == []
    j2 = tmp_path / "bad.json"
    j2.write_text('{"web": 1}')
    with pytest.raises(mx.WeightError, match="domain_weights"):
        mx.load_weights_file(str(j2), "domain_weights")


def test_missing_domain_gets_zero_with_warning():
    w, warn = mx.validate_weights({"web": 1.0}, TOKS)
    assert w == {"books": 0.0, "code": 0.0, "web": 1.0}
    assert any("books" in m and "weight 0" in m for m in warn)


@pytest.mark.parametrize("weights, msg", [
    ({"web": -0.1, "code": 1.1}, "negative"),
    ({"web": 0, "code": 0}, "all domain weights are zero"),
    ({"web": 0.5, "wiki": 0.5}, "unknown domain"),
    ({"web": float("nan")}, "not a finite number"),
    ({"web": "a lot"}, "not a finite number"),
    ({}, "non-empty"),
])
def test_bad_weights(weights, msg):
    with pytest.raises(mx.WeightError, match=msg):
        mx.validate_weights(weights, TOKS)


def test_plan_downsample_and_upsample():
    w = {"web": 0.5, "code": 0.25, "books": 0.25}
    p = {x.domain: x for x in mx.plan(w, DOCS, TOKS, budget=8000)}
    assert (p["web"].target_tokens, p["web"].full_epochs, p["web"].remainder) == (4000, 0, 4000)
    p = {x.domain: x for x in mx.plan(w, DOCS, TOKS, budget=40000)}
    # web: 20000 target = 2 full epochs of 8000 + 4000; code: 10000 = 2 x 4000 + 2000
    assert (p["web"].full_epochs, p["web"].remainder) == (2, 4000)
    assert (p["code"].full_epochs, p["code"].remainder, p["code"].epochs) == (2, 2000, 2.5)
    # natural size by default
    assert sum(x.target_tokens for x in mx.plan(w, DOCS, TOKS, budget=None)) == 16000


def test_plan_infeasible_budget_message():
    w = {"web": 1 / 3, "code": 1 / 3, "books": 1 / 3}
    # books has 4000 tokens: 4 epochs allow at most 16000 / (1/3) = 48000
    assert mx.max_feasible_budget(w, TOKS, 4) == 48000
    mx.plan(w, DOCS, TOKS, budget=48000, max_epochs=4)
    with pytest.raises(mx.WeightError) as e:
        mx.plan(w, DOCS, TOKS, budget=60000, max_epochs=4)
    msg = str(e.value)
    assert "infeasible token budget 60000" in msg and "--token-budget <= 48000" in msg and "\n" not in msg
    assert mx.plan(w, DOCS, TOKS, budget=60000, max_epochs=4, force_epochs=True)[0].epochs == pytest.approx(5.0)
    with pytest.raises(mx.WeightError, match="no tokens"):
        mx.plan({"web": 0.5, "empty": 0.5}, {"web": 1, "empty": 1}, {"web": 100, "empty": 0}, budget=100)


def test_fit_budget_is_all_tokens_or_the_most_within_max_epochs():
    # favouring books (4,000 tokens of 16,000): all 16,000 would need 0.5 * 16000 / 4000 = 2 epochs of it
    w = {"web": 0.25, "code": 0.25, "books": 0.5}
    assert mx.parse_budget("fit") == mx.FIT
    assert mx.resolve_budget(mx.FIT, w, TOKS, 4) == 16000  # feasible: all tokens available, as budget=None
    assert mx.resolve_budget(mx.FIT, w, TOKS, 1) == 8000   # books once: 4000 / 0.5
    p = {x.domain: x for x in mx.plan(w, DOCS, TOKS, budget=mx.FIT, max_epochs=1)}
    assert sum(x.target_tokens for x in p.values()) == 8000 and p["books"].epochs == pytest.approx(1.0)
    with pytest.raises(mx.WeightError, match="infeasible token budget 16000"):
        mx.plan(w, DOCS, TOKS, budget=None, max_epochs=1)


def test_parse_budget():
    assert mx.parse_budget("10M") == 10_000_000
    assert mx.parse_budget("1.5k") == 1500
    assert mx.parse_budget("1e6") == 1_000_000
    assert mx.parse_budget(None) is None and mx.parse_budget("all") is None
    with pytest.raises(mx.WeightError):
        mx.parse_budget("lots")
    with pytest.raises(mx.WeightError):
        mx.parse_budget(-5)
