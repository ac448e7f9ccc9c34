"""Decontamination: n-gram logic (pure) and the Spark job on real Delta tables with the shipped benchmark files."""
import json
import os

from jobs.cli import run_main
from jobs.schema import document_row, documents_df
from udfs import ngrams as ng

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_GLOB = os.path.join(REPO, "data", "benchmarks", "*.jsonl")


def _items(name):
    return {it["_id"]: it for it in ng.read_benchmark(os.path.join(REPO, "data", "benchmarks", name + ".jsonl"))}


TRIVIA = _items("tiny_trivia")
Q7 = TRIVIA["trivia-007"]["question"]
Q7_GRAMS = len(ng.normalize_words(Q7)) - 12  # 13-grams that lie inside the question alone
Q1 = TRIVIA["trivia-001"]["question"]
READ3 = _items("tiny_reading")["reading-003"]["passage"]

_SENTENCES = [
    "The harbour was quiet after the storm and the gulls settled on the wet stones.",
    "Our committee reviewed the annual budget and approved two new reading rooms.",
    "Fresh bread from the corner bakery sells out before eight on Saturdays.",
    "She tuned the old piano slowly, one string at a time, listening closely.",
    "Volunteers repainted the fence around the playground during the holiday weekend.",
    "A narrow path winds up the hill past the chapel to the ruined watchtower.",
    "The recipe calls for butter, brown sugar, oats and a pinch of cinnamon.",
    "Engineers tested the new pumps for a week before the dry season began.",
]


def filler(n_chars, offset=0):
    out, i = [], offset
    while sum(len(s) + 1 for s in out) < n_chars:
        out.append(_SENTENCES[i % len(_SENTENCES)])
        i += 1
    return " ".join(out)


# ---- pure logic -------------------------------------------------------------------------------------------------
def test_normalisation_is_case_and_punctuation_insensitive():
    assert ng.normalize_words("Hello, World!  It's   a TEST-case.") == ["hello", "world", "its", "a", "testcase"]
    words, starts, ends = ng.words_with_spans("  Ab, cd!")
    assert words == ["ab", "cd"] and (starts, ends) == ([2, 6], [5, 9])


def test_item_ngrams_full_length_for_short_items_and_min_words():
    segs = ["One two three four five six seven eight nine"]  # 9 words < 13
    assert ng.item_ngrams(segs, n=13, min_words=8) == {"one two three four five six seven eight nine"}
    assert ng.item_ngrams(segs, n=13, min_words=10) == set()
    assert len(ng.item_ngrams(["w%d" % i for i in range(1)] + [" ".join("w%d" % i for i in range(20))], 13, 8)) == 8
    # fields: strings and lists count, numbers (answer indices) do not
    segs = ng.item_segments({"question": "Q text?", "choices": ["a b", "c"], "answer": 2, "other": "x"})
    assert segs == ["Q text?\na b\nc"]
    assert ng.item_segments({"question": "q", "answer": "a"}, segment="field") == ["q", "a"]


def test_find_matches_and_excise_keep_the_rest_intact():
    item = ng.item_segments(TRIVIA["trivia-007"])
    lookup = {g: [("tiny_trivia", "trivia-007")] for g in ng.item_ngrams(item, 13, 8)}
    before, after = filler(900), filler(900, offset=3)
    text = before + " " + Q7.upper().replace("?", " !!") + " " + after
    matches = ng.find_matches(text, lookup, [13])
    assert len(matches) == Q7_GRAMS and {m.item_id for m in matches} == {"trivia-007"}
    r = ng.decontaminate_text(text, lookup, [13], policy="excise")
    assert r["action"] == "excised" and r["matches"][0]["n_ngrams"] == Q7_GRAMS
    new = r["text"]
    assert "spoon" not in new.lower()
    # everything further than the 200-character window (plus the word boundary) from the match survives verbatim
    assert before[:len(before) - 210].strip() in new and after[210:].strip() in new
    assert len(new) > len(before) + len(after) - 2 * 200 - 40
    assert ng.decontaminate_text(text, lookup, [13], policy="drop")["action"] == "dropped"
    clean = before + " " + after
    assert ng.decontaminate_text(clean, lookup, [13], policy="excise") == {
        "action": "clean", "text": clean, "reason": None, "matches": []}


def test_excise_drops_short_pieces_and_fragmented_documents():
    text = "x" * 150 + " MATCH " + "y" * 1000
    new, pieces, reason = ng.excise_spans(text, [(151, 156)], window=200, min_piece=200, max_pieces=10)
    assert new is None and reason == "excise_nothing_left"  # the y-run is one word and goes with the window
    text = ("a " * 200) + "MATCH" + (" b" * 150)
    new, pieces, reason = ng.excise_spans(text, [(400, 405)], window=200, min_piece=150)
    assert pieces == 2 and new == ("a " * 100).strip()  # the b-piece (99 characters left) is dropped
    spans, t = [], ""
    for i in range(12):
        t += filler(500, offset=i) + " "
        spans.append((len(t), len(t) + 5))
        t += "MATCH "
    t += filler(500)
    new, pieces, reason = ng.excise_spans(t, spans, window=200, min_piece=50, max_pieces=10)
    assert (new, pieces, reason) == (None, 13, "excise_too_many_pieces")


# ---- the Spark job ----------------------------------------------------------------------------------------------
def _docs():
    sep = filler(2600, offset=5) + " "
    fragmented = sep.join([filler(300)] + [Q7] * 11) + " " + sep
    return {
        "clean-1": filler(1200),
        "clean-2": filler(800, offset=2) + " Green plants need light, water and air to grow.",
        # the first 12 words of a question (< 13) must not match
        "near-miss": filler(400, offset=1) + " " + " ".join(Q1.split()[:12]) + " and then the story went on.",
        "planted": filler(900) + " " + Q7 + " " + filler(900, offset=3),
        "punct": filler(300, offset=4) + " " + Q7.upper().replace("?", "?!").replace(" ", "  ") + " " + filler(50),
        "passage": "Local news. " + READ3 + " " + filler(600, offset=6),
        "short-hexagon": filler(500, offset=7) + " Quiz: How many sides does a regular hexagon have in total? 6. "
                         + filler(500),
        "short-zero": filler(500, offset=1) + " Is zero an even number? Yes! " + filler(500, offset=2),
        "fragmented": fragmented,
    }


def _setup(spark, lake, name="deduped"):
    rows = [document_row(k, v, domain="web" if i % 2 else "books") for i, (k, v) in enumerate(sorted(_docs().items()))]
    lake.write(documents_df(spark, rows).repartition(3), name)
    return {r["id"]: r for r in rows}


def _rows(lake, table):
    return {r["id"]: r for r in lake.read(table).collect()}


def _metrics(lake):
    return [r for r in lake.read_arrow("metrics").to_pylist() if r["stage"] == "decontaminate"]


def test_drop_policy_catches_planted_items_and_leaves_clean_text(spark, lake, lake_dir):
    from jobs import decontaminate

    src = _setup(spark, lake)
    assert decontaminate.main(["--lake", lake_dir, "--benchmarks", BENCH_GLOB, "--policy", "drop"]) == 0
    out, bad = _rows(lake, "decontaminated"), _rows(lake, "contaminated")
    assert set(bad) == {"planted", "punct", "passage", "short-hexagon", "fragmented"}
    assert set(out) == {"clean-1", "clean-2", "near-miss", "short-zero"}
    for k, r in out.items():  # untouched
        assert (r["text"], r["text_sha256"], r["n_bytes"], r["excised"]) == (
            src[k]["text"], src[k]["text_sha256"], src[k]["n_bytes"], [])
    p = bad["planted"]
    assert (p["benchmark"], p["item_id"], p["action"], p["reason"]) == (
        "tiny_trivia", "trivia-007", "dropped", "benchmark_overlap")
    assert p["ngram"] == " ".join(ng.normalize_words(Q7)[:13]) and p["text"] == src["planted"]["text"]
    assert (bad["passage"]["benchmark"], bad["passage"]["item_id"]) == ("tiny_reading", "reading-003")
    hexa = bad["short-hexagon"]
    assert (hexa["item_id"], hexa["ngram"]) == ("short-003", "how many sides does a regular hexagon have in total 6")

    rep = json.load(open(os.path.join(lake_dir, "reports", "contamination.json")))
    b = rep["benchmarks"]
    assert (b["tiny_trivia"]["items_matched"], b["tiny_trivia"]["documents_affected"]) == (1, 3)
    assert (b["tiny_reading"]["items_matched"], b["tiny_reading"]["documents_affected"]) == (1, 1)
    assert b["tiny_math_short"]["items_skipped_short"] == 1 and b["tiny_math_short"]["items_matched"] == 1
    m = _metrics(lake)[-1]
    assert (m["docs_in"], m["docs_out"], m["docs_rejected"]) == (9, 4, 5)
    assert m["reasons"] == [("benchmark_overlap", 5)] or dict(m["reasons"]) == {"benchmark_overlap": 5}
    assert json.loads(m["extra"])["benchmarks"]["tiny_trivia"]["documents_affected"] == 3
    assert os.path.exists(os.path.join(lake_dir, "audit", "contaminated.jsonl"))
    # a second identical run is a no-op
    v = lake.version("decontaminated")
    assert decontaminate.main(["--lake", lake_dir, "--benchmarks", BENCH_GLOB, "--policy", "drop"]) == 0
    assert lake.version("decontaminated") == v and len(_metrics(lake)) == 1


def test_excise_policy_broadcast_and_join_paths_agree(spark, lake, lake_dir):
    from jobs import decontaminate

    src = _setup(spark, lake)
    args = ["--lake", lake_dir, "--benchmarks", BENCH_GLOB, "--policy", "excise"]
    assert decontaminate.main(args) == 0
    out, bad = _rows(lake, "decontaminated"), _rows(lake, "contaminated")
    assert json.load(open(os.path.join(lake_dir, "reports", "contamination.json")))["path"] == "broadcast"

    # planted: excised, kept, the rest of the document intact, the excision listed
    p = out["planted"]
    assert "spoon" not in p["text"].lower() and p["text"] != src["planted"]["text"]
    before, after = src["planted"]["text"].split(Q7)
    assert before[:len(before) - 210].strip() in p["text"] and after[210:].strip() in p["text"]
    assert [(e["benchmark"], e["item_id"]) for e in p["excised"]] == [("tiny_trivia", "trivia-007")]
    assert p["n_bytes"] == len(p["text"].encode()) and p["n_tokens_est"] < src["planted"]["n_tokens_est"]
    # ... and recorded in `contaminated` in its original form
    assert bad["planted"]["action"] == "excised" and bad["planted"]["text"] == src["planted"]["text"]
    # 11 matches spaced 2600 characters apart: 12+ pieces > 10 -> the whole document goes
    assert "fragmented" not in out and (bad["fragmented"]["action"], bad["fragmented"]["reason"]) == (
        "dropped", "excise_too_many_pieces")
    for k in ("clean-1", "clean-2", "near-miss", "short-zero"):
        assert out[k]["text"] == src[k]["text"] and out[k]["excised"] == []
    dropped = {k for k, r in bad.items() if r["action"] == "dropped"}
    m = _metrics(lake)[-1]
    assert m["docs_in"] == 9 and m["docs_out"] == len(out) and m["docs_rejected"] == len(dropped)
    assert m["docs_out"] + m["docs_rejected"] == 9 and len(out) + len(bad) > 9  # excised docs in both tables

    # the same run through the join path (benchmark n-grams joined instead of broadcast)
    assert decontaminate.main(args + ["--output-table", "decon_join", "--contaminated-table", "contam_join",
                                      "--set", "decontaminate.broadcast_max_ngrams=0"]) == 0
    assert json.load(open(os.path.join(lake_dir, "reports", "contamination.json")))["path"] == "join"

    def canon(table):
        return sorted(json.dumps(r.asDict(recursive=True), sort_keys=True, default=str)
                      for r in lake.read(table).collect())

    assert canon("decon_join") == canon("decontaminated")
    assert canon("contam_join") == canon("contaminated")


def test_errors_are_one_line_exit_2(spark, lake, lake_dir, tmp_path, capsys):
    from jobs import decontaminate

    rc = run_main("decontaminate", decontaminate.main,
                  ["--lake", lake_dir, "--benchmarks", str(tmp_path / "nope-*.jsonl")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("decontaminate: error: benchmark file(s) not found") and "\n" not in err
    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"id": 1, "question": "fine"}\n{not json\n')
    rc = run_main("decontaminate", decontaminate.main, ["--lake", lake_dir, "--benchmarks", str(bad)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "broken.jsonl:2: not valid JSON" in err and "\n" not in err
    rc = run_main("decontaminate", decontaminate.main, ["--lake", lake_dir, "--benchmarks", BENCH_GLOB])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "table 'deduped' not found" in err
