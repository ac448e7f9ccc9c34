"""A supervised fastText quality classifier: train on good vs bad examples, score documents by P(good).

    model = train_classifier(train_texts, train_labels, params={"epoch": 25})
    model.save_model("quality.bin")
    scores = score_texts(["Some text."], "quality.bin")          # [P(label == "hq")]
    report = evaluate(scores, [True], threshold=0.5)              # precision / recall / F1

Training and scoring share `prepare_text`, so the model sees the same tokens in both. The split into train and
held-out sets is by a hash of the document id (`split_of`), never by random draws, so it is stable across runs.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile

import fasttext

LABEL_PREFIX = "__label__"

# Defaults of the `filter.classifier` config section (conf/pipeline.yaml documents each one).
DEFAULT_CLASSIFIER_CONF = {
    "model_path": None,      # None: classifier off
    "threshold": 0.5,        # keep when P(positive_label) >= threshold
    "positive_label": "hq",  # label of the good class in the training data
    "max_chars": 10000,      # only the first max_chars characters of a document are scored
}

# fastText hyper-parameters used by jobs/train_classifier.py unless overridden. thread=1 with a fixed seed makes
# training reproducible (fastText's Hogwild updates with several threads are not).
DEFAULT_TRAIN_PARAMS = {
    "lr": 0.5, "epoch": 25, "wordNgrams": 2, "dim": 64, "minn": 0, "maxn": 0, "minCount": 1,
    "loss": "softmax", "bucket": 200000, "thread": 1, "seed": 0, "verbose": 0,
}

_MODELS: dict[str, object] = {}
_PUNCT = re.compile(r"([^\w\s])", re.UNICODE)


def prepare_text(text: str | None, max_chars: int = DEFAULT_CLASSIFIER_CONF["max_chars"]) -> str:
    """One lower-cased line with punctuation split off as separate tokens."""
    text = (text or "")[:max_chars].lower()
    return " ".join(_PUNCT.sub(r" \1 ", text).split())


def split_of(doc_id: str, val_fraction: float) -> str:
    """"val" for a stable `val_fraction` share of ids (by SHA-1 of the id), else "train"."""
    h = int.from_bytes(hashlib.sha1(str(doc_id).encode("utf-8")).digest()[:8], "big")
    return "val" if h / 2.0**64 < val_fraction else "train"


def load_classifier(model_path: str):
    path = os.path.abspath(model_path)
    model = _MODELS.get(path)
    if model is None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"quality classifier model not found: {path}")
        fasttext.FastText.eprint = lambda *a, **k: None
        model = fasttext.load_model(path)
        _MODELS[path] = model
    return model


def score_texts(texts: list[str], model_or_path, positive_label: str = "hq",
                max_chars: int = DEFAULT_CLASSIFIER_CONF["max_chars"]) -> list[float]:
    """P(positive_label) for each text, in one batched predict call."""
    if not texts:
        return []
    model = load_classifier(model_or_path) if isinstance(model_or_path, str) else model_or_path
    want = LABEL_PREFIX + positive_label
    if want not in model.get_labels():
        raise ValueError(f"classifier has no label {positive_label!r} (labels: {model.get_labels()})")
    labels, probs = model.predict([prepare_text(t, max_chars) for t in texts], k=-1)
    out = []
    for labs, prs in zip(labels, probs):
        d = dict(zip(labs, prs))
        out.append(min(1.0, max(0.0, float(d.get(want, 0.0)))))
    return out


def classifier_reason(score: float, threshold: float) -> str | None:
    return None if score >= threshold else "classifier:low_score"


def train_classifier(texts: list[str], labels: list[str], params: dict | None = None,
                     max_chars: int = DEFAULT_CLASSIFIER_CONF["max_chars"], work_dir: str | None = None):
    """Train a fastText supervised model on (text, label) pairs; labels are plain names such as "hq"/"lq"."""
    if not texts:
        raise ValueError("no training examples")
    if len(set(labels)) < 2:
        raise ValueError(f"need examples of at least two labels, got {sorted(set(labels))}")
    fd, path = tempfile.mkstemp(prefix="lmr-ft-train-", suffix=".txt", dir=work_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for text, label in zip(texts, labels):
                f.write(f"{LABEL_PREFIX}{label} {prepare_text(text, max_chars)}\n")
        return train_classifier_file(path, params)
    finally:
        os.unlink(path)


def train_classifier_file(path: str, params: dict | None = None):
    """Train from a fastText-format file (`__label__X prepared text` per line)."""
    fasttext.FastText.eprint = lambda *a, **k: None
    return fasttext.train_supervised(input=path, **{**DEFAULT_TRAIN_PARAMS, **(params or {})})


def evaluate(scores: list[float], is_positive: list[bool], threshold: float = 0.5) -> dict:
    """Precision, recall and F1 of "score >= threshold" for the positive class, plus the confusion counts."""
    tp = sum(1 for s, y in zip(scores, is_positive) if s >= threshold and y)
    fp = sum(1 for s, y in zip(scores, is_positive) if s >= threshold and not y)
    fn = sum(1 for s, y in zip(scores, is_positive) if s < threshold and y)
    tn = len(scores) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    acc = (tp + tn) / len(scores) if scores else 0.0
    return {"threshold": threshold, "n": len(scores), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "precision": precision, "recall": recall, "f1": f1, "accuracy": acc}
