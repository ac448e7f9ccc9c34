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
