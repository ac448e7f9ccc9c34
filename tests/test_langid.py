"""Language ID with the real lid.176 model on a shipped labelled set of real paragraphs (10 languages)."""
import collections
import json
import os

import pytest

from udfs.langid import default_model_path, langid_reason, load_model, predict_languages

DATA = os.path.join(os.path.dirname(__file__), "data", "langid", "paragraphs.jsonl")


def _rows():
    with open(DATA, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_labelled_set_is_real_and_multilingual():
    rows = _rows()
    per_lang = collections.Counter(r["lang"] for r in rows)
    assert len(per_lang) >= 4 and min(per_lang.values()) >= 50, per_lang
    assert len({r["text"] for r in rows}) == len(rows)
    assert all(r["origin"].startswith("debian-ddtp:") for r in rows)


def test_accuracy_on_labelled_set():
    rows = _rows()
    preds = predict_languages([r["text"] for r in rows])
    correct = [p[0] == r["lang"] for p, r in zip(preds, rows)]
    acc = sum(correct) / len(rows)
    wrong = [(r["lang"], p, r["text"][:80]) for p, r, ok in zip(preds, rows, correct) if not ok]
    print(f"langid accuracy {acc:.4f} on {len(rows)} paragraphs")
    assert acc >= 0.98, wrong
    for lang in {r["lang"] for r in rows}:
        sub = [ok for ok, r in zip(correct, rows) if r["lang"] == lang]
        assert sum(sub) / len(sub) >= 0.9, lang


def test_batch_equals_single_and_newlines_handled():
    rows = _rows()[::37]
    batch = predict_languages([r["text"] for r in rows])
    single = [predict_languages([r["text"]])[0] for r in rows]
    assert batch == single
    text = rows[0]["text"]
    multi = text.replace(" ", "\n", 5).replace(" ", "\r\n", 3)
    assert predict_languages([multi])[0][0] == predict_languages([text])[0][0]
    # labels are bare ISO codes and scores probabilities
    assert all(not lang.startswith("__label__") and 0.0 <= s <= 1.0 for lang, s in batch)


def test_reasons():
    assert langid_reason("en", 0.9, ["en"], 0.65) is None
    assert langid_reason("de", 0.99, ["en"], 0.65) == "langid:de"
    assert langid_reason("de", 0.99, ["en", "de"], 0.65) is None
    assert langid_reason("en", 0.5, ["en"], 0.65) == "langid:low_score"
    lang, score = predict_languages(["Der Hund läuft schnell über die große Wiese und bellt laut."])[0]
    assert lang == "de" and langid_reason(lang, score, ["en"], 0.65) == "langid:de"


def test_model_cached_and_missing_file_error(tmp_path):
    assert os.path.basename(default_model_path()) == "lid.176.ftz"
    assert load_model() is load_model(default_model_path())
    missing = str(tmp_path / "nope" / "lid.176.bin")
    with pytest.raises(FileNotFoundError, match="language-ID model not found"):
        load_model(missing)
