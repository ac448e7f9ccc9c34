"""The fastText quality classifier: training job, held-out evaluation, determinism."""
import json
import os
import random

import pytest

from jobs import train_classifier
from udfs.classifier import evaluate, load_classifier, prepare_text, score_texts, split_of

DATA = os.path.join(os.path.dirname(__file__), "data", "langid", "paragraphs.jsonl")

BOILER = ["Home", "About us", "Contact", "Privacy Policy", "Terms of Use", "Login", "Sign up", "Cookie settings",
          "Share on Facebook", "Tweet", "All rights reserved", "Subscribe to our newsletter", "Read more",
          "Next page", "Previous", "Accept all cookies", "Skip to content", "Search", "Menu", "Cart (0)",
          "FAQ", "Sitemap", "Careers", "Press", "Follow us", "Back to top", "Loading...", "Click here"]
SPAM = ["cheap", "buy", "online", "best", "price", "discount", "free", "shipping", "casino", "bonus", "win",
        "viagra", "replica", "watches", "loans", "crypto", "deal", "sale", "offer", "now", "click"]


def junk_examples(n: int) -> list[str]:
    """Boilerplate menus, keyword spam and keyboard gibberish: what a quality classifier should score low."""
    rnd = random.Random(1234)
    out = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            out.append(" | ".join(rnd.choice(BOILER) for _ in range(rnd.randint(8, 25))) + f" © {2000 + i % 25}")
        elif kind == 1:
            out.append(" ".join(rnd.choice(SPAM) for _ in range(rnd.randint(20, 60))))
        else:
            out.append(" ".join("".join(rnd.choice("qwertyuiopasdfghjklzxcvbnm") for _ in range(rnd.randint(2, 9)))
                                for _ in range(rnd.randint(15, 60))))
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("clf")
    with open(DATA, encoding="utf-8") as f:
        prose = [json.loads(line)["text"] for line in f]
    pos, neg = d / "pos.jsonl", d / "neg.jsonl"
    with open(pos, "w") as f:
        for i, t in enumerate(prose):
            f.write(json.dumps({"id": f"p{i}", "text": t}) + "\n")
    with open(neg, "w") as f:
        for i, t in enumerate(junk_examples(600)):
            f.write(json.dumps({"id": f"n{i}", "text": t}) + "\n")
    out = str(d / "quality.bin")
    rc = train_classifier.main(["--positive-jsonl", str(pos), "--negative-jsonl", str(neg), "--out", out,
                                "--val-fraction", "0.3", "--param", "epoch=10"])
    assert rc == 0
    with open(str(d / "quality.json")) as f:
        report = json.load(f)
    return {"dir": d, "model": out, "report": report, "pos": str(pos), "neg": str(neg)}


def test_heldout_precision_recall(trained):
    # Chance level for precision is the positive share of the held-out split (about 0.5). The negatives share
    # almost no vocabulary with real prose, so a working classifier separates them nearly perfectly; 0.9 leaves
    # room for a few errors on this small set while failing any model that learnt nothing.
    h = trained["report"]["heldout"]
    print("held-out:", h)
    assert h["n"] >= 300
    assert h["precision"] >= 0.9 and h["recall"] >= 0.9 and h["f1"] >= 0.9
    c = trained["report"]["counts"]
    assert c["val"]["hq"] > 100 and c["val"]["lq"] > 100 and c["train"]["hq"] > 300


def test_report_matches_independent_evaluation(trained):
    """Recompute the held-out metrics from the saved model and the hash split, outside the job."""
    model = load_classifier(trained["model"])
    texts, labels = [], []
    for path, lab in ((trained["pos"], True), (trained["neg"], False)):
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                if split_of(r["id"], 0.3) == "val":
                    texts.append(r["text"])
                    labels.append(lab)
    scores = score_texts(texts, model, "hq")
    ev = evaluate(scores, labels, 0.5)
    h = trained["report"]["heldout"]
    assert (ev["tp"], ev["fp"], ev["fn"], ev["tn"]) == (h["tp"], h["fp"], h["fn"], h["tn"])
    # unseen text of both kinds
    s_good, s_bad = score_texts(["The library provides functions for reading and writing compressed files, "
                                 "and it is used by many programs in the distribution.",
                                 "Home | Login | Cart (0) | Privacy Policy | Follow us | Back to top"], model, "hq")
    assert s_good > 0.5 > s_bad


def test_training_is_deterministic(trained, tmp_path):
    out = str(tmp_path / "again.bin")
    assert train_classifier.main(["--positive-jsonl", trained["pos"], "--negative-jsonl", trained["neg"],
                                  "--out", out, "--val-fraction", "0.3", "--param", "epoch=10"]) == 0
    with open(str(tmp_path / "again.json")) as f:
        again = json.load(f)
    assert again["model_sha256"] == trained["report"]["model_sha256"]


def test_split_and_prepare():
    ids = [f"doc-{i}" for i in range(4000)]
    val = [i for i in ids if split_of(i, 0.25) == "val"]
    assert 850 < len(val) < 1150
    assert val == [i for i in ids if split_of(i, 0.25) == "val"]
    assert prepare_text("Hello,\nWorld!  Foo") == "hello , world ! foo"


def test_cli_errors(tmp_path, capsys):
    rc = train_classifier.run_main("train_classifier", train_classifier.main,
                                   ["--positive-jsonl", str(tmp_path / "missing.jsonl"),
                                    "--negative-jsonl", str(tmp_path / "missing2.jsonl"), "--out", "x.bin"])
    assert rc == 2
    assert "JSONL file not found" in capsys.readouterr().err
