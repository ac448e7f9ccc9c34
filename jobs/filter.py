"""Filter stage: language ID, quality heuristics and an optional fastText quality classifier.

Reads `documents` (or --input-table) and writes every document to exactly one of two tables, and a row per
document to a third:

* `filtered`: kept documents, `text` replaced by the C4-cleaned text (n_bytes, n_tokens_est, text_sha256
  recomputed; the original byte count kept in n_bytes_raw), plus lang, lang_score, quality_signals
  (map<string,double>) and quality_score when the classifier is on;
* `rejected`: dropped documents unchanged, plus lang, lang_score, reason, quality_signals (and quality_score);
* `filter_signals`: id, source, domain, lang, lang_score, quality_score, reason, kept, n_bytes_raw / n_bytes_clean,
  n_tokens_raw / n_tokens_clean (before / after C4 line cleaning) and one column per quality signal, measured for
  every document whatever rule failed first. `decision_column(resolve_config(section))` re-decides it under other
  thresholds as one Spark query (notebooks/05_threshold_tuning.py).

Steps, in order; the first that fails gives the reason:
  0. url         when filter.url.blocklist (a domain list file) or filter.url.banned_words is set
                 (udfs/urlfilter.py): the host of the document's `url`, or a parent domain of it down to the
                 registered domain, is listed -> url:blocklist; a token of the URL is a banned word
                 -> url:banned_word. Documents without a url pass.
  1. langid      lid.176 top language must be in filter.langid.languages with probability >= threshold
                 -> langid:<lang> | langid:low_score
  2. quality     udfs.quality.check_quality (Gopher repetition, Gopher quality, C4, FineWeb) on the raw text
                 -> that module's reason strings; its C4 line cleaning gives the kept text
  filter.domains.<domain> can turn langid off and override quality parameters for one domain: the web heuristics
  are prose rules, and code, for one, fails them by design (conf/pipeline.yaml switches them off for `code`).
  3. classifier  when filter.classifier.model_path is set: P(positive label) of the cleaned text >= threshold
                 -> classifier:low_score
Every document is annotated (no short-circuit): the URL signals, language, every quality signal, the classifier
score; the reason is the first rule that fails.

Text: with filter.ftfy on, ftfy repairs mojibake before every step (the rules see the repaired text). The text
written to `filtered` is the C4-cleaned text with, when filter.pii.enabled, its PII replaced by fixed placeholders
(udfs/pii.py: email addresses, public IPv4 / IPv6 addresses, phone numbers when filter.pii.phones): counts per kind
in the metrics row's extra.pii, the ids of a few changed documents (no values) in audit/<filtered table>_pii.jsonl.
Rejected documents are written as they came. The decisions never depend on the redaction.

All Python work happens in one mapInArrow pass over Arrow batches; the models load once per worker process.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import copy
import hashlib
import time

from jobs import direct
from jobs.cli import UserError, run_main
from jobs.runner import Stage, stage_main
from jobs.schema import estimate_tokens, estimate_tokens_arrow, estimate_tokens_col
from jobs.stage import count_docs_tokens, log
from udfs.common import REPO_ROOT, nearest

REQUIRED_COLUMNS = ("id", "text", "n_bytes", "n_tokens_est", "text_sha256")
TEXT_DERIVED = ("text", "n_bytes", "n_tokens_est", "text_sha256")
# columns the stage adds: (name, Spark DDL type)
ADDED = [("n_bytes_raw", "bigint"), ("lang", "string"), ("lang_score", "double"), ("reason", "string"),
         ("quality_signals", "map<string,double>"), ("quality_score", "double"), ("_n_tokens_raw", "bigint"),
         ("_n_bytes_clean", "bigint"), *((f"_pii_{k}", "bigint") for k in ("email", "ipv4", "ipv6", "phone"))]
PII_KINDS = ("email", "ipv4", "ipv6", "phone")  # udfs.pii.KINDS; the _pii_<kind> columns count replacements


# ---- configuration ---------------------------------------------------------------------------------------------
def _deep_merge(base: dict, over: dict | None) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve_config(cfg: dict | None) -> dict:
    """The `filter` section with every default filled in and values normalised; raises UserError if invalid."""
    from udfs.classifier import DEFAULT_CLASSIFIER_CONF
    from udfs.langid import DEFAULT_LANGID_CONF
    from udfs.quality import DEFAULT_QUALITY_CONF, DOMAIN_PRESETS, check_quality, normalise_conf

    cfg = dict(cfg or {})
    if isinstance(cfg.get("quality"), dict):
        cfg["quality"] = normalise_conf(cfg["quality"])
    out = {
        "langid": _deep_merge(DEFAULT_LANGID_CONF, cfg.get("langid")),
        "quality": _deep_merge(DEFAULT_QUALITY_CONF, cfg.get("quality")),
        "classifier": _deep_merge(DEFAULT_CLASSIFIER_CONF, cfg.get("classifier")),
        "audit_per_reason": int(cfg.get("audit_per_reason", 5)),
        "loud_loss_share": float(cfg.get("loud_loss_share", 0.5)),
        "writer": cfg.get("writer", "auto"),
        "url": _url_conf(cfg.get("url")),
        "pii": _pii_conf(cfg.get("pii")),
        "ftfy": cfg.get("ftfy", False),
        "by_domain": {},
        "by_language": {},
    }
    if not isinstance(out["ftfy"], bool):
        raise UserError(f"filter.ftfy must be true or false, got {out['ftfy']!r}")
    langs = _languages(out["langid"]["languages"])
    if not langs:
        raise UserError("filter.langid.languages is empty: name at least one language code, e.g. en")
    out["langid"]["languages"] = langs
    for sect in ("langid", "classifier"):
        out[sect]["threshold"] = _threshold(f"filter.{sect}.threshold", out[sect]["threshold"])
    out["langid"]["thresholds"] = _thresholds("filter.langid.thresholds", out["langid"].get("thresholds"))
    # check_quality merges its own defaults; it gets the overrides as written, and an unknown key is a user error
    out["quality_overrides"] = copy.deepcopy(cfg.get("quality") or {})
    if not isinstance(out["quality_overrides"], dict):
        raise UserError("filter.quality must be a mapping of quality filter name -> parameters")
    try:
        check_quality("Config check.", out["quality_overrides"])
    except ValueError as e:
        raise UserError(str(e).splitlines()[0]) from None
    # per detected language: quality overrides on top of whatever the domain uses (e.g. German stop words)
    by_lang = cfg.get("by_language") or {}
    if not isinstance(by_lang, dict):
        raise UserError("filter.by_language must be a mapping of language -> {quality: {...}}")
    for lang, lcfg in by_lang.items():
        lcfg = lcfg or {}
        if not isinstance(lcfg, dict) or set(lcfg) - {"quality"}:
            bad = sorted(set(lcfg) - {"quality"}) if isinstance(lcfg, dict) else [repr(lcfg)]
            raise UserError(f"filter.by_language.{lang}: unknown key(s) {', '.join(bad)} (known: quality; the "
                            f"language's langid threshold is filter.langid.thresholds.{lang})")
        q = normalise_conf(lcfg.get("quality") or {})
        try:
            check_quality("Config check.", q)
        except ValueError as e:
            raise UserError(f"filter.by_language.{lang}: {str(e).splitlines()[0]}") from None
        out["by_language"][str(lang)] = q
    out["default"] = _rules_for(out, out["quality_overrides"], preset=None, langid_on=True,
                                languages=out["langid"]["languages"], threshold=out["langid"]["threshold"],
                                thresholds=out["langid"]["thresholds"])
    domains = cfg.get("domains") or {}
    if not isinstance(domains, dict):
        raise UserError("filter.domains must be a mapping of domain -> {langid: {enabled: ...}, quality: {...}}")
    for domain, dcfg in domains.items():
        dcfg = dcfg or {}
        if not isinstance(dcfg, dict):
            raise UserError(f"filter.domains.{domain} must be a mapping, e.g. {{preset: docs}}, got {dcfg!r}")
        unknown = sorted(set(dcfg) - {"langid", "quality", "preset"})
        if unknown:
            raise UserError(f"filter.domains.{domain}: unknown key(s) {', '.join(unknown)} "
                            f"(known: preset, langid, quality)")
        preset = dcfg.get("preset")
        if preset is not None:
            if preset not in DOMAIN_PRESETS:
                raise UserError(f"filter.domains.{domain}.preset: unknown preset {preset!r}"
                                f"{nearest(str(preset), DOMAIN_PRESETS)} (known: {', '.join(DOMAIN_PRESETS)})")
            # the preset first, the domain's own keys on top
            dcfg = _deep_merge(DOMAIN_PRESETS[preset], {k: v for k, v in dcfg.items() if k != "preset"})
        if isinstance(dcfg.get("quality"), dict):  # once, after the preset: its int n-gram keys meet --set's "2"
            dcfg = {**dcfg, "quality": normalise_conf(dcfg["quality"])}
        dl = dcfg.get("langid") or {}
        bad = sorted(set(dl) - DOMAIN_LANGID_KEYS)
        if bad:
            raise UserError(f"filter.domains.{domain}.langid: unknown key {bad[0]!r}{nearest(bad[0], DOMAIN_LANGID_KEYS)}")
        langid_on = dl.get("enabled", True)
        if not isinstance(langid_on, bool):
            raise UserError(f"filter.domains.{domain}.langid.enabled must be true or false, got {langid_on!r}")
        overrides = _deep_merge(out["quality_overrides"], dcfg.get("quality"))
        try:
            check_quality("Config check.", overrides)
        except ValueError as e:
            raise UserError(f"filter.domains.{domain}: {str(e).splitlines()[0]}") from None
        out["by_domain"][str(domain)] = _rules_for(
            out, overrides, preset=preset, langid_on=langid_on,
            languages=_languages(dl.get("languages", out["langid"]["languages"])),
            threshold=_threshold(f"filter.domains.{domain}.langid.threshold",
                                 dl.get("threshold", out["langid"]["threshold"])),
            thresholds={**out["langid"]["thresholds"],
                        **_thresholds(f"filter.domains.{domain}.langid.thresholds", dl.get("thresholds"))})
    for sect in ("langid", "classifier"):
        p = out[sect].get("model_path")
        if p in ("", "none", "null"):
            p = None
        out[sect]["model_path"] = os.path.abspath(p) if p else None
    return out


DOMAIN_LANGID_KEYS = {"enabled", "languages", "threshold", "thresholds"}
URL_KEYS = ("blocklist", "banned_words")
PII_DEFAULTS = {"enabled": True, "emails": True, "ips": True, "phones": False}


def _url_conf(c) -> dict:
    """filter.url: the blocklist as an absolute path (a relative one is looked up from the working directory,
    then from the repository root; its existence is checked when the stage runs) or None, and the banned words
    lowercased, each one URL token."""
    from udfs.urlfilter import tokens

    c = c or {}
    if not isinstance(c, dict):
        raise UserError(f"filter.url must be a mapping {{blocklist: FILE, banned_words: [...]}}, got {c!r}")
    bad = sorted(set(c) - set(URL_KEYS))
    if bad:
        raise UserError(f"filter.url: unknown key {bad[0]!r}{nearest(bad[0], URL_KEYS)} (known: {', '.join(URL_KEYS)})")
    path = c.get("blocklist")
    if path in ("", "none", "null"):
        path = None
    if path is not None:
        if not isinstance(path, str):
            raise UserError(f"filter.url.blocklist must be a file path or null, got {path!r}")
        if not os.path.isabs(path) and not os.path.exists(path) and os.path.exists(os.path.join(REPO_ROOT, path)):
            path = os.path.join(REPO_ROOT, path)
        path = os.path.abspath(path)
    words = c.get("banned_words") or []
    if isinstance(words, (str, int)):
        words = [words]
    if not isinstance(words, list):
        raise UserError(f"filter.url.banned_words must be a list of words, got {words!r}")
    out = set()
    for w in words:
        w = str(w).strip().lower()
        if not w:
            continue
        if tokens(w) != {w}:
            raise UserError(f"filter.url.banned_words: {w!r} is not one URL token (letters and digits only: a URL is "
                            f"split on every other character before the words are looked up)")
        out.add(w)
    return {"blocklist": path, "banned_words": sorted(out)}


def _pii_conf(c) -> dict:
    c = c or {}
    if not isinstance(c, dict):
        raise UserError(f"filter.pii must be a mapping {{enabled, emails, ips, phones}}, got {c!r}")
    bad = sorted(set(c) - set(PII_DEFAULTS))
    if bad:
        raise UserError(f"filter.pii: unknown key {bad[0]!r}{nearest(bad[0], PII_DEFAULTS)} "
                        f"(known: {', '.join(PII_DEFAULTS)})")
    out = {**PII_DEFAULTS, **c}
    for k, v in out.items():
        if not isinstance(v, bool):
            raise UserError(f"filter.pii.{k} must be true or false, got {v!r}")
    return out


def pii_kinds(cfg: dict) -> list[str]:
    """The PII kinds the config replaces (udfs.pii kinds), [] when filter.pii is off."""
    p = cfg["pii"]
    if not p["enabled"]:
        return []
    return [k for k, on in (("email", p["emails"]), ("ipv4", p["ips"]), ("ipv6", p["ips"]), ("phone", p["phones"]))
            if on]


def url_signal_names(cfg: dict) -> list[str]:
    """The URL filter's signals measured under this config (udfs.urlfilter): one per configured check."""
    from udfs.urlfilter import SIGNAL_BANNED_WORDS, SIGNAL_BLOCKLIST

    u = cfg["url"]
    return ([SIGNAL_BLOCKLIST] if u["blocklist"] else []) + ([SIGNAL_BANNED_WORDS] if u["banned_words"] else [])


def _rules_for(out: dict, overrides: dict, **langid) -> dict:
    """The rules of one domain (or of the default): langid settings, its quality overrides, and per detected
    language the overrides with filter.by_language on top."""
    return {**langid, "langid": langid.pop("langid_on"), "quality_overrides": overrides,
            "by_language": {lang: _deep_merge(overrides, q) for lang, q in out["by_language"].items()}}


def quality_overrides_for(d: dict, lang: str | None) -> dict:
    return d["by_language"].get(lang, d["quality_overrides"])


def group_counts(stats, key: str) -> dict:
    """{value of `key`: docs/tokens in and kept, top rejection reasons} from rows of (reason, key, docs, tok...)."""
    out: dict = {}
    for r in stats:
        g = out.setdefault(str(r[key]), {"docs_in": 0, "docs_out": 0, "tokens_in": 0, "tokens_out": 0,
                                         "reasons": {}})
        g["docs_in"] += int(r["docs"])
        g["tokens_in"] += int(r["tok"])
        if r["reason"] is None:
            g["docs_out"] += int(r["docs"])
            g["tokens_out"] += int(r["tok_kept"])
        else:
            g["reasons"][r["reason"]] = g["reasons"].get(r["reason"], 0) + int(r["docs"])
    for g in out.values():
        g["reasons"] = dict(sorted(g["reasons"].items(), key=lambda kv: (-kv[1], kv[0]))[:5])
    return dict(sorted(out.items()))


def loud_losses(groups: dict, share: float) -> list[str]:
    """One line per domain / source that lost more than `share` of its documents (or all of them)."""
    lines = []
    for kind, counts in groups.items():
        for name, g in counts.items():
            lost = g["docs_in"] - g["docs_out"]
            if g["docs_in"] and (lost / g["docs_in"] > share or g["docs_out"] == 0):
                top = ", ".join(f"{k} {v}" for k, v in list(g["reasons"].items())[:3])
                lines.append(f"{kind} {name!r} lost {lost} of {g['docs_in']} documents "
                             f"({100 * lost / g['docs_in']:.1f}%; kept {g['docs_out']}); top reasons: {top}")
    return lines


def _languages(value) -> list[str]:
    """A language list from YAML or --set: a list, or a comma-separated string."""
    items = value.split(",") if isinstance(value, str) else (value or [])
    return [str(x).strip() for x in items if str(x).strip()]


def _threshold(key: str, t) -> float:
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= float(t) <= 1.0:
        raise UserError(f"{key} must be a number in [0, 1], got {t!r}")
    return float(t)


def _thresholds(key: str, m) -> dict:
    if m is None:
        return {}
    if not isinstance(m, dict):
        raise UserError(f"{key} must be a mapping language -> threshold, e.g. {{de: 0.8}}, got {m!r}")
    return {str(lang): _threshold(f"{key}.{lang}", t) for lang, t in m.items()}


def _model_fingerprint(path: str | None) -> str | None:
    if not path:
        return None
    if not os.path.isfile(path):
        raise UserError(f"model file not found: {path}")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


# ---- the per-batch Python logic ----------------------------------------------------------------------------------
def filter_records(texts: list[str], cfg: dict, domains: list[str | None] | None = None,
                   urls: list[str | None] | None = None) -> list[dict]:
    """Decisions for a batch of raw texts: dicts with lang, lang_score, reason, signals, clean_text, quality_score,
    pii. `cfg` is a resolved config (see `resolve_config`); `domains` (one per text) selects `filter.domains`
    overrides: a domain with langid disabled still gets `lang`/`lang_score`, but no langid rejection; `urls` (one
    per text, None = no urls) feed the URL filter.

    Every document is annotated: the URL signals, language, every quality signal and the classifier score are
    measured whatever rule fails first (udfs.quality.annotate), so the signals table can be re-thresholded without
    a re-run (`decision_column`). The reason is still the first failing rule, in the order url, langid, quality,
    classifier. `clean_text` is the C4-cleaned text (of the ftfy-repaired text when filter.ftfy is on); for a kept
    document it then has its PII replaced, and `pii` holds {kind: replacements} (empty when nothing was)."""
    from udfs.classifier import classifier_reason, score_texts
    from udfs.langid import langid_reason, predict_languages
    from udfs.quality import annotate

    lcfg, ccfg, ucfg = cfg["langid"], cfg["classifier"], cfg["url"]
    texts = [t or "" for t in texts]
    if cfg["ftfy"]:
        texts = [fix_mojibake(t) for t in texts]
    url_signals = [{}] * len(texts)
    if urls is not None and (ucfg["blocklist"] or ucfg["banned_words"]):
        from udfs.urlfilter import get_url_filter

        uf = get_url_filter(ucfg["blocklist"], ucfg["banned_words"])  # read once per worker process
        url_signals = [uf.measure(u) for u in urls]
    preds = predict_languages(texts, lcfg["model_path"])
    default = cfg["default"]
    by_domain = cfg.get("by_domain") or {}
    out = []
    for i, (text, (lang, score)) in enumerate(zip(texts, preds)):
        dcfg = by_domain.get(domains[i], default) if domains is not None else default
        reason = url_reason(url_signals[i]) or (
            langid_reason(lang, score, dcfg["languages"], dcfg["threshold"], dcfg["thresholds"])
            if dcfg["langid"] else None)
        q = annotate(text, quality_overrides_for(dcfg, lang))
        signals = {str(k): float(v) for k, v in q.signals.items()}
        signals.update(url_signals[i])
        out.append({"lang": lang, "lang_score": score, "reason": reason or q.reason, "clean_text": q.text,
                    "signals": signals, "quality_score": None, "pii": {}})
    if ccfg["model_path"]:
        scores = score_texts([d["clean_text"] for d in out], ccfg["model_path"], ccfg["positive_label"],
                             int(ccfg["max_chars"]))
        for d, s in zip(out, scores):
            d["quality_score"] = s
            d["reason"] = d["reason"] or classifier_reason(s, ccfg["threshold"])
    if pii_kinds(cfg):  # after every decision: the redaction changes the text written, never a decision
        from udfs.pii import get_redactor

        p = cfg["pii"]
        redactor = get_redactor(p["emails"], p["ips"], p["phones"])
        for d in out:
            if d["reason"] is None:
                d["clean_text"], d["pii"] = redactor.redact(d["clean_text"])
    return out


def url_reason(signals: dict) -> str | None:
    from udfs.urlfilter import URLFilter

    return URLFilter.decide(signals) if signals else None


_FTFY_CONFIG = None


def fix_mojibake(text: str) -> str:
    """ftfy.fix_text with the encoding repairs only, as datatrove's FTFYFormatter: no Unicode normalisation, no
    uncurled quotes, ligatures, character widths or line breaks (those would rewrite correct text)."""
    global _FTFY_CONFIG
    import ftfy

    if _FTFY_CONFIG is None:
        _FTFY_CONFIG = ftfy.TextFixerConfig(unescape_html="auto", remove_terminal_escapes=True, fix_encoding=True,
                                            restore_byte_a0=True, replace_lossy_sequences=True,
                                            decode_inconsistent_utf8=True, fix_c1_controls=True,
                                            fix_latin_ligatures=False, fix_character_width=False,
                                            uncurl_quotes=False, fix_line_breaks=False, fix_surrogates=True,
                                            remove_control_chars=True, normalization=None)
    return ftfy.fix_text(text, config=_FTFY_CONFIG)


def ship_blocklist(spark, cfg: dict) -> dict:
    """On a cluster whose executors may not see the driver's blocklist path, the file also goes out with
    SparkContext.addFile; a worker that cannot read the path opens its SparkFiles copy (`_worker_cfg`)."""
    path = cfg["url"]["blocklist"]
    if not path or spark.sparkContext.master.startswith("local"):
        return cfg
    try:
        spark.sparkContext.addFile(path)
    except Exception as e:  # noqa: BLE001 - e.g. another file of that name already added: workers read the path
        log(f"filter: could not ship {path} to the executors ({type(e).__name__}); they read it at that path")
        return cfg
    return {**cfg, "url": {**cfg["url"], "spark_file": os.path.basename(path)}}


def _worker_cfg(cfg: dict) -> dict:
    u = cfg.get("url") or {}
    if u.get("spark_file") and not os.path.exists(u["blocklist"]):
        from pyspark import SparkFiles

        return {**cfg, "url": {**u, "blocklist": SparkFiles.get(u["spark_file"])}}
    return cfg


def filter_batches(batches, cfg: dict):
    """mapInArrow body: each input RecordBatch -> the same rows with kept texts cleaned and the ADDED columns."""
    import pyarrow as pa

    cfg = _worker_cfg(cfg)

    sig_type = pa.map_(pa.string(), pa.float64())
    for batch in batches:
        if batch.num_rows == 0:
            continue
        texts = batch.column("text").to_pylist()
        n_bytes_in = batch.column("n_bytes").to_pylist()
        n_tok_in = batch.column("n_tokens_est").to_pylist()
        domains = batch.column("domain").to_pylist() if "domain" in batch.schema.names else None
        urls = batch.column("url").to_pylist() if "url" in batch.schema.names else None
        decisions = filter_records(texts, cfg, domains, urls)
        new = {c: batch.column(c).to_pylist() for c in TEXT_DERIVED}
        n_clean = []
        for i, d in enumerate(decisions):
            b = d["clean_text"].encode("utf-8")
            n_clean.append(len(b))
            if d["reason"] is None:
                new["text"][i] = d["clean_text"]
                new["n_bytes"][i] = len(b)
                new["n_tokens_est"][i] = estimate_tokens(len(b))
                new["text_sha256"][i] = hashlib.sha256(b).hexdigest()
        cols, names = [], []
        for name in batch.schema.names:
            col = batch.column(name)
            if name in TEXT_DERIVED:
                col = pa.array(new[name], type=col.type)
            cols.append(col)
            names.append(name)
        added = {
            "n_bytes_raw": pa.array(n_bytes_in, type=pa.int64()),
            "lang": pa.array([d["lang"] for d in decisions], type=pa.string()),
            "lang_score": pa.array([d["lang_score"] for d in decisions], type=pa.float64()),
            "reason": pa.array([d["reason"] for d in decisions], type=pa.string()),
            "quality_signals": pa.array([sorted(d["signals"].items()) for d in decisions], type=sig_type),
            "quality_score": pa.array([d["quality_score"] for d in decisions], type=pa.float64()),
            "_n_tokens_raw": pa.array(n_tok_in, type=pa.int64()),
            "_n_bytes_clean": pa.array(n_clean, type=pa.int64()),
            **{f"_pii_{k}": pa.array([d["pii"].get(k, 0) for d in decisions], type=pa.int64()) for k in PII_KINDS},
        }
        for name, _ in ADDED:
            cols.append(added[name])
            names.append(name)
        yield pa.RecordBatch.from_arrays(cols, names=names)


# ---- re-thresholding over the signals table -------------------------------------------------------------------
def signal_names(cfg: dict) -> list[str]:
    """The signal columns of the signals table: every name udfs.quality can measure under this config (the
    paper's n-grams plus any n a domain configures), then the URL filter's signals when it is on."""
    from udfs.quality import SIGNAL_NAMES, _pairs, merge_conf
    names = list(SIGNAL_NAMES)
    every = [cfg["default"], *cfg["by_domain"].values()]
    for overrides in [d["quality_overrides"] for d in every] + [q for d in every for q in d["by_language"].values()]:
        rep_conf = merge_conf(overrides)["gopher_repetition"]
        for key, fmt in (("top_n_grams", "top_{}gram_char_frac"), ("dup_n_grams", "dup_{}gram_char_frac")):
            names += [fmt.format(n) for n, _ in _pairs(rep_conf[key]) if fmt.format(n) not in names]
    return names + url_signal_names(cfg)


def decision_column(cfg: dict, columns=None):
    """A Spark Column giving the filter's reason (null = kept) for each row of the signals table under the resolved
    filter config `cfg` (see `resolve_config`): the rules of udfs.quality.rules as CASE WHEN, per domain, after
    langid and before the classifier, as `filter_records` decides, with the URL rules first when `cfg` has the URL
    filter on. A changed document-level threshold is then a query over the table; rules that rewrite the text (C4
    line rules) still need a re-run. The URL signals record the run's own blocklist and banned words: turning either
    check off (or on, over a run that measured it) is a query, but a different list needs a re-run."""
    from pyspark.sql import functions as F
    from udfs.quality import merge_conf, rules
    from udfs.urlfilter import REASON_BANNED_WORD, REASON_BLOCKLIST, SIGNAL_BANNED_WORDS, SIGNAL_BLOCKLIST

    have = set(columns) if columns is not None else None

    def col(name):
        return F.col(f"`{name}`") if have is None or name in have else F.lit(None).cast("double")

    url_conds = [(col(sig) > 0, F.lit(reason)) for sig, reason in
                 ((SIGNAL_BLOCKLIST, REASON_BLOCKLIST), (SIGNAL_BANNED_WORDS, REASON_BANNED_WORD))
                 if sig in url_signal_names(cfg)]

    def chain(d: dict, overrides: dict):
        conds = list(url_conds)
        if d["langid"]:
            thr = F.lit(d["threshold"])
            for lang, t in sorted(d["thresholds"].items()):
                thr = F.when(F.col("lang") == lang, F.lit(t)).otherwise(thr)
            conds.append((~F.col("lang").isin(list(d["languages"])), F.concat(F.lit("langid:"), F.col("lang"))))
            conds.append((F.col("lang_score") < thr, F.lit("langid:low_score")))
        for fam, params in merge_conf(overrides).items():
            if not params["enabled"]:
                continue
            for reason, kind, sig, thr, other in rules(fam, params):
                v = col(sig)
                cond = {"max": lambda: v > thr, "min": lambda: v < thr, "min_nz": lambda: (v < thr) & (v != 0),
                        "zero": lambda: v == 0,
                        "line": lambda: (v > 0) & (F.lit(True) if other is None else
                                                   F.coalesce((col(other) == 0) | (v <= col(other)), F.lit(True)))
                        }[kind]()
                conds.append((cond, F.lit(f"{fam}:{reason}")))
        if cfg["classifier"]["model_path"]:
            conds.append((F.col("quality_score") < cfg["classifier"]["threshold"], F.lit("classifier:low_score")))
        out = F.lit(None).cast("string")
        for cond, reason in reversed(conds):
            out = F.when(cond, reason).otherwise(out)
        return out

    def per_language(d: dict):
        out = chain(d, d["quality_overrides"])
        for lang, overrides in sorted(d["by_language"].items()):
            out = F.when(F.col("lang") == lang, chain(d, overrides)).otherwise(out)
        return out

    out = per_language(cfg["default"])
    for domain, d in sorted(cfg["by_domain"].items()):
        out = F.when(F.col("domain") == domain, per_language(d)).otherwise(out)
    return out


def cut_lines(cfg: dict) -> dict:
    """{domain or "*" (then "@lang" for filter.by_language): [[family:reason, kind, signal, threshold], ...]}: the
    document-level rules in force, for the report's and notebooks' histograms (metrics extra.cuts); langid as
    ["langid:low_score", "min", "lang_score", t]."""
    from udfs.quality import merge_conf, rules

    def one(d, overrides):
        out = [["langid:low_score", "min", "lang_score", d["threshold"]]] if d["langid"] else []
        for fam, params in merge_conf(overrides).items():
            if params["enabled"]:
                out += [[f"{fam}:{r}", kind, sig, thr] for r, kind, sig, thr, _ in rules(fam, params)
                        if thr is not None]
        return out

    out = {}
    for name, d in [("*", cfg["default"]), *sorted(cfg["by_domain"].items())]:
        out[name] = one(d, d["quality_overrides"])
        out.update({f"{name}@{lang}": one(d, q) for lang, q in sorted(d["by_language"].items())})
    return out


def signals_frame(combined, names: list[str]):
    """One row per input document: identity, decision, sizes before/after C4 cleaning, one column per signal."""
    from pyspark.sql import functions as F
    ident = [F.col(c) if c in combined.columns else F.lit(None).cast("string").alias(c)
             for c in ("id", "source", "domain")]
    return combined.select(
        *ident, "lang", "lang_score", "quality_score", "reason", F.col("reason").isNull().alias("kept"),
        "n_bytes_raw", F.col("_n_bytes_clean").alias("n_bytes_clean"), F.col("_n_tokens_raw").alias("n_tokens_raw"),
        estimate_tokens_col(F.col("_n_bytes_clean")).alias("n_tokens_clean"),
        *[F.col("quality_signals")[n].alias(n) for n in names])


# ---- the stage ---------------------------------------------------------------------------------------------------
def prepare(ctx) -> None:
    """Find the models and fingerprint them: a changed model file is a different run."""
    cfg = ctx.params
    langid_model = cfg["langid"]["model_path"]
    if langid_model is None:
        from udfs.langid import default_model_path
        langid_model = default_model_path()
    ctx.state["langid_model"] = langid_model
    ctx.extra_key = {
        "langid_model": _model_fingerprint(langid_model),
        "classifier_model": _model_fingerprint(cfg["classifier"]["model_path"])}
    blocklist = cfg["url"]["blocklist"]
    if blocklist:  # an edited blocklist is a different run
        if not os.path.isfile(blocklist):
            raise UserError(f"filter.url.blocklist: file not found: {blocklist}")
        from udfs.urlfilter import get_url_filter

        ctx.extra_key["url_blocklist"] = _model_fingerprint(blocklist)
        n = len(get_url_filter(blocklist, cfg["url"]["banned_words"]).blocklist)
        ctx.state["url_blocklist_entries"] = n


FILTER_META_DDL = ("kind string, tbl string, part string, reason string, lang string, domain string, "
                   "source string, docs bigint, tok bigint, tok_kept bigint, id string, row string")
PII_COLS = [f"_pii_{k}" for k in PII_KINDS]


class PIITally:
    """PII replacements in kept documents: totals per kind, documents changed, and the `k` smallest ids of changed
    documents with their counts (no values) for the audit file."""

    def __init__(self, k: int):
        self.k, self.totals, self.docs, self.sample = max(k, 0), dict.fromkeys(PII_KINDS, 0), 0, []

    def add_row(self, doc_id, source, domain, counts: dict) -> None:
        if not any(counts.values()):
            return
        self.docs += 1
        for kind, n in counts.items():
            self.totals[kind] += n
        if self.k:
            self.sample.append({"id": doc_id, "source": source, "domain": domain,
                                **{kind: n for kind, n in counts.items() if n}})
            if len(self.sample) > 4 * self.k:
                self.trim()

    def trim(self) -> None:
        self.sample = sorted(self.sample, key=lambda r: r["id"])[:self.k]

    def offer(self, batch) -> None:
        """The kept rows of one `filter_batches` batch."""
        import pyarrow.compute as pc

        total = None
        for c in PII_COLS:
            total = batch.column(c) if total is None else pc.add(total, batch.column(c))
        changed = batch.filter(pc.greater(total, 0))
        if not changed.num_rows:
            return
        n = changed.num_rows
        cols = {c: changed.column(c).to_pylist() if c in changed.schema.names else [None] * n
                for c in ("id", "source", "domain", *PII_COLS)}
        for i in range(n):
            self.add_row(cols["id"][i], cols["source"][i], cols["domain"][i],
                         {k: cols[f"_pii_{k}"][i] or 0 for k in PII_KINDS})

    def meta_rows(self) -> list[dict]:
        import json

        self.trim()
        out = [{"kind": "pii", "reason": kind, "docs": n} for kind, n in self.totals.items() if n]
        if self.docs:
            out.append({"kind": "pii", "reason": "documents", "docs": self.docs})
        return out + [{"kind": "pii_audit", "id": r["id"], "row": json.dumps(r, sort_keys=True)} for r in self.sample]


def pii_summary(cfg: dict, meta: list[dict]) -> tuple[dict | None, list[dict]]:
    """(metrics extra.pii: {kind: replacements for each kind that is on, documents: kept documents changed}, the
    audit sample: the audit_per_reason smallest ids) from every task's PIITally.meta_rows; (None, []) when off."""
    import json

    kinds = pii_kinds(cfg)
    if not kinds:
        return None, []
    totals = {**dict.fromkeys(kinds, 0), "documents": 0}
    for r in meta:
        if r["kind"] == "pii":
            totals[r["reason"]] = totals.get(r["reason"], 0) + int(r["docs"])
    sample = sorted((json.loads(r["row"]) for r in meta if r["kind"] == "pii_audit"), key=lambda r: r["id"])
    return totals, sample[:max(cfg["audit_per_reason"], 0)]


def signals_batch(cb, kept_mask, names: list[str], schema):
    """`signals_frame` on one Arrow batch of `filter_batches` output."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = cb.num_rows
    have = set(cb.schema.names)
    cols = {c: cb.column(c) if c in have else pa.nulls(n, pa.string()) for c in ("id", "source", "domain")}
    cols.update({c: cb.column(c) for c in ("lang", "lang_score", "quality_score", "reason", "n_bytes_raw")})
    cols.update(kept=kept_mask, n_bytes_clean=cb.column("_n_bytes_clean"), n_tokens_raw=cb.column("_n_tokens_raw"),
                n_tokens_clean=estimate_tokens_arrow(cb.column("_n_bytes_clean")))
    sig = cb.column("quality_signals")
    for name in names:
        cols[name] = pc.map_lookup(sig, pa.scalar(name, pa.string()), "first")
    return pa.RecordBatch.from_arrays([cols[f.name].cast(f.type) for f in schema], schema=schema)


def filter_write_fn(cfg: dict, paths: dict, schemas: dict, cols: dict, names: list[str], audit_k: int,
                    text_chars: int = 2000):
    """mapInArrow over documents: filter (`filter_batches`), write the kept, rejected and signals rows into this
    task's Parquet file of each table's write folder, and return FILTER_META_DDL rows only: the files, counts per
    (reason, lang, domain, source), and this task's `audit_k` smallest ids per rejection reason (as JSON)."""
    def run(batches):
        import pyarrow.compute as pc

        files, audit, stats = direct.TaskFiles(paths, schemas), direct.AuditHeap(audit_k, text_chars), {}
        pii = PIITally(audit_k) if pii_kinds(cfg) else None
        for cb in filter_batches(batches, cfg):
            kept_mask = pc.is_null(cb.column("reason"))
            kept = cb.filter(kept_mask)
            files.write("kept", direct.select(kept, cols["kept"], schemas["kept"]))
            if pii is not None:
                pii.offer(kept)
            rejected = direct.select(cb.filter(pc.invert(kept_mask)), cols["rejected"], schemas["rejected"])
            files.write("rejected", rejected)
            files.write("signals", signals_batch(cb, kept_mask, names, schemas["signals"]))
            n = cb.num_rows
            group = [cb.column(c).to_pylist() if c in cb.schema.names else [None] * n
                     for c in ("reason", "lang", "domain", "source")]
            tok_raw, tok = cb.column("_n_tokens_raw").to_pylist(), cb.column("n_tokens_est").to_pylist()
            for key, tr, tk in zip(zip(*group), tok_raw, tok):
                st = stats.get(key)
                if st is None:
                    st = stats[key] = [0, 0, 0]
                st[0] += 1
                st[1] += tr or 0
                st[2] += tk or 0
            audit.offer(rejected, "reason")
        out = files.close()
        out += [{"kind": "stat", "reason": k[0], "lang": k[1], "domain": k[2], "source": k[3], "docs": v[0],
                 "tok": v[1], "tok_kept": v[2]} for k, v in stats.items()]
        out += audit.rows()
        if pii is not None:
            out += pii.meta_rows()
        if out:
            yield direct.meta_batch(out, FILTER_META_DDL)

    return run


def plan(ctx) -> None:
    cfg, run = ctx.params, ctx.run
    cfg = ship_blocklist(ctx.spark, cfg)
    langid_model, fingerprints = ctx.state["langid_model"], ctx.extra_key
    from pyspark import StorageLevel
    from pyspark.sql import functions as F
    from pyspark.sql.types import StructType

    docs = ctx.input()
    missing = [c for c in REQUIRED_COLUMNS if c not in docs.columns]
    if missing:
        raise UserError(f"table '{ctx.args.input_table}' lacks column(s) {', '.join(missing)}: not a documents table")
    if ctx.state.get("url_blocklist_entries") is not None:  # after the input checks: their error is the only line
        log(f"filter: URL blocklist {cfg['url']['blocklist']}: {ctx.state['url_blocklist_entries']} domain(s)")
    clash = [n for n, _ in ADDED if n in docs.columns]
    if clash:
        raise UserError(f"table '{ctx.args.input_table}' already has column(s) {', '.join(clash)}: already filtered?")
    input_cols = docs.columns
    out_schema = StructType.fromDDL(", ".join(f"`{n}` {t}" for n, t in ADDED))
    out_schema = StructType(list(docs.schema.fields) + list(out_schema.fields))

    combined = docs.mapInArrow(lambda it: filter_batches(it, cfg), out_schema)
    with_score = ["quality_score"] if cfg["classifier"]["model_path"] else []
    cols = {"kept": [*input_cols, "n_bytes_raw", "lang", "lang_score", "quality_signals", *with_score],
            "rejected": [*input_cols, "lang", "lang_score", "reason", "quality_signals", *with_score]}
    kept = combined.where(F.col("reason").isNull()).select(*cols["kept"])
    rejected = combined.where(F.col("reason").isNotNull()).select(*cols["rejected"])
    signals = signals_frame(combined, signal_names(cfg))
    tables = {"kept": ctx.tables["output_table"], "rejected": ctx.tables["rejected_table"],
              "signals": ctx.tables["signals_table"]}
    audit_rows = None
    if direct.enabled(ctx):
        # one Spark job: the workers filter and write all three tables; counts and audit samples come back
        schemas = {"kept": direct.file_schema(kept), "rejected": direct.file_schema(rejected),
                   "signals": direct.file_schema(signals)}
        folders = direct.WriteFolders(ctx.lake, tables)
        t0 = time.perf_counter()
        try:
            meta = [r.asDict() for r in docs.mapInArrow(
                filter_write_fn(cfg, folders.paths, schemas, cols, signal_names(cfg), cfg["audit_per_reason"]),
                FILTER_META_DDL).collect()]
        except BaseException:
            folders.discard()
            raise
        folders.keep_only((r["tbl"], r["part"]) for r in meta if r["kind"] == "file")
        folders.commit(run, "overwrite", schemas, seconds_data={"kept": time.perf_counter() - t0})
        stats = [r for r in meta if r["kind"] == "stat"]
        docs_in, tokens_in = sum(r["docs"] for r in stats), sum(r["tok"] for r in stats)
        audit_rows = direct.audit_sample([r for r in meta if r["kind"] == "audit"], cfg["audit_per_reason"])
        pii, pii_sample = pii_summary(cfg, meta)
    else:
        docs_in, tokens_in = count_docs_tokens(docs)
        combined = combined.persist(StorageLevel.MEMORY_AND_DISK)
        run.write(kept, tables["kept"])
        run.write(rejected, tables["rejected"])
        run.write(signals, tables["signals"])
        by = combined
        for c in ("domain", "source"):
            if c not in by.columns:
                by = by.withColumn(c, F.lit(None).cast("string"))
        stats = (by.groupBy("reason", "lang", "domain", "source")
                 .agg(F.count(F.lit(1)).alias("docs"), F.coalesce(F.sum("_n_tokens_raw"), F.lit(0)).alias("tok"),
                      F.coalesce(F.sum("n_tokens_est"), F.lit(0)).alias("tok_kept"))
                 .collect())
        pii, pii_sample = None, []
        if pii_kinds(cfg):  # over the cached pass: the same totals and sample as the workers' PIITally
            kept_pii = by.where(F.col("reason").isNull() & (sum(F.col(c) for c in PII_COLS) > 0))
            tally = PIITally(cfg["audit_per_reason"])
            for r in (kept_pii.select("id", "source", "domain", *PII_COLS).orderBy("id")
                      .limit(max(cfg["audit_per_reason"], 0)).collect()):
                tally.add_row(r["id"], r["source"], r["domain"], {k: r[f"_pii_{k}"] for k in PII_KINDS})
            sums = kept_pii.agg(F.count(F.lit(1)).alias("documents"),
                                *[F.coalesce(F.sum(f"_pii_{k}"), F.lit(0)).alias(k) for k in PII_KINDS]).collect()[0]
            tally.totals, tally.docs = {k: int(sums[k]) for k in PII_KINDS}, int(sums["documents"])
            pii, pii_sample = pii_summary(cfg, tally.meta_rows())
    try:
        docs_out = sum(r["docs"] for r in stats if r["reason"] is None)
        # tokens of the text written (after C4 line cleaning), so token acceptance counts removed lines too
        tokens_out = sum(r["tok_kept"] for r in stats if r["reason"] is None)
        tokens_line_cleaning = sum(r["tok"] for r in stats if r["reason"] is None) - tokens_out
        reasons: dict[str, int] = {}
        lang_in: dict[str, int] = {}
        lang_kept: dict[str, int] = {}
        for r in stats:
            lang_in[r["lang"]] = lang_in.get(r["lang"], 0) + r["docs"]
            if r["reason"] is None:
                lang_kept[r["lang"]] = lang_kept.get(r["lang"], 0) + r["docs"]
            else:
                reasons[r["reason"]] = reasons.get(r["reason"], 0) + r["docs"]
        docs_rejected = sum(reasons.values())
        per_domain, per_source = group_counts(stats, "domain"), group_counts(stats, "source")
        losses = loud_losses({"domain": per_domain, "source": per_source}, cfg["loud_loss_share"])
        for line in losses:
            log(f"filter: WARNING: {line}")
        extra = {"languages_in": dict(sorted(lang_in.items(), key=lambda kv: (-kv[1], kv[0]))),
                 "languages_kept": dict(sorted(lang_kept.items(), key=lambda kv: (-kv[1], kv[0]))),
                 "tokens_removed_by_line_cleaning": tokens_line_cleaning,
                 "per_domain": per_domain, "per_source": per_source, "loud_losses": losses,
                 "presets": {d: v["preset"] for d, v in sorted(cfg["by_domain"].items()) if v.get("preset")},
                 "cuts": cut_lines(cfg),
                 **({"pii": pii} if pii is not None else {}),
                 **({"url_filter": {"blocklist": cfg["url"]["blocklist"],
                                    "blocklist_entries": ctx.state.get("url_blocklist_entries"),
                                    "banned_words": cfg["url"]["banned_words"],
                                    "rejected": {k: v for k, v in sorted(reasons.items()) if k.startswith("url:")}}}
                    if url_signal_names(cfg) else {}),
                 "rejected_table": ctx.tables["rejected_table"], "signals_table": ctx.tables["signals_table"],
                 "langid_model": langid_model,
                 "classifier_model": cfg["classifier"]["model_path"], **fingerprints}
        run.finish(docs_in=docs_in, docs_out=docs_out, docs_rejected=docs_rejected, tokens_in=tokens_in,
                   tokens_out=tokens_out, reasons=reasons, extra=extra)
        if cfg["audit_per_reason"] > 0:
            path = (run.write_audit_rows(audit_rows, tables["rejected"]) if audit_rows is not None
                    else run.write_audit(rejected, tables["rejected"], per_reason=cfg["audit_per_reason"]))
            log(f"filter: audit sample per reason in {path}")
        if pii is not None:
            line = ", ".join(f"{k} {v}" for k, v in pii.items() if k != "documents")
            log(f"filter: PII replaced in {pii['documents']} kept document(s): {line}")
            if pii_sample and cfg["audit_per_reason"] > 0:
                path = run.write_audit_rows(pii_sample, f"{tables['kept']}_pii", reason_col="id")
                log(f"filter: ids of documents with PII replaced (counts only, no values) in {path}")
    finally:
        combined.unpersist()  # cached on Spark's path only; a no-op otherwise
    return 0


STAGE = Stage(name="filter", doc=__doc__.strip(), input_table="documents",
              outputs={"output_table": "filtered", "rejected_table": "rejected", "signals_table": "filter_signals"},
              input_hint="run jobs/ingest.py first or pass --input-table",
              resolve=lambda cfg, args: resolve_config(cfg), prepare=prepare, plan=plan)
main = stage_main(STAGE)


if __name__ == "__main__":
    from udfs.common import exit_process

    exit_process(run_main("filter", main))
