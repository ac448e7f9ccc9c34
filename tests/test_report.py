"""HTML report (jobs/report.py) on a small lake built by the real stages, and its screenshot in headless Chromium.

The lake (`small_lake`) is made once per test session: two tiny JSONL sources (real English paragraphs with planted
exact/near duplicates, foreign-language and too-short documents, a benchmark question, malformed lines) go
through ingest -> filter -> dedup -> decontaminate -> mix -> pack via each job's main(), then a 20-step CPU
training run of model/train.py. tests/test_notebooks.py runs the notebooks on the same lake.
"""
import base64
import collections
import hashlib
import html.parser
import io
import json
import os
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARAGRAPHS = os.path.join(REPO, "tests", "data", "langid", "paragraphs.jsonl")
BENCH_GLOB = os.path.join(REPO, "data", "benchmarks", "*.jsonl")
SCREENSHOT = os.path.join(REPO, "scripts", "screenshot_report.py")

_BUILT: dict = {}  # one small lake per test session, shared with tests/test_notebooks.py


def _h(*parts) -> int:
    return int(hashlib.md5("|".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def _source_files(folder: str) -> dict:
    """Two JSONL sources from the shipped real paragraphs; returns what was planted."""
    by = collections.defaultdict(list)
    with open(PARAGRAPHS, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            by[r["lang"]].append(r["text"])

    def doc(lang, i, k):  # k distinct paragraphs chosen by hash: long enough for every quality rule
        return "\n\n".join(by[lang][j] for j in sorted(range(len(by[lang])), key=lambda j: _h(lang, i, j))[:k])

    with open(os.path.join(REPO, "data", "benchmarks", "tiny_trivia.jsonl")) as f:
        question = json.loads(f.readline())["question"]
    web = [{"id": f"w{i:02d}", "text": doc("en", i, 3 + i % 3), "url": f"https://example.org/{i}"} for i in range(14)]
    web += [{"id": "w-exact-a", "text": web[2]["text"]}, {"id": "w-exact-b", "text": web[2]["text"]}]
    words = web[1]["text"].split(" ")
    words[len(words) // 2] = "notably"
    web.append({"id": "w-near", "text": " ".join(words)})
    web += [{"id": f"w-{lang}", "text": doc(lang, 7, 3)} for lang in ("de", "fr", "ru")]
    web.append({"id": "w-short", "text": "Too short to keep."})
    web.append({"id": "w-bench", "text": doc("en", 41, 3) + "\n\nQuiz of the day: " + question + "\n\n"
                + doc("en", 141, 2)})
    ref = [{"id": f"r{i:02d}", "text": doc("en", 100 + i, 4)} for i in range(6)]
    with open(os.path.join(folder, "web.jsonl"), "w", encoding="utf-8") as f:
        for r in web:
            f.write(json.dumps(r) + "\n")
        f.write('{"id": "w-broken", "text": \n')            # invalid_json
        f.write(json.dumps({"id": "w-notext", "body": "x"}) + "\n")  # missing_text_field
    with open(os.path.join(folder, "web.jsonl"), "ab") as f:
        f.write(b'{"id": "w-latin1", "text": "caf\xe9 cr\xe8me"}\n')  # invalid_utf8
    with open(os.path.join(folder, "reference.jsonl"), "w", encoding="utf-8") as f:
        for r in ref:
            f.write(json.dumps(r) + "\n")
    sources = os.path.join(folder, "sources.yaml")
    with open(sources, "w") as f:
        f.write("sources:\n")
        for name in ("web", "reference"):
            path = os.path.join(folder, name + ".jsonl")
            f.write(f"  - {{name: {name}, domain: {name}, format: jsonl, path: {path}, "
                    f"text_field: text, id_field: id{', url_field: url' if name == 'web' else ''}}}\n")
    return {"sources": sources, "records": len(web) + len(ref) + 3}


def build_small_lake(spark, base: str) -> dict:
    """Run every stage on a few dozen documents; keeps a report of the lake after ingest only (`partial`)."""
    from jobs import decontaminate, dedup, filter as filter_job, ingest, mix, pack
    from jobs.cli import run_main
    from jobs.report import write_report
    from model import train

    raw = os.path.join(base, "raw")
    os.makedirs(raw)
    planted = _source_files(raw)
    root = os.path.join(base, "lake")
    timings = {}
    t0 = time.time()
    assert ingest.main(["--lake", root, "--sources", planted["sources"]]) == 0
    timings["ingest"] = time.time() - t0
    partial = write_report(root, out=os.path.join(base, "partial", "report.html"))
    for name, fn, argv in (("filter", filter_job.main, []), ("dedup", dedup.main, ["--bands", "32", "--rows", "4"]),
                           ("decontaminate", decontaminate.main, ["--benchmarks", BENCH_GLOB]),
                           ("mix", mix.main, ["--strategy", "temperature", "--alpha", "0.3", "--max-epochs", "4"]),
                           ("pack", pack.main, ["--val-fraction", "0.25"])):
        t0 = time.time()
        assert fn(["--lake", root, *argv]) == 0, name
        timings[name] = time.time() - t0
    run_dir = os.path.join(root, "runs", "tiny")
    sets = ["n_layer=1", "n_head=2", "n_embd=32", "block_size=32", "batch_size=8", "max_steps=20", "eval_interval=10",
            "log_interval=2", "eval_windows=4", "warmup_steps=4", "num_threads=1", "verify=size", f"out_dir={run_dir}"]
    t0 = time.time()
    argv = ["--data", os.path.join(root, "packed"), "--config", os.path.join(REPO, "conf", "model", "tiny.yaml")]
    for s in sets:
        argv += ["--set", s]
    assert run_main("train", train.main, argv) == 0
    timings["train"] = time.time() - t0
    return {"root": root, "partial": partial, "run_dir": run_dir, "records": planted["records"], "timings": timings}


def get_small_lake(spark, tmp_path_factory) -> dict:
    if "lake" not in _BUILT:
        _BUILT["lake"] = build_small_lake(spark, str(tmp_path_factory.mktemp("small_lake")))
    return _BUILT["lake"]


@pytest.fixture(scope="module")
def small_lake(spark, tmp_path_factory):
    return get_small_lake(spark, tmp_path_factory)


@pytest.fixture(scope="module")
def report(small_lake, tmp_path_factory):
    from jobs import report as report_job

    out = str(tmp_path_factory.mktemp("report") / "report.html")
    t0 = time.time()
    assert report_job.main(["--lake", small_lake["root"], "--out", out]) == 0
    seconds = time.time() - t0
    with open(out, encoding="utf-8") as f:
        page = f.read()
    return {"path": out, "html": page, "doc": parse(page), "seconds": seconds, "timings": small_lake["timings"]}


# ---- a small HTML reader (the standard library's parser; no fake HTML) ----------------------------------------
class _Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.tables, self.missing, self.warn = {}, {}, [], []
        self._table, self._row, self._cell, self._p = None, None, None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img" and a.get("data-plot"):
            self.imgs[a["data-plot"]] = a
        elif tag == "table" and a.get("id"):
            self._table = self.tables.setdefault(a["id"], [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = {"text": "", **a}
            self._row.append(self._cell)
        elif tag == "p" and a.get("class") in ("missing", "warn"):
            self._p = (a["class"], [])

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag in ("td", "th"):
            self._cell = None
        elif tag == "p" and self._p:
            (self.missing if self._p[0] == "missing" else self.warn).append("".join(self._p[1]))
            self._p = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        if self._p is not None:
            self._p[1].append(data)


def parse(page: str) -> _Page:
    p = _Page()
    p.feed(page)
    return p


def table_dicts(doc, table_id):
    """Rows of a report table as {header: cell}, header row first in the HTML."""
    rows = doc.tables[table_id]
    heads = [c["text"] for c in rows[0]]
    return [dict(zip(heads, r)) for r in rows[1:]]


def value(cell):
    """The exact number a cell carries in data-value (int or float), None when empty."""
    v = cell.get("data-value", "")
    if v == "":
        return None
    return float(v) if any(ch in v for ch in ".eE") and not v.lstrip("-").isdigit() else int(v)


def decode_png(img_attrs):
    from PIL import Image

    src = img_attrs["src"]
    assert src.startswith("data:image/png;base64,")
    data = base64.b64decode(src.split(",", 1)[1], validate=True)
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def metrics_latest(root):
    from jobs.report import latest_per_stage
    from jobs.tables import Lake

    rows = sorted(Lake(None, root, backend="delta-rs").read_arrow("metrics").to_pylist(), key=lambda r: r["started_at"])
    for r in rows:
        r["extra"] = json.loads(r["extra"] or "{}")
        r["reasons"] = dict(r["reasons"] or [])
    return latest_per_stage(rows)


# ---- tests ------------------------------------------------------------------------------------------------------
def test_every_plot_is_an_img_with_decodable_png(report):
    from jobs.report import PLOTS

    doc = report["doc"]
    assert set(doc.imgs) == set(PLOTS), f"plots missing: {set(PLOTS) - set(doc.imgs)}"
    for pid in PLOTS:
        im = decode_png(doc.imgs[pid])
        assert im.format == "PNG" and im.width > 300 and im.height > 150, pid
        # a real chart: more than a handful of colours (not an empty axes box)
        assert len(im.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20, pid
    assert doc.missing == [], doc.missing
    print(f"\nreport: {len(report['html']):,} bytes in {report['seconds']:.1f}s; lake built in "
          + ", ".join(f"{k} {v:.1f}s" for k, v in report["timings"].items()))


def test_funnel_equals_metrics_table(report, small_lake):
    latest = metrics_latest(small_lake["root"])
    rows = table_dicts(report["doc"], "funnel")
    assert [r["stage"]["text"] for r in rows] == ["ingest", "filter", "dedup", "decontaminate", "mix", "pack"]
    for r in rows:
        m = latest[r["stage"]["text"]]
        for key in ("docs_in", "docs_out", "docs_rejected", "tokens_in", "tokens_out"):
            assert value(r[key]) == m[key], (r["stage"]["text"], key)
    # and the lake is what was planted: every raw record counted, conservation at every stage
    assert latest["ingest"]["docs_in"] == small_lake["records"]
    assert latest["ingest"]["reasons"] == {"invalid_json": 1, "missing_text_field": 1, "invalid_utf8": 1}
    for m in latest.values():
        assert m["docs_in"] == m["docs_out"] + m["docs_rejected"]
    # consecutive stages agree on documents (tokens are only estimates): no document-count warning
    assert not [w for w in report["doc"].warn if "documents from" in w], report["doc"].warn


def test_reasons_languages_duplicates_mixture_match_the_lake(report, small_lake):
    latest = metrics_latest(small_lake["root"])
    doc = report["doc"]
    got = collections.defaultdict(dict)
    for r in table_dicts(doc, "reasons"):
        got[r["stage"]["text"]][r["reason"]["text"]] = value(r["documents"])
    want = {s: {k: v for k, v in m["reasons"].items() if v} for s, m in latest.items()}
    assert dict(got) == {s: v for s, v in want.items() if v}
    assert got["dedup"] == {"exact": 2, "minhash": 1}          # w-exact-a/b and w-near
    assert got["decontaminate"] == {"benchmark_overlap": 1}    # w-bench
    assert {"langid:de", "langid:fr", "langid:ru"} <= set(got["filter"])

    langs = {r["lang"]["text"]: (value(r["documents in"]), value(r["kept"])) for r in table_dicts(doc, "languages")}
    assert sum(v[0] for v in langs.values()) == latest["filter"]["docs_in"]
    assert sum(v[1] for v in langs.values()) == latest["filter"]["docs_out"]
    assert langs["en"][1] == latest["filter"]["docs_out"] and langs["de"] == (1, 0)

    mix = {r["domain"]["text"]: r for r in table_dicts(doc, "mixture")}
    assert set(mix) == {"web", "reference"}
    for d in latest["mix"]["extra"]["domains"]:
        assert value(mix[d["domain"]]["target weight"]) == pytest.approx(d["target_weight"])
        assert value(mix[d["domain"]]["achieved share"]) == pytest.approx(d["achieved_share"])
    # temperature 0.3 moves the target towards uniform, so the small domain gets more than its natural share
    avail = {d["domain"]: d["tokens_available"] for d in latest["mix"]["extra"]["domains"]}
    assert value(mix["reference"]["target weight"]) > avail["reference"] / sum(avail.values()) + 0.05

    # cluster sizes: w02 + two exact copies (3), w01 + its near copy (2)
    assert latest["dedup"]["extra"]["cluster_size_histogram"] == {"2": 1, "3": 1}
    assert "from dedup metrics (extra.cluster_size_histogram); 2 clusters" in report["html"]


def test_token_lengths_tokenizers_and_loss_match_their_files(report, small_lake):
    import numpy as np

    root, doc = small_lake["root"], report["doc"]
    with open(os.path.join(root, "packed", "manifest.json")) as f:
        manifest = json.load(f)
    lengths = {r["split"]["text"]: r for r in table_dicts(doc, "token_lengths")}
    for split, info in manifest["splits"].items():
        assert value(lengths[split]["documents"]) == info["documents"]
        assert value(lengths[split]["tokens (no EOS)"]) == info["tokens"] - info["documents"]  # EOS not counted
    ends = np.fromfile(os.path.join(root, "packed", manifest["splits"]["train"]["shards"][0]["idx"]), dtype="<u8")
    assert lengths["train"]["max"]["text"] == f"{int((np.diff(ends.astype(np.int64), prepend=0) - 1).max()):,}"

    comp = table_dicts(doc, "tokenizers")
    heads = [c["text"] for c in doc.tables["tokenizers"][0]]
    assert heads[1:] == ["gpt2", "cl100k_base", "o200k_base"]
    by_dom = {r["domain"]["text"]: r for r in comp}
    assert {"web", "reference", "ALL"} <= set(by_dom)
    # the sample covers every unique document of the small lake: recount gpt2 bytes/token per domain here
    from jobs.tables import Lake
    from udfs.tokenize import load_encoding

    enc = load_encoding("gpt2")
    acc = collections.defaultdict(lambda: [0, 0])
    for r in Lake(None, root, backend="delta-rs").read_arrow("mixed").to_pylist():
        if r["epoch_copy"] == 0:
            for d in (r["domain"], "ALL"):
                acc[d][0] += len(r["text"].encode("utf-8"))
                acc[d][1] += len(enc.encode_ordinary(r["text"]))
    for d, (nbytes, ntok) in acc.items():
        assert float(by_dom[d]["gpt2"]["text"]) == pytest.approx(nbytes / ntok, abs=6e-4), d

    with open(os.path.join(small_lake["run_dir"], "metrics.jsonl")) as f:
        run = [json.loads(line) for line in f]
    facts = {r[""]["text"]: r["value"]["text"] for r in table_dicts(doc, "training")}
    assert facts["last step"] == str(run[-1]["step"]) == "20"
    assert float(facts["last train loss"]) == pytest.approx(run[-1]["train_loss"], rel=1e-3)
    assert float(facts["last val loss"]) == pytest.approx([r for r in run if "val_loss" in r][-1]["val_loss"], rel=1e-3)


def test_report_starts_no_spark_when_metrics_suffice(small_lake, tmp_path):
    from jobs.report import Sources, gather

    src = Sources(small_lake["root"])
    ctx = gather(src, small_lake["run_dir"], os.path.join(small_lake["root"], "packed"), str(tmp_path))
    assert src._spark_lake is None
    assert ctx["languages"]["from"].startswith("filter metrics") and ctx["duplicates"]["from"].startswith("dedup")


def test_table_fallbacks_agree_with_the_metrics(small_lake, spark):
    """Without the metrics' extra, languages and cluster sizes are aggregated from the tables in Spark."""
    from jobs.report import duplicate_clusters_from_table, language_distribution_from_tables
    from jobs.tables import Lake

    latest = metrics_latest(small_lake["root"])
    lake = Lake(spark, small_lake["root"])
    lang = language_distribution_from_tables(lake)
    assert lang["in"] == latest["filter"]["extra"]["languages_in"]
    assert lang["kept"] == latest["filter"]["extra"]["languages_kept"]
    dup = duplicate_clusters_from_table(lake)
    assert dup["hist"] == latest["dedup"]["extra"]["cluster_size_histogram"]
    assert dup["methods"] == latest["dedup"]["reasons"]


def test_missing_sections_degrade_gracefully(small_lake, tmp_path, capsys):
    from jobs import report as report_job
    from jobs.cli import run_main

    # the lake after ingest only: funnel and rejections exist, every later section says what is missing
    with open(small_lake["partial"], encoding="utf-8") as f:
        doc = parse(f.read())
    assert set(doc.imgs) == {"funnel_docs", "funnel_tokens", "rejections"}
    for pid in doc.imgs:
        decode_png(doc.imgs[pid])
    text = " ".join(doc.missing)
    for what in ("filter stage has not run", "dedup stage has not run", "mix stage has not run", "No packed shards",
                 "No tokenizer compression", "No training metrics"):
        assert what in text, what
    assert [r["stage"]["text"] for r in table_dicts(doc, "funnel")] == ["ingest"]
    # per domain: ingest only; the three filter_signals sections say it is missing
    assert [t for t in doc.tables if t.startswith("by_")] == ["by_domain_ingest", "by_source_ingest"]
    assert {r["domain"]["text"] for r in table_dicts(doc, "by_domain_ingest")} == {"web", "reference"}
    assert sum("No filter signals table" in m for m in doc.missing) == 3

    # an empty folder: a page of "missing" notes, exit 0; a folder that does not exist: one-line error, exit 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_main("report", report_job.main, ["--lake", str(empty)]) == 0
    doc = parse((empty / "report.html").read_text())
    assert doc.imgs == {} and len(doc.missing) >= 8
    assert run_main("report", report_job.main, ["--lake", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]


def test_cli_help_and_bad_arguments():
    r = subprocess.run([sys.executable, os.path.join(REPO, "jobs", "report.py"), "--help"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "--lake" in r.stdout and "tokenizer" in r.stdout
    r = subprocess.run([sys.executable, os.path.join(REPO, "jobs", "report.py"), "--compression-docs", "-1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def _chromium():
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    try:
        from screenshot_report import find_chromium
    finally:
        sys.path.pop(0)
    return find_chromium()


@pytest.mark.skipif(_chromium() is None, reason="no chromium installed (apt-get install -y chromium): the "
                                                 "screenshot check of the report needs a headless browser")
def test_report_renders_in_headless_chromium(report, tmp_path):
    from PIL import Image

    png = tmp_path / "report.png"
    t0 = time.time()
    r = subprocess.run([sys.executable, SCREENSHOT, report["path"], str(png), "--height", "5000"],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    im = Image.open(png).convert("RGB")
    assert im.size == (1400, 5000)
    # the embedded plots are drawn: their colours (funnel blue, rejection red, ...) are on the page
    colours = im.getcolors(maxcolors=1 << 20)
    counts = {rgb: n for n, rgb in colours}
    assert counts.get((0x4c, 0x72, 0xb0), 0) > 2000 and counts.get((0xc4, 0x4e, 0x52), 0) > 2000
    print(f"\nscreenshot: {r.stdout.strip()} in {time.time() - t0:.1f}s")

    # the blank check is not a formality: an empty page fails it
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    r = subprocess.run([sys.executable, SCREENSHOT, str(blank), str(tmp_path / "blank.png"), "--height", "800"],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 1 and "blank" in r.stderr


# ---- per domain / source, filter reasons per domain, signal histograms, line cleaning ---------------------------
# A copy of the small lake whose filter is re-run with stricter thresholds: both domains lose more than half their
# documents (loud losses) and web is rejected for ten different reasons. Dedup, decontaminate and mix keep their
# metrics rows, so dedup's input (filtered) is pinned at the version before the re-run.
LOUD_SETS = ["filter.quality.gopher_repetition.top_n_grams={2: 0.045}",
             "filter.quality.gopher_repetition.dup_n_grams={5: 0.02}",
             "filter.quality.gopher_quality.min_doc_words=100", "filter.quality.gopher_quality.max_avg_word_length=5.8",
             "filter.quality.gopher_quality.min_alpha_words_ratio=0.85",
             "filter.quality.gopher_quality.min_stop_words=5", "filter.quality.c4.min_num_sentences=7",
             "filter.domains.reference.quality.gopher_quality.min_alpha_words_ratio=0.85"]


@pytest.fixture(scope="module")
def loud_lake(small_lake, spark, tmp_path_factory):
    import shutil

    from jobs import filter as filter_job
    from jobs import report as report_job

    root = str(tmp_path_factory.mktemp("loud") / "lake")
    shutil.copytree(small_lake["root"], root)
    argv = ["--lake", root]
    for s in LOUD_SETS:
        argv += ["--set", s]
    t0 = time.time()
    assert filter_job.main(argv) == 0
    out = os.path.join(root, "report.html")
    assert report_job.main(["--lake", root, "--out", out]) == 0
    with open(out, encoding="utf-8") as f:
        page = f.read()
    print(f"\nloud lake: filter re-run and report in {time.time() - t0:.1f}s")
    return {"root": root, "html": page, "doc": parse(page)}


def _spark_counts(spark, root, table, version=None, where=None, key="domain", tokens="n_tokens_est"):
    """{key: (documents, tokens)} of a table, in Spark (independent of the report's pyarrow path)."""
    from pyspark.sql import functions as F

    from jobs.tables import Lake

    df = Lake(spark, root).read(table, version=version)
    if where is not None:
        df = df.where(where)
    return {r[key]: (r["d"], r["t"] or 0) for r in
            df.groupBy(key).agg(F.count(F.lit(1)).alias("d"), F.sum(tokens).alias("t")).collect()}


def _breakdown(doc, stage, kind="domain"):
    return {r[kind]["text"]: r for r in table_dicts(doc, f"by_{kind}_{stage}")}


def test_by_domain_and_source_equal_the_tables(report, small_lake, spark):
    from pyspark.sql import functions as F

    from jobs.tables import Lake

    root, doc = small_lake["root"], report["doc"]
    latest = metrics_latest(root)
    sig = Lake(spark, root).read("filter_signals")
    for kind in ("domain", "source"):
        want = {r[kind]: (r["n"], r["k"]) for r in
                sig.groupBy(kind).agg(F.count(F.lit(1)).alias("n"), F.sum(F.col("kept").cast("int")).alias("k"))
                .collect()}
        got = {k: (value(r["docs in"]), value(r["docs out"])) for k, r in _breakdown(doc, "filter", kind).items()}
        assert got == want, kind
        docs_in = _spark_counts(spark, root, "documents", key=kind)
        kept = _spark_counts(spark, root, "filtered", key=kind)
        for k, r in _breakdown(doc, "filter", kind).items():
            assert value(r["tokens in"]) == docs_in[k][1]
            assert value(r["tokens out"]) == kept[k][1]  # the line-cleaned text
    # the chain: every stage's in = its input table, out = its output table, per domain; totals = its metrics row
    pairs = {"dedup": ("filtered", "deduped"), "decontaminate": ("deduped", "decontaminated")}
    for stage, (tin, tout) in pairs.items():
        rows = _breakdown(doc, stage)
        cin, cout = _spark_counts(spark, root, tin), _spark_counts(spark, root, tout)
        assert {d: (value(r["docs in"]), value(r["tokens in"])) for d, r in rows.items()} == cin, stage
        assert {d: (value(r["docs out"]), value(r["tokens out"])) for d, r in rows.items()} == cout, stage
    mix = _breakdown(doc, "mix")
    # mix counts real tokens (mix.tokens: exact): the mixed table's n_tokens column, tokenizer + EOS
    unique = _spark_counts(spark, root, "mixed", where=F.col("epoch_copy") == 0, tokens="n_tokens")
    every = _spark_counts(spark, root, "mixed", tokens="n_tokens")
    assert latest["mix"]["extra"]["token_counts"] == "exact"
    assert {d: value(r["docs out"]) for d, r in mix.items()} == {d: v[0] for d, v in unique.items()}
    assert {d: value(r["tokens out"]) for d, r in mix.items()} == {d: v[1] for d, v in every.items()}
    for stage in ("ingest", "filter", "dedup", "decontaminate", "mix"):
        for kind in ("domain", "source"):
            rows = _breakdown(doc, stage, kind).values()
            for key, col in (("docs_in", "docs in"), ("docs_out", "docs out"), ("tokens_in", "tokens in"),
                             ("tokens_out", "tokens out")):
                assert sum(value(r[col]) for r in rows) == latest[stage][key], (stage, kind, key)
    # ingest: documents + quarantined records per source, as the ingest job counted them
    for src, r in _breakdown(doc, "ingest", "source").items():
        per = latest["ingest"]["extra"]["per_source"][src]
        assert value(r["docs out"]) == per["docs"]
        assert value(r["docs in"]) == per["docs"] + sum(v for k, v in per.items() if k.startswith("quarantined_"))
    # nothing lost half its documents here: no marks, no loud losses
    assert 'data-loud="1"' not in report["html"] and latest["filter"]["extra"]["loud_losses"] == []


def test_loud_losses_are_marked_and_dedup_input_stays_pinned(loud_lake, small_lake, spark):
    root, doc = loud_lake["root"], loud_lake["doc"]
    latest = metrics_latest(root)
    lines = latest["filter"]["extra"]["loud_losses"]
    assert len(lines) == 4 and all(x in loud_lake["html"] for x in (html_escape(x) for x in lines))
    for kind in ("domain", "source"):
        rows = _breakdown(doc, "filter", kind)
        assert set(rows) == {"web", "reference"}
        for name, r in rows.items():
            lost = 1 - value(r["docs out"]) / value(r["docs in"])
            assert lost > 0.5 and r["note"].get("data-loud") == "1" and f"lost {100 * lost:.1f}%" in r["note"]["text"]
        per = latest["filter"]["extra"][f"per_{kind}"]
        assert {k: (value(r["docs in"]), value(r["docs out"])) for k, r in rows.items()} == \
            {k: (v["docs_in"], v["docs_out"]) for k, v in per.items()}
    # dedup read filtered at the version before the re-run (its metrics row): counted there, not in the latest
    assert latest["dedup"]["input_version"] == 0 and dict(latest["filter"]["outputs"])["filtered"] == 1
    dd = _breakdown(doc, "dedup")
    assert {d: value(r["docs in"]) for d, r in dd.items()} == \
        {d: v[0] for d, v in _spark_counts(spark, root, "filtered", version=0).items()}
    assert {d: value(r["docs out"]) for d, r in _breakdown(doc, "filter").items()} == \
        {d: v[0] for d, v in _spark_counts(spark, root, "filtered", version=1).items()}


def html_escape(s):
    import html

    return html.escape(s)


def _top_reasons_from_spark(spark, root):
    from pyspark.sql import functions as F

    from jobs.tables import Lake

    rows = (Lake(spark, root).read("filter_signals").where(~F.col("kept")).groupBy("domain", "reason").count()
            .collect())
    by: dict = collections.defaultdict(list)
    for r in rows:
        by[r["domain"]].append((r["reason"], r["count"]))
    out = {}
    for d, items in by.items():
        items.sort(key=lambda kv: (-kv[1], kv[0]))
        out[d] = items[:5] + ([(f"other ({len(items) - 5} reasons)", sum(v for _, v in items[5:]))]
                              if len(items) > 5 else [])
    return out


@pytest.mark.parametrize("which", ["small", "loud"])
def test_top_reasons_per_domain_from_filter_signals(which, request, spark):
    lake = request.getfixturevalue("small_lake" if which == "small" else "loud_lake")
    doc = request.getfixturevalue("report")["doc"] if which == "small" else lake["doc"]
    got = collections.defaultdict(list)
    for r in table_dicts(doc, "filter_reasons_by_domain"):
        if r["reason"]["text"] != "(none rejected)":
            got[r["domain"]["text"]].append((r["reason"]["text"], value(r["documents"])))
    assert dict(got) == _top_reasons_from_spark(spark, lake["root"])
    if which == "loud":  # ten reasons in web: five, then one "other" row
        assert got["web"][-1] == ("other (5 reasons)", 5)


def test_line_cleaning_per_domain_equals_the_filtered_table(report, small_lake, spark):
    from pyspark.sql import functions as F

    from jobs.tables import Lake

    kept = {r["domain"]: r for r in Lake(spark, small_lake["root"]).read("filtered").groupBy("domain")
            .agg(F.count(F.lit(1)).alias("d"), F.sum("n_bytes_raw").alias("raw"), F.sum("n_bytes").alias("clean"),
                 F.sum("n_tokens_est").alias("tok")).collect()}
    rows = {r["domain"]["text"]: r for r in table_dicts(report["doc"], "line_cleaning")}
    assert set(rows) == set(kept) | {"ALL"}
    for d, k in kept.items():
        r = rows[d]
        assert (value(r["kept docs"]), value(r["bytes raw"]), value(r["bytes clean"]), value(r["tokens clean"])) \
            == (k["d"], k["raw"], k["clean"], k["tok"]), d
        assert value(r["bytes kept"]) == pytest.approx(k["clean"] / k["raw"])
    assert value(rows["ALL"]["bytes raw"]) == sum(k["raw"] for k in kept.values())
    assert any(value(r["bytes kept"]) < 1 for r in rows.values())  # C4 line cleaning did drop lines


def test_signal_histograms_draw_each_domains_cut_lines(report, small_lake):
    import pyarrow.compute as pc

    from jobs.report_gather import KEY_SIGNALS, Sources

    img = report["doc"].imgs["signals"]
    drawn, counts = json.loads(img["data-cuts"]), json.loads(img["data-counts"])
    cuts = metrics_latest(small_lake["root"])["filter"]["extra"]["cuts"]
    t = Sources(small_lake["root"]).arrow_dataset("filter_signals").to_table()
    assert set(drawn) == set(pc.unique(t["domain"]).to_pylist()) == {"web", "reference"}
    for d in drawn:
        rules = cuts.get(d, cuts["*"])
        for s, _ in KEY_SIGNALS:
            want = sorted([k, float(thr)] for _, k, sig, thr in rules if sig == s)
            assert sorted(drawn[d].get(s, [])) == want, (d, s)
            rows = t.filter(pc.equal(t["domain"], d))
            assert counts[d][s] == len(rows) - rows[s].null_count, (d, s)  # every row: the sample is the table
    # the reference preset has its own cuts: the lines differ from web's
    assert drawn["reference"]["alpha_words_ratio"] != drawn["web"]["alpha_words_ratio"]
    assert ["min", 0.65] in drawn["web"]["lang_score"]


def test_rejection_chart_groups_beyond_12_reasons(small_lake, tmp_path):
    from jobs.report import Sources, gather, render

    ctx = gather(Sources(small_lake["root"]), small_lake["run_dir"], os.path.join(small_lake["root"], "packed"),
                 str(tmp_path), compression_docs=0)
    reasons = {f"rule_{i:02d}": 100 - 3 * i for i in range(30)}  # 100, 97, ..., 13
    ctx["latest"]["filter"] = {**ctx["latest"]["filter"], "reasons": reasons}
    doc = parse(render(ctx))
    bars = json.loads(doc.imgs["rejections"]["data-bars"])
    assert len(bars["filter"]) == 12
    assert bars["filter"][:11] == [[f"rule_{i:02d}", 100 - 3 * i] for i in range(11)]
    assert bars["filter"][11] == ["other (19 reasons)", sum(100 - 3 * i for i in range(11, 30))]
    assert bars["dedup"] == [["exact", 2], ["minhash", 1]]  # few reasons: one bar each
    listed = [r for r in table_dicts(doc, "reasons") if r["stage"]["text"] == "filter"]
    assert {r["reason"]["text"]: value(r["documents"]) for r in listed} == reasons  # the table keeps them all


def test_old_lake_without_filter_signals_renders(small_lake, tmp_path):
    import shutil

    from jobs import report as report_job

    root = str(tmp_path / "old")
    shutil.copytree(small_lake["root"], root, ignore=shutil.ignore_patterns("filter_signals", "packed", "runs"))
    assert report_job.main(["--lake", root, "--out", str(tmp_path / "old.html"), "--compression-docs", "0"]) == 0
    doc = parse((tmp_path / "old.html").read_text())
    assert "signals" not in doc.imgs and "line_cleaning" not in doc.imgs and "rejections" in doc.imgs
    assert sum("No filter signals table" in m for m in doc.missing) == 3
    assert "filter_reasons_by_domain" not in doc.tables and "line_cleaning" not in doc.tables
    # the per-domain breakdown does not need it
    assert {"by_domain_filter", "by_source_filter", "by_domain_mix"} <= set(doc.tables)
