"""The filter stage end to end: real Spark, real Delta tables, real lid.176, the real quality heuristics."""
import collections
import hashlib
import json
import os
import subprocess
import sys

import pytest

from jobs import filter as filter_job
from jobs.schema import DOCUMENT_COLUMNS, document_row, documents_df, estimate_tokens
from udfs.classifier import score_texts, train_classifier
from udfs.langid import langid_reason, predict_languages
from udfs.quality import check_quality

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "tests", "data", "langid", "paragraphs.jsonl")


def _h(*parts) -> int:
    return int(hashlib.md5("|".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def make_docs() -> list[dict]:
    """~300 varied documents built from the shipped real paragraphs: English prose, prose with boilerplate lines,
    nine other languages, mixed-language, too short, repeated, list-like, empty, numeric and lorem-ipsum docs."""
    by = collections.defaultdict(list)
    with open(DATA, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            by[r["lang"]].append(r["text"])
    others = sorted(k for k in by if k != "en")

    def paras(lang, i, k):  # k distinct paragraphs, chosen by hash
        return [by[lang][j] for j in sorted(range(len(by[lang])), key=lambda j: _h(lang, i, j))[:k]]

    out = []
    for i in range(120):
        out.append(("en_prose", "\n\n".join(paras("en", i, 3 + i % 4))))
    for i in range(30):
        ps = paras("en", 1000 + i, 4)
        ps.insert(2, "Please enable JavaScript to view this page.")
        ps.append("Click here to accept our cookie policy and terms of use.")
        out.append(("en_boiler_lines", "\n".join(ps)))
    for i in range(72):
        lang = others[i % len(others)]
        out.append((f"foreign_{lang}", "\n\n".join(paras(lang, i, 3 + i % 3))))
    for i in range(12):
        out.append(("foreign_de", "\n\n".join(paras("de", 100 + i, 3 + i % 3))))
    for i in range(20):
        out.append(("en_short", paras("en", 2000 + i, 1)[0].split(". ")[0] + "."))
    for i in range(20):
        out.append(("en_repeated", "\n".join(paras("en", 3000 + i, 1) * (5 + i % 5))))
    for i in range(20):
        words = " ".join(paras("en", 4000 + i, 3)).split()
        out.append(("en_list", "\n".join(" ".join(words[j:j + 4]) for j in range(0, len(words), 4))))
    for i in range(12):
        out.append(("mixed", "\n\n".join(paras("en", 5000 + i, 1) + paras("de", i, 1) + paras("fr", i, 1)
                                          + paras("ru", i, 1))))
    out += [("empty", ""), ("blank", "   \n\n  "), ("numbers", " ".join(str(_h(i)) for i in range(80))),
            ("lorem", "Lorem ipsum dolor sit amet. " + "\n\n".join(paras("en", 9000, 4)))]
    return [document_row(f"doc-{_h('id', i):08x}-{i}", text, source="paragraphs", domain=kind)
            for i, (kind, text) in enumerate(out)]


SHIPPED_QUALITY = __import__("jobs.config", fromlist=["load_config"]).load_config()["filter"]["quality"]


def python_loop(docs, languages=("en",), threshold=0.65, quality=None, clf=None, clf_threshold=0.5):
    """The same udfs called document by document, no Spark: {id: (reason, lang, clean_text, quality_score)}."""
    out = {}
    for d in docs:
        lang, score = predict_languages([d["text"]])[0]
        reason, clean, qs = langid_reason(lang, score, languages, threshold), None, None
        if reason is None:
            q = check_quality(d["text"], quality)
            reason, clean = q.reason, q.text
        if reason is None and clf is not None:
            qs = score_texts([clean], clf, "hq")[0]
            reason = None if qs >= clf_threshold else "classifier:low_score"
        out[d["id"]] = (reason, lang, clean, qs)
    return out


@pytest.fixture(scope="module")
def filtered_lake(spark, tmp_path_factory):
    from jobs.tables import Lake

    root = str(tmp_path_factory.mktemp("filter") / "lake")
    docs = make_docs()
    lake = Lake(spark, root)
    lake.write(documents_df(spark, docs).repartition(3), "documents")
    assert filter_job.main(["--lake", root]) == 0
    # the reference runs the shipped config's quality overrides too (C4 as FineWeb runs it)
    assert SHIPPED_QUALITY == {"c4": {"filter_no_terminal_punct": False}}
    return {"root": root, "lake": lake, "docs": docs, "ref": python_loop(docs, quality=SHIPPED_QUALITY)}


def _rows(lake, table):
    return {r["id"]: r for r in lake.read_arrow(table).to_pylist()}


def test_spark_equals_python_loop(filtered_lake):
    lake, ref, docs = filtered_lake["lake"], filtered_lake["ref"], filtered_lake["docs"]
    kept, rej = _rows(lake, "filtered"), _rows(lake, "rejected")
    assert set(kept) == {i for i, v in ref.items() if v[0] is None}
    assert {i: r["reason"] for i, r in rej.items()} == {i: v[0] for i, v in ref.items() if v[0] is not None}
    # a varied set: kept docs, langid rejections and several heuristic families
    reasons = collections.Counter(r["reason"].split(":")[0] for r in rej.values())
    assert len(kept) >= 80 and reasons["langid"] >= 70 and reasons["gopher_repetition"] >= 20
    # (C4 as FineWeb runs it keeps lines without terminal punctuation, so fewer C4 rejections than the paper's rule)
    assert reasons["gopher_quality"] >= 5 and reasons["c4"] >= 1
    for i, r in {**kept, **rej}.items():
        assert r["lang"] == ref[i][1]
    # German documents are rejected with their language as the reason
    by_id = {d["id"]: d for d in docs}
    assert all(rej[i]["reason"] == "langid:de" for i in rej if by_id[i]["domain"] == "foreign_de")


def test_conservation_and_columns(filtered_lake):
    lake, docs = filtered_lake["lake"], filtered_lake["docs"]
    kept, rej = _rows(lake, "filtered"), _rows(lake, "rejected")
    assert len(kept) + len(rej) == len(docs) and not set(kept) & set(rej)
    assert set(kept) | set(rej) == {d["id"] for d in docs}
    by_id = {d["id"]: d for d in docs}
    changed = 0
    for i, r in kept.items():
        clean = check_quality(by_id[i]["text"], SHIPPED_QUALITY).text
        b = clean.encode("utf-8")
        assert r["text"] == clean and r["n_bytes"] == len(b) and r["n_tokens_est"] == estimate_tokens(len(b))
        assert r["text_sha256"] == hashlib.sha256(b).hexdigest() and r["n_bytes_raw"] == by_id[i]["n_bytes"]
        assert isinstance(r["quality_signals"], list) and dict(r["quality_signals"])["word_count"] >= 50
        assert r["lang"] == "en" and r["lang_score"] >= 0.65 and "reason" not in r
        changed += clean != by_id[i]["text"]
    assert changed > 0  # C4 line cleaning removed the JavaScript/cookie lines somewhere
    for i, r in rej.items():
        for c in DOCUMENT_COLUMNS:  # rejected rows carry the input record unchanged
            assert r[c] == by_id[i][c], c
    assert "quality_score" not in next(iter(kept.values()))


def test_metrics_and_audit(filtered_lake):
    lake, docs, ref = filtered_lake["lake"], filtered_lake["docs"], filtered_lake["ref"]
    rows = [r for r in lake.read_arrow("metrics").to_pylist() if r["stage"] == "filter"]
    assert len(rows) == 1
    m = rows[0]
    n_kept = sum(v[0] is None for v in ref.values())
    assert (m["docs_in"], m["docs_out"], m["docs_rejected"]) == (len(docs), n_kept, len(docs) - n_kept)
    assert m["tokens_in"] == sum(d["n_tokens_est"] for d in docs)
    kept_raw = sum(d["n_tokens_est"] for d in docs if ref[d["id"]][0] is None)
    kept_clean = sum(estimate_tokens(len(ref[d["id"]][2].encode("utf-8"))) for d in docs if ref[d["id"]][0] is None)
    assert m["tokens_out"] == kept_clean  # the text written, after C4 line cleaning
    assert dict(m["reasons"]) == dict(collections.Counter(v[0] for v in ref.values() if v[0] is not None))
    extra = json.loads(m["extra"])
    assert extra["tokens_removed_by_line_cleaning"] == kept_raw - kept_clean > 0
    assert extra["languages_in"] == dict(collections.Counter(v[1] for v in ref.values()))
    assert extra["languages_kept"] == {"en": n_kept}
    with open(os.path.join(filtered_lake["root"], "audit", "rejected.jsonl")) as f:
        audit = [json.loads(line) for line in f]
    per_reason = collections.Counter(a["reason"] for a in audit)
    assert set(per_reason) == set(dict(m["reasons"])) and max(per_reason.values()) <= 5


def test_signals_table_has_every_document_and_its_sizes(filtered_lake):
    lake, docs = filtered_lake["lake"], filtered_lake["docs"]
    sig, kept = _rows(lake, "filter_signals"), _rows(lake, "filtered")
    assert set(sig) == {d["id"] for d in docs}
    assert {i for i, r in sig.items() if r["kept"]} == set(kept)
    for i, r in kept.items():
        assert sig[i]["n_tokens_clean"] == r["n_tokens_est"] and sig[i]["n_bytes_clean"] == r["n_bytes"]
        assert sig[i]["n_bytes_raw"] == r["n_bytes_raw"] and sig[i]["lang"] == r["lang"]
    # langid rejections are measured too: no short-circuit
    langid_rej = [r for r in sig.values() if (r["reason"] or "").startswith("langid:")]
    assert langid_rej and all(r["word_count"] is not None and r["dup_10gram_char_frac"] is not None
                              for r in langid_rej if r["chars"])


def test_rethresholding_the_signals_table_equals_rerunning_the_filter(filtered_lake):
    """New langid, quality and per-domain thresholds applied as one query over the first run's filter_signals give,
    document by document, the reasons a filter re-run with those thresholds writes."""
    lake, root = filtered_lake["lake"], filtered_lake["root"]
    sets = {"filter.langid.threshold": "0.9", "filter.langid.thresholds.en": "0.8",
            "filter.quality.gopher_quality.min_alpha_words_ratio": "0.7",
            "filter.quality.gopher_repetition.top_n_grams.2": "0.1",
            "filter.quality.fineweb.line_punct_thr": "0.4",
            "filter.quality.c4.min_num_sentences": "8",
            "filter.domains.en_list.quality.fineweb.enabled": "false",
            "filter.domains.en_short.quality.gopher_quality.min_doc_words": "5",
            "filter.domains.foreign_de.langid.languages": "de",
            "filter.by_language.de.quality.gopher_quality.min_stop_words": "0"}
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    assert filter_job.main(["--lake", root, "--output-table", "filtered_rt", "--rejected-table", "rejected_rt",
                            "--signals-table", "filter_signals_rt"] + args) == 0
    rerun = {i: r["reason"] for i, r in _rows(lake, "rejected_rt").items()}
    rerun.update({i: None for i in _rows(lake, "filtered_rt")})
    from jobs.config import apply_overrides, load_config
    section = apply_overrides(load_config(), [f"{k}={v}" for k, v in sets.items()])["filter"]
    cfg = filter_job.resolve_config(section)
    table = lake.read("filter_signals")
    query = {r["id"]: r["r"] for r in table.select("id", filter_job.decision_column(cfg, table.columns).alias("r"))
             .toLocalIterator()}
    assert query == rerun
    before = {i: r["reason"] for i, r in _rows(lake, "filter_signals").items()}
    changed = collections.Counter((before[i] or "kept", rerun[i] or "kept") for i in rerun if before[i] != rerun[i])
    assert sum(changed.values()) >= 30 and len(changed) >= 5, changed  # the new thresholds changed many decisions
    assert any(b.startswith("langid:") and a != b for b, a in changed)  # ...including language decisions
    # the same query under the first run's own config gives that run's reasons
    own = filter_job.resolve_config(load_config()["filter"])
    assert {r["id"]: r["r"] for r in table.select("id", filter_job.decision_column(own, table.columns).alias("r"))
            .toLocalIterator()} == before


def test_rerun_is_skipped(filtered_lake):
    lake, root = filtered_lake["lake"], filtered_lake["root"]
    before = {t: (lake.version(t), lake.read_arrow(t).num_rows) for t in ("filtered", "rejected", "metrics")}
    assert filter_job.main(["--lake", root]) == 0
    after = {t: (lake.version(t), lake.read_arrow(t).num_rows) for t in ("filtered", "rejected", "metrics")}
    assert before == after


def test_set_override_changes_decisions(filtered_lake):
    lake, root, docs = filtered_lake["lake"], filtered_lake["root"], filtered_lake["docs"]
    de_ids = {d["id"] for d in docs if d["domain"] == "foreign_de"}
    # German passes language ID, and the Gopher stop-word rule (English stop words) is relaxed for it
    sets = ["--set", "filter.langid.languages=en,de", "--set", "filter.quality.gopher_quality.min_stop_words=0"]
    assert filter_job.main(["--lake", root, "--output-table", "filtered_ende", "--rejected-table", "rejected_ende"]
                           + sets) == 0
    kept, rej = _rows(lake, "filtered_ende"), _rows(lake, "rejected_ende")
    ref = python_loop(docs, languages=["en", "de"], quality={**SHIPPED_QUALITY, "gopher_quality": {"min_stop_words": 0}})
    assert set(kept) == {i for i, v in ref.items() if v[0] is None}
    assert {i: r["reason"] for i, r in rej.items()} == {i: v[0] for i, v in ref.items() if v[0] is not None}
    kept_de = de_ids & set(kept)
    assert len(kept_de) >= 3 and all(kept[i]["lang"] == "de" for i in kept_de)
    assert not de_ids & set(_rows(lake, "filtered"))  # the default run kept none of them


def test_domain_overrides(filtered_lake):
    """filter.domains.<d>: langid off and quality families off for one domain only; other domains unchanged."""
    lake, root, docs = filtered_lake["lake"], filtered_lake["root"], filtered_lake["docs"]
    off = {f: {"enabled": False} for f in ("gopher_repetition", "gopher_quality", "c4", "fineweb")}
    sets = ["--set", "filter.domains.foreign_de.langid.enabled=false"]
    sets += [a for f in off for a in ("--set", f"filter.domains.foreign_de.quality.{f}.enabled=false")]
    assert filter_job.main(["--lake", root, "--output-table", "filtered_dom", "--rejected-table", "rejected_dom"]
                           + sets) == 0
    kept, rej = _rows(lake, "filtered_dom"), _rows(lake, "rejected_dom")
    ref = python_loop(docs, quality=SHIPPED_QUALITY)
    for d in docs:
        if d["domain"] == "foreign_de":  # every German document kept, with its language still recorded
            assert d["id"] in kept and kept[d["id"]]["lang"] == "de", d["id"]
            assert kept[d["id"]]["text"] == d["text"]  # no C4 line cleaning either
        else:
            assert (d["id"] in kept) == (ref[d["id"]][0] is None), d["id"]
            if d["id"] in rej:
                assert rej[d["id"]]["reason"] == ref[d["id"]][0]
    assert sum(d["domain"] == "foreign_de" for d in docs) >= 12


def test_domain_override_errors():
    from jobs.cli import UserError

    with pytest.raises(UserError, match="filter.domains.code: unknown key"):
        filter_job.resolve_config({"domains": {"code": {"lang": {}}}})
    with pytest.raises(UserError, match="filter.domains.code: .*unknown quality filter family"):
        filter_job.resolve_config({"domains": {"code": {"quality": {"gopher": {"enabled": False}}}}})
    cfg = filter_job.resolve_config({"quality": {"c4": {"min_num_sentences": 2}},
                                     "domains": {"code": {"quality": {"c4": {"enabled": False}}}}})
    assert cfg["by_domain"]["code"]["quality_overrides"] == {"c4": {"min_num_sentences": 2, "enabled": False}}


def test_classifier_applied(filtered_lake, tmp_path):
    from tests.test_classifier import junk_examples

    lake, root, docs, ref = (filtered_lake[k] for k in ("lake", "root", "docs", "ref"))
    with open(DATA, encoding="utf-8") as f:
        prose = [json.loads(line)["text"] for line in f]
    model = train_classifier(prose + junk_examples(600), ["hq"] * 600 + ["lq"] * 600)
    path = str(tmp_path / "quality.bin")
    model.save_model(path)
    # threshold between the two middle distinct scores of the heuristic survivors, so both outcomes occur
    scores = sorted(set(score_texts([v[2] for v in ref.values() if v[0] is None], model, "hq")))
    assert len(scores) >= 10
    thr = (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2
    assert filter_job.main(["--lake", root, "--output-table", "filtered_clf", "--rejected-table", "rejected_clf",
                            "--set", f"filter.classifier.model_path={path}",
                            "--set", f"filter.classifier.threshold={thr!r}"]) == 0
    kept, rej = _rows(lake, "filtered_clf"), _rows(lake, "rejected_clf")
    ref_c = python_loop(docs, quality=SHIPPED_QUALITY, clf=model, clf_threshold=thr)
    assert set(kept) == {i for i, v in ref_c.items() if v[0] is None}
    assert {i: r["reason"] for i, r in rej.items()} == {i: v[0] for i, v in ref_c.items() if v[0] is not None}
    n_clf = sum(r["reason"] == "classifier:low_score" for r in rej.values())
    assert n_clf >= 10 and len(kept) >= 10
    for i, r in kept.items():
        assert r["quality_score"] == pytest.approx(ref_c[i][3], abs=1e-6) and r["quality_score"] >= thr
    for r in rej.values():  # every document is scored, whatever rule failed first (annotate mode)
        assert r["quality_score"] is not None


def test_missing_input_table_and_help(tmp_path, spark, capsys):
    rc = filter_job.run_main("filter", filter_job.main, ["--lake", str(tmp_path / "nolake")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "input table 'documents' not found" in err
    rc = filter_job.run_main("filter", filter_job.main, ["--lake", str(tmp_path / "nolake"),
                                                         "--set", "filter.quality.gopher_quality.nope=1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "nope" in err
    out = subprocess.run([sys.executable, os.path.join(REPO, "jobs", "filter.py"), "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for opt in ("--lake", "--conf", "--set", "--input-table", "--output-table", "--rejected-table", "--force",
                "filter.langid.languages", "filter.classifier.model_path", "langid:low_score"):
        assert opt in out.stdout, opt


def test_per_domain_and_per_language_langid_thresholds():
    """filter.domains.<d>.langid.{threshold,languages,thresholds} and filter.langid.thresholds are honoured."""
    en = "The committee met on Tuesday to discuss the library budget and the new opening hours for students."
    de = "Der Ausschuss traf sich am Dienstag, um den Haushalt der Bibliothek und die neuen Öffnungszeiten zu besprechen."
    (_, s_en), (_, s_de) = predict_languages([en, de])
    assert s_en > 0.8 and s_de > 0.8
    cfg = filter_job.resolve_config({
        "langid": {"languages": ["en", "de"], "thresholds": {"de": 0.9999}},
        "quality": {name: {"enabled": False} for name in ("gopher_repetition", "gopher_quality", "c4", "fineweb")},
        "domains": {"docs": {"langid": {"threshold": 0.99999, "thresholds": {"de": 0.5}}},
                    "english_only": {"langid": {"languages": ["en"]}}}})
    got = {(dom, lang): d["reason"] for dom in (None, "docs", "english_only") for lang, text in (("en", en), ("de", de))
           for d in filter_job.filter_records([text], cfg, [dom])}
    assert got == {(None, "en"): None, (None, "de"): "langid:low_score",           # per-language threshold
                   ("docs", "en"): "langid:low_score", ("docs", "de"): None,        # domain threshold, domain per-language
                   ("english_only", "en"): None, ("english_only", "de"): "langid:de"}  # domain languages
    from jobs.cli import UserError

    with pytest.raises(UserError, match=r"filter.domains.docs.langid: unknown key 'treshold' \(did you mean 'threshold'\?\)"):
        filter_job.resolve_config({"domains": {"docs": {"langid": {"treshold": 0.5}}}})
    with pytest.raises(UserError, match=r"filter.langid.thresholds.de must be a number in \[0, 1\]"):
        filter_job.resolve_config({"langid": {"thresholds": {"de": 2}}})


def test_loud_losses_name_the_domain_and_its_reasons():
    stats = [{"reason": None, "domain": "web", "docs": 90, "tok": 900, "tok_kept": 850},
             {"reason": "c4:curly_bracket", "domain": "web", "docs": 10, "tok": 100, "tok_kept": 100},
             {"reason": None, "domain": "changelog", "docs": 1, "tok": 10, "tok_kept": 10},
             {"reason": "langid:low_score", "domain": "changelog", "docs": 250, "tok": 2500, "tok_kept": 2500},
             {"reason": "gopher_quality:alpha_words", "domain": "changelog", "docs": 42, "tok": 420, "tok_kept": 420},
             {"reason": "langid:fr", "domain": "man", "docs": 3, "tok": 30, "tok_kept": 30}]
    counts = filter_job.group_counts(stats, "domain")
    assert counts["changelog"]["docs_in"] == 293 and counts["changelog"]["docs_out"] == 1
    lines = filter_job.loud_losses({"domain": counts}, 0.5)
    assert lines == ["domain 'changelog' lost 292 of 293 documents (99.7%; kept 1); top reasons: "
                     "langid:low_score 250, gopher_quality:alpha_words 42",
                     "domain 'man' lost 3 of 3 documents (100.0%; kept 0); top reasons: langid:fr 3"]
    assert filter_job.loud_losses({"domain": counts}, 0.998) == [lines[1]]  # all of a domain is always loud


# ---- domain presets --------------------------------------------------------------------------------------------
def _stdlib_docstrings(limit=400):
    """English technical text nobody here wrote: docstrings of the running interpreter's standard library."""
    import ast
    import glob
    import sysconfig
    out = []
    for path in sorted(glob.glob(sysconfig.get_paths()["stdlib"] + "/*.py")):
        try:
            tree = ast.parse(open(path, encoding="utf-8").read())
        except (SyntaxError, UnicodeDecodeError):
            continue
        out.extend(d for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Module))
                   and (d := ast.get_docstring(n)) and len(d) >= 300)
    return out[:limit]


def test_docs_preset_keeps_technical_english_and_still_rejects_junk():
    from jobs.config import load_config
    from tests.test_classifier import junk_examples

    cfg = filter_job.resolve_config(load_config()["filter"])
    assert cfg["by_domain"]["docs"]["preset"] == "docs"
    texts = _stdlib_docstrings()
    assert len(texts) >= 200
    kept = {dom: sum(d["reason"] is None for d in filter_job.filter_records(texts, cfg, [dom] * len(texts)))
            / len(texts) for dom in ("web", "docs")}
    # the web rules (the papers' values) lose most docstrings; the docs preset keeps nearly all of them
    assert kept["web"] < 0.5 and kept["docs"] > 0.85, kept
    junk = junk_examples(300) + ["\n".join(["}"] * 40 + ["```"] * 40), ".. toctree::\n   :hidden:\n\n   a\n   b\n"]
    rej = [d["reason"] for d in filter_job.filter_records(junk, cfg, ["docs"] * len(junk))]
    assert sum(r is not None for r in rej) / len(junk) > 0.95, collections.Counter(rej)
    # a kept document keeps its text: C4 judges docs pages without rewriting them (option names, indentation)
    man = "NAME\n       ls - list directory contents\n\nOPTIONS\n       -a, --all\n              do not ignore " \
          "entries starting with .\n\n" + "\n\n".join(texts[:3])
    d = filter_job.filter_records([man], cfg, ["docs"])[0]
    assert d["reason"] is None and d["clean_text"] == man


def test_presets_resolve_under_the_domains_own_keys_and_unknown_ones_are_named():
    from jobs.cli import UserError
    from udfs.quality import DOMAIN_PRESETS

    cfg = filter_job.resolve_config({"quality": {"c4": {"filter_no_terminal_punct": False}},
                                     "domains": {"man": {"preset": "docs",
                                                         "quality": {"gopher_quality": {"min_doc_words": 30}},
                                                         "langid": {"threshold": 0.5}}}})
    man = cfg["by_domain"]["man"]
    q = man["quality_overrides"]
    assert q["gopher_quality"]["min_doc_words"] == 30  # the domain's own key wins over the preset
    assert q["gopher_quality"]["min_alpha_words_ratio"] == DOMAIN_PRESETS["docs"]["quality"]["gopher_quality"][
        "min_alpha_words_ratio"]
    assert q["c4"]["filter_no_terminal_punct"] is False and q["c4"]["rewrite"] is False  # global, then preset
    assert man["threshold"] == 0.5 and man["preset"] == "docs"
    with pytest.raises(UserError, match=r"filter.domains.man.preset: unknown preset 'doc' \(did you mean 'docs'\?\)"):
        filter_job.resolve_config({"domains": {"man": {"preset": "doc"}}})
    code = filter_job.resolve_config({"domains": {"src": {"preset": "code"}}})["by_domain"]["src"]
    assert code["langid"] is False and all(not v["enabled"] for v in code["quality_overrides"].values())


def test_per_language_quality_overrides_apply_by_detected_language():
    """filter.by_language.<lang>.quality goes on top of the domain's rules for documents detected as <lang>: French
    prose fails the English stop-word rule until French stop words are given for French."""
    with open(DATA, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    fr = ["\n\n".join(r["text"] for r in rows if r["lang"] == "fr")[:4000]]
    en = ["\n\n".join(r["text"] for r in rows if r["lang"] == "en")[:4000]]
    base = {"langid": {"languages": ["en", "fr"]}, "quality": {"c4": {"filter_no_terminal_punct": False}}}
    plain = filter_job.resolve_config(base)
    assert filter_job.filter_records(fr, plain)[0]["reason"] == "gopher_quality:stop_words"
    french = ["le", "la", "de", "et", "les", "des", "en", "un"]
    cfg = filter_job.resolve_config({**base, "by_language": {"fr": {"quality": {"gopher_quality": {
        "stop_words": french}}}}, "domains": {"docs": {"preset": "docs"}}})
    for dom in (None, "docs"):  # the default rules and a preset domain both get the language's overrides
        d = filter_job.filter_records(fr, cfg, [dom])[0]
        assert d["reason"] is None and d["lang"] == "fr" and d["signals"]["stop_word_count"] >= 2
    assert cfg["by_domain"]["docs"]["by_language"]["fr"]["gopher_quality"]["min_alpha_words_ratio"] == 0.4
    # English documents keep the English stop words
    assert filter_job.filter_records(en, cfg)[0]["signals"]["stop_word_count"] >= 2
    from jobs.cli import UserError
    with pytest.raises(UserError, match=r"filter.by_language.de: unknown key\(s\) threshold"):
        filter_job.resolve_config({"by_language": {"de": {"threshold": 0.5}}})
    with pytest.raises(UserError, match=r"filter.by_language.de: filter.quality.gopher_quality: unknown key"):
        filter_job.resolve_config({"by_language": {"de": {"quality": {"gopher_quality": {"stopwords": []}}}}})


def test_the_workers_writer_and_sparks_writer_give_the_same_tables(filtered_lake, tmp_path):
    """`filter.writer: auto` (one Spark job: the workers write all three tables' files, the default here) and
    `spark` (Spark's writer over a cached pass): the same rows in every table, the same metrics and audit sample."""
    import shutil

    from deltalake import DeltaTable

    from jobs.tables import Lake

    sys.path.insert(0, os.path.join(REPO, "scripts"))
    from lake_digest import table_digest

    roots = {}
    for writer in ("auto", "spark"):  # fresh lakes: other tests of this module re-run the filter on the fixture's
        roots[writer] = str(tmp_path / writer)
        shutil.copytree(os.path.join(filtered_lake["root"], "documents"), os.path.join(roots[writer], "documents"))
        assert filter_job.main(["--lake", roots[writer], "--set", f"filter.writer={writer}"]) == 0
    spark = filtered_lake["lake"].spark
    a, b = Lake(spark, roots["auto"]), Lake(spark, roots["spark"])
    for t in ("filtered", "rejected", "filter_signals"):
        assert table_digest(a.path(t)) == table_digest(b.path(t)), t
        assert a.read(t).schema == b.read(t).schema, t
        assert DeltaTable(a.path(t)).schema().to_json() == DeltaTable(b.path(t)).schema().to_json(), t
    assert a.read("filtered").count() == sum(v[0] is None for v in filtered_lake["ref"].values())

    def metrics(lake):
        m = [r for r in lake.read_arrow("metrics").to_pylist() if r["stage"] == "filter"][-1]
        extra = json.loads(m["extra"])
        return ([m[k] for k in ("docs_in", "docs_out", "docs_rejected", "tokens_in", "tokens_out")],
                dict(m["reasons"]), {k: v for k, v in extra.items() if k != "timings"})

    assert metrics(a) == metrics(b)

    def audit(root):
        with open(os.path.join(root, "audit", "rejected.jsonl")) as f:
            return [{k: v for k, v in json.loads(line).items() if k != "run_id"} for line in f]

    assert audit(roots["auto"]) == audit(roots["spark"]) and len(audit(roots["spark"])) > 5
