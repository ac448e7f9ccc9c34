"""jobs/dedup.py and jobs/components.py on a real local SparkSession and real Delta tables."""
import json
import os
import random
import subprocess
import sys

import pytest

from jobs.schema import document_row, documents_df
from udfs.normalise import jaccard

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = [f"{a}{b}{c}" for a in ("ka", "lo", "mi", "nu", "pe", "ra", "su", "ti", "vo", "ze")
         for b in ("b", "d", "g", "l", "m", "n", "r", "s", "t", "v") for c in ("a", "e", "i", "o", "u", "an", "er")]


def words(rng, n):
    return [rng.choice(VOCAB) for _ in range(n)]


def substitute(rng, w, k=None, positions=None):
    """Replace k random word positions (or the given ones) by fresh words."""
    w = list(w)
    for i in positions if positions is not None else rng.sample(range(len(w)), k):
        w[i] = "new" + str(rng.randrange(10 ** 9))
    return w


def planted_corpus():
    """Rows and the expected outcome: which ids are near/exact duplicates of which."""
    rng = random.Random(1234)
    rows, expect_removed, expect_kept = [], {}, set()
    # 12 unrelated documents
    for i in range(12):
        rows.append(document_row(f"u{i:02d}", " ".join(words(rng, 120))))
        expect_kept.add(f"u{i:02d}")
    # near duplicates at high similarity (found), and dissimilar variants (left alone)
    for i in range(6):
        base = words(rng, 200)
        near = substitute(rng, base, 1 if i % 2 else 2)       # J ~ 0.95 / 0.90
        far = substitute(rng, base, 25)                         # J ~ 0.3
        rows.append(document_row(f"n{i}a", " ".join(base)))
        rows.append(document_row(f"n{i}b", " ".join(near)))
        rows.append(document_row(f"n{i}c", " ".join(far)))
        assert jaccard(" ".join(base), " ".join(near)) >= 0.9
        assert jaccard(" ".join(base), " ".join(far)) < 0.5
        expect_removed[f"n{i}b"] = ("minhash", f"n{i}a")
        expect_kept.update({f"n{i}a", f"n{i}c"})
    # a transitive chain: t1 ~ t2 ~ t3 but t1 and t3 are below the threshold
    base = words(rng, 200)
    t2 = substitute(rng, base, positions=[10, 30, 50, 70])      # each change kills 5 shingles: J = 176/216
    t3 = substitute(rng, t2, positions=[110, 130, 150, 170])
    t1s, t2s, t3s = " ".join(base), " ".join(t2), " ".join(t3)
    assert jaccard(t1s, t2s) >= 0.8 and jaccard(t2s, t3s) >= 0.8 and jaccard(t1s, t3s) < 0.8
    rows += [document_row("t3", t3s), document_row("t1", t1s), document_row("t2", t2s)]
    expect_removed.update({"t2": ("minhash", "t1"), "t3": ("minhash", "t1")})
    expect_kept.add("t1")
    # exact duplicates after normalisation (case, whitespace, NFKC), one of which also near-duplicates another
    e = " ".join(words(rng, 80))
    rows += [document_row("x2", e.upper()), document_row("x1", e), document_row("x3", "  " + e.replace(" ", "\u00a0 "))]
    expect_removed.update({"x2": ("exact", "x1"), "x3": ("exact", "x1")})
    ew = e.split()
    ew[-1] = "zzz"
    rows.append(document_row("x0", " ".join(ew)))   # near duplicate of x1 with a smaller id: survives the cluster
    expect_removed["x1"] = ("minhash", "x0")
    expect_removed["x2"] = ("exact", "x0")
    expect_removed["x3"] = ("exact", "x0")
    expect_kept.add("x0")
    # empty / short documents: two empty texts are exact duplicates, short distinct ones stay
    rows += [document_row("s1", ""), document_row("s2", "   "), document_row("s3", "hi there"),
             document_row("s4", "bye now")]
    expect_removed["s2"] = ("exact", "s1")
    expect_kept.update({"s1", "s3", "s4"})
    return rows, expect_removed, expect_kept


# cluster_id (smallest id of the final cluster) of every removed record in the planted corpus
EXPECTED_CLUSTERS = {**{f"n{i}b": f"n{i}a" for i in range(6)}, "t2": "t1", "t3": "t1", "x1": "x0", "x2": "x0",
                     "x3": "x0", "s2": "s1"}


@pytest.fixture(scope="module")
def corpus():
    return planted_corpus()


def _make_lake(spark, lake_dir, rows):
    from jobs.tables import Lake

    lake = Lake(spark, lake_dir)
    lake.write(documents_df(spark, rows).repartition(3), "filtered")
    return lake


def _outputs(lake):
    ded = sorted(r["id"] for r in lake.read("deduped").select("id").collect())
    dup = sorted((r["id"], r["cluster_id"], r["kept_id"], r["method"])
                 for r in lake.read("duplicates").select("id", "cluster_id", "kept_id", "method").collect())
    return ded, dup


def test_dedup_finds_planted_duplicates(spark, tmp_path, corpus):
    from jobs.dedup import main

    rows, expect_removed, expect_kept = corpus
    lake = _make_lake(spark, str(tmp_path / "lake"), rows)
    assert main(["--lake", lake.root, "--bands", "32", "--rows", "4"]) == 0
    ded, dup = _outputs(lake)
    got = {i: (m, k) for i, _, k, m in dup}
    assert got == expect_removed
    assert set(ded) == expect_kept
    assert len(ded) + len(dup) == len(rows)
    assert set(k for _, _, k, _ in dup) <= set(ded)          # every kept_id is a surviving document
    assert {i: c for i, c, _, _ in dup} == EXPECTED_CLUSTERS
    # duplicates keep the full record plus the three columns
    assert set(lake.read("filtered").columns) | {"cluster_id", "kept_id", "method"} == set(lake.read("duplicates").columns)

    m = [r for r in lake.read_arrow("metrics").to_pylist() if r["stage"] == "dedup"][-1]
    assert m["docs_in"] == len(rows) and m["docs_out"] == len(ded) and m["docs_rejected"] == len(dup)
    reasons = dict(m["reasons"])
    assert reasons == {"exact": 3, "minhash": 9}
    extra = json.loads(m["extra"])
    assert extra["exact"]["docs_removed"] == 3 and extra["minhash"]["docs_removed"] == 9
    tok = {r["id"]: r["n_tokens_est"] for r in rows}
    assert extra["exact"]["tokens_removed"] == tok["x2"] + tok["x3"] + tok["s2"]
    assert m["tokens_in"] - m["tokens_out"] == sum(tok[i] for i in expect_removed)
    # clusters: 6 pairs (2), s1+s2 (2), t1..t3 (3), x0..x3 (4)
    assert extra["cluster_size_histogram"] == {"2": 7, "3": 1, "4": 1}
    assert extra["params"]["bands"] == 32 and extra["params"]["rows"] == 4
    # a corpus this small (known from the input's Delta log) takes the one-job plan: the keys pass and the one task
    assert {"keys_and_one_task", "write"} <= set(extra["timings_s"]) and "keys_and_exact" not in extra["timings_s"]
    assert extra["resolve_method"] == "one task" and extra["reader"] == "workers (pyarrow)"
    assert os.path.exists(os.path.join(lake.root, "audit", "duplicates.jsonl"))

    # a re-run with the same input and config is skipped; --exact-only is a different config
    n_metrics = lake.read_arrow("metrics").num_rows
    assert main(["--lake", lake.root, "--bands", "32", "--rows", "4"]) == 0
    assert lake.read_arrow("metrics").num_rows == n_metrics
    assert main(["--lake", lake.root, "--exact-only"]) == 0
    ded, dup = _outputs(lake)
    assert {(i, m, k) for i, _, k, m in dup} == {("x2", "exact", "x1"), ("x3", "exact", "x1"), ("s2", "exact", "s1")}
    assert len(ded) == len(rows) - 3


def test_partitions_2_give_the_same_output(spark, tmp_path, corpus):
    """The planted test runs at 4 shuffle partitions, spark-submit below at 16; this third run, at 2, must give the
    same tables (all three are checked against the same fixed expected sets)."""
    from jobs.dedup import main

    rows, expect_removed, expect_kept = corpus
    old = spark.conf.get("spark.sql.shuffle.partitions")
    try:
        spark.conf.set("spark.sql.shuffle.partitions", "2")
        lake = _make_lake(spark, str(tmp_path / "lake"), rows)
        assert main(["--lake", lake.root, "--bands", "32", "--rows", "4"]) == 0
        first = _outputs(lake)
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", old)
    ded, dup = first
    assert set(ded) == expect_kept
    assert {i: (m, k) for i, _, k, m in dup} == expect_removed
    assert {i: c for i, c, _, _ in dup} == EXPECTED_CLUSTERS


def test_params_from_threshold_and_workers_without_spark(corpus):
    """bands/rows chosen from the threshold: for verified candidates (the default) the fewest missed pairs under the
    false-positive cap (16x8 at 0.8 and 128 permutations, not datasketch's balanced 9x13); with --verify none the
    balanced choice. The Arrow workers called directly: estimate verification approximates the exact Jaccard."""
    import pyarrow as pa
    from datasketch.lsh import _optimal_param

    from jobs.cli import UserError
    from jobs.dedup import STAGE, _keys_fn, _pair_sim_fn, _sets_fn, lsh_summary, resolve_params
    from jobs.runner import build_parser as stage_parser

    def build_parser():
        return stage_parser(STAGE)
    from udfs.minhash import candidate_probability, lsh_error_mass

    def params(*argv, **cfg):
        return resolve_params(cfg, build_parser().parse_args(list(argv)))

    p = params()
    assert (p["bands"], p["rows"], p["threshold"], p["verify"]) == (16, 8, 0.8, "exact")
    assert p["strip_punctuation"] is True and p["max_fp_mass"] == 0.15
    s = lsh_summary(p)
    assert s["p_candidate_at_threshold"] == pytest.approx(candidate_probability(0.8, 16, 8)) and \
        s["p_candidate_at_threshold"] > 0.94 and s["p_candidate_at_threshold_plus_0.05"] > 0.99
    assert s["fp_mass"] <= 0.15 and s["choice"].startswith("recall-first for verify=exact")
    assert (params("--verify", "estimate")["bands"], params("--verify", "estimate")["rows"]) == (16, 8)
    # verify=none: every candidate is a duplicate, so false positives count as much as misses (datasketch's choice)
    p = params("--verify", "none")
    assert (p["bands"], p["rows"]) == (9, 13) == _optimal_param(0.8, 128, 0.5, 0.5)
    assert lsh_summary(p)["choice"].startswith("balanced for verify=none")
    p = params("--verify", "none", "--num-perm", "64", threshold=0.5)
    assert (p["bands"], p["rows"]) == (14, 4) == _optimal_param(0.5, 64, 0.5, 0.5)
    # the cap: tighter means fewer candidates (and a lower predicted recall), never above the cap
    for cap in (0.02, 0.05, 0.3):
        p = params(max_fp_mass=cap)
        fp, _ = lsh_error_mass(0.8, p["bands"], p["rows"])
        assert fp <= cap and p["bands"] * p["rows"] <= 128
    assert (params(max_fp_mass=0.05)["bands"], params(max_fp_mass=0.05)["rows"]) == (10, 11)
    p = params("--num-perm", "64", threshold=0.5)
    assert lsh_error_mass(0.5, p["bands"], p["rows"])[0] <= 0.15
    assert candidate_probability(0.5, p["bands"], p["rows"]) > candidate_probability(0.5, 14, 4)
    with pytest.raises(UserError):
        params(max_fp_mass=0)
    # the shipped conf/pipeline.yaml agrees with these defaults, and --set reaches the cap
    from jobs.config import load_config

    p = resolve_params(load_config()["dedup"], build_parser().parse_args([]))
    assert (p["bands"], p["rows"], p["strip_punctuation"], p["max_fp_mass"], p["verify"]) == (16, 8, True, 0.15, "exact")
    p = resolve_params(load_config(None, ["dedup.max_fp_mass=0.05"])["dedup"], build_parser().parse_args([]))
    assert (p["bands"], p["rows"]) == (10, 11)
    p = params("--bands", "16", "--rows", "8", "--seed", "3")
    assert (p["bands"], p["rows"], p["seed"]) == (16, 8, 3)
    assert lsh_summary(params("--bands", "4", "--rows", "2"))["choice"].startswith("given")

    rows, _, _ = corpus
    by_id = {r["id"]: r["text"] for r in rows}
    ids = ["n0a", "s1", "x1", "x2"]
    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("n_tokens", pa.int64()), ("q", pa.float64())])
    batch = pa.RecordBatch.from_pydict({"id": ids, "text": [by_id[i] for i in ids], "n_tokens": [1, 2, 3, 4],
                                        "q": [None] * 4}, schema=schema)
    out = next(_keys_fn(params())(iter([batch])))
    ek, bk = out.column("ekey").to_pylist(), out.column("bkeys").to_pylist()
    assert ek[2] == ek[3] and len(set(ek)) == 3                     # x1 and x2 normalise to the same text
    assert bk[1] is None and len(bk[0]) == 16 and bk[2] == bk[3]    # empty text: no band keys
    # an input batch is cut into kernel calls of at most KEYS_BATCH_ROWS rows (values too): the same rows
    import jobs.dedup as dd

    real_rows = dd.KEYS_BATCH_ROWS
    dd.KEYS_BATCH_ROWS = 3
    try:
        cut = list(_keys_fn(params(), with_v=True)(iter([batch])))
    finally:
        dd.KEYS_BATCH_ROWS = real_rows
    whole = next(_keys_fn(params(), with_v=True)(iter([batch])))
    assert [b.num_rows for b in cut] == [3, 1]
    assert pa.Table.from_batches(cut).to_pylist() == pa.Table.from_batches([whole]).to_pylist()
    assert [len(b) for b in dd._slices(batch, "text", 2, 1 << 30)] == [2, 2]

    pairs = [("n0a", "n0b"), ("n0a", "n0c"), ("t1", "t2"), ("x0", "x1")]

    def sims(p, limit=None):
        """_sets_fn once per document (in slices of at most `limit` text bytes), then _pair_sim_fn per pair."""
        docs = sorted({d for pr in pairs for d in pr})
        tb = pa.RecordBatch.from_pydict({"id": docs, "text": [by_id[d] for d in docs]})
        if limit is not None:
            import jobs.dedup as dd

            real = dd._slices
            dd._slices = lambda b, c, rows, _lim: real(b, c, rows, limit)
        try:
            out = list(_sets_fn(p)(iter([tb])))
        finally:
            if limit is not None:
                dd._slices = real
        v = dict(zip(sum((b.column("id").to_pylist() for b in out), []), sum((b.column("v").to_pylist() for b in out), [])))
        vb = pa.RecordBatch.from_pydict({"src": [a for a, _ in pairs], "dst": [b for _, b in pairs],
                                         "va": [v[a] for a, _ in pairs], "vb": [v[b] for _, b in pairs]},
                                        schema=pa.schema([("src", pa.string()), ("dst", pa.string()),
                                                          ("va", pa.binary()), ("vb", pa.binary())]))
        return len(out), next(_pair_sim_fn(p)(iter([vb]))).column("sim").to_pylist()

    n_batches, exact = sims(params())
    assert n_batches == 1 and exact == pytest.approx([jaccard(by_id[a], by_id[b]) for a, b in pairs])
    n_batches, sliced = sims(params(), limit=1)          # one document per slice: the same values
    assert n_batches == len({d for pr in pairs for d in pr}) and sliced == exact
    _, est = sims(params("--verify", "estimate", "--num-perm", "256"))
    assert max(abs(x - y) for x, y in zip(est, exact)) < 0.12


def test_quality_column_picks_survivor(spark, tmp_path):
    from jobs.dedup import main
    from pyspark.sql import functions as F

    rng = random.Random(7)
    text = " ".join(words(rng, 60))
    near = " ".join(substitute(rng, text.split(), 1))
    rows = [document_row("a", text), document_row("b", text.upper()), document_row("c", near),
            document_row("d", " ".join(words(rng, 60)))]
    lake_dir = str(tmp_path / "lake")
    from jobs.tables import Lake

    lake = Lake(spark, lake_dir)
    q = {"a": 0.1, "b": 0.5, "c": 0.9, "d": 0.2}
    df = documents_df(spark, rows).withColumn(
        "quality", F.create_map(*[F.lit(x) for kv in q.items() for x in kv])[F.col("id")])
    lake.write(df, "filtered")
    assert main(["--lake", lake_dir, "--bands", "32", "--rows", "4",
                 "--set", "dedup.quality_column=quality"]) == 0
    ded, dup = _outputs(lake)
    assert ded == ["c", "d"]
    assert {(i, k, m) for i, c, k, m in dup} == {("a", "c", "exact"), ("b", "c", "minhash")}
    assert {c for _, c, _, _ in dup} == {"a"}


def test_defaults_strip_punctuation_and_log_the_lsh_choice(spark, tmp_path, capsys):
    """Default config: a re-punctuated, re-cased copy is an exact duplicate of the normalised text, a copy with one
    word changed a near duplicate; the log names bands x rows and the predicted recall. With punctuation kept
    (the previous default) the re-punctuated copy is neither."""
    from jobs.dedup import main
    from jobs.tables import Lake

    rng = random.Random(11)
    w = words(rng, 120)
    text = " ".join(w)
    repunct = " ".join(x + ("," if i % 3 == 0 else ";" if i % 7 == 0 else "") for i, x in enumerate(w)).upper()
    near = " ".join(substitute(rng, w, positions=[60]))
    assert jaccard(text, repunct) == 1.0 and jaccard(text, repunct, strip_punct=False) < 0.1
    assert 0.9 < jaccard(text, near) < 1.0
    rows = [document_row("a", text), document_row("b", repunct), document_row("c", near),
            document_row("d", " ".join(words(rng, 120)))]
    lake = Lake(spark, str(tmp_path / "lake"))
    lake.write(documents_df(spark, rows), "filtered")
    capsys.readouterr()
    assert main(["--lake", lake.root]) == 0
    err = capsys.readouterr().err
    assert "bands=16 rows=8 verify=exact" in err and "strip_punctuation=True" in err
    assert ("LSH 16 bands x 8 rows, recall-first for verify=exact (max_fp_mass=0.15): predicted recall "
            "P(candidate) = 0.9470 at J=0.8, 0.9938 at J=0.85") in err
    ded, dup = _outputs(lake)
    assert ded == ["a", "d"] and {(i, k, m) for i, _, k, m in dup} == {("b", "a", "exact"), ("c", "a", "minhash")}
    m = [r for r in lake.read_arrow("metrics").to_pylist() if r["stage"] == "dedup"][-1]
    extra = json.loads(m["extra"])
    assert extra["lsh"]["bands"] == 16 and extra["lsh"]["p_candidate_at_threshold"] == pytest.approx(0.947, abs=1e-3)
    assert extra["params"]["strip_punctuation"] is True

    assert main(["--lake", lake.root, "--set", "dedup.strip_punctuation=false"]) == 0
    ded, dup = _outputs(lake)
    assert ded == ["a", "b", "d"] and {(i, k, m) for i, _, k, m in dup} == {("c", "a", "minhash")}


PARAGRAPHS = [
    "The quick survey of the river valley took most of the morning. Our guide pointed out the old mill, the two "
    "bridges and the road that once carried timber to the coast. By noon the fog had lifted and we could see the "
    "hills on the far side, green after the long rains of the spring.",
    "Each volunteer is asked to bring a notebook, a pencil and a pair of sturdy boots. We meet at the library at "
    "eight o'clock sharp; latecomers will have to find their own way to the first site. Lunch is provided, but "
    "please tell the organisers in advance about any dietary needs.",
    "When the committee met again in autumn, the members agreed that the report should be rewritten in plain "
    "language. Several readers had complained that the tables were hard to follow. The new version, which appeared "
    "in December, explains every figure in a sentence or two and lists its sources at the end.",
]


def _bench_module():
    sys.path.insert(0, os.path.join(REPO, "bench"))
    try:
        import bench_dedup
    finally:
        sys.path.pop(0)
    return bench_dedup


def test_bench_variants_have_their_edit_kind_and_scores_count_pairs():
    """bench/bench_dedup.py without Spark: every edit kind changes what it says (surface kinds keep J = 1.0 on the
    job's normalisation, word edits reach their target), and the pair-level scores count TP / FP / FN right."""
    b = _bench_module()
    rng = random.Random(5)
    vocab = ["apple", "window", "garden", "letter", "silver", "engine", "market", "island"]
    for text in PARAGRAPHS:
        assert b._is_prose(text) and not b._is_prose("x = f(a, b) + g[0] * 2;  # {'k': v} -> None == 0")
        for kind in b.KINDS:
            v = b.make_variant(rng, text, kind, vocab, 5)
            j, j_raw = jaccard(text, v), jaccard(text, v, strip_punct=False)
            assert v != text, kind
            if kind in ("case", "whitespace", "punctuation"):
                assert j == 1.0, kind
                if kind == "punctuation":
                    assert j_raw < 1.0
                else:
                    assert j_raw == 1.0
            elif kind == "sentence_move":
                assert sorted(v.split()) == sorted(text.split()) and 0.7 < j < 1.0
            else:
                assert j < 1.0, kind
        # word edits stop at the first edit that reaches the target
        v = b._edit_to_target(random.Random(1), text, 0.8, ("substitute",), vocab, 5)
        assert jaccard(text, v) <= 0.8
    docs, planted = b.make_eval_corpus(5, PARAGRAPHS * 2, seed=3, pair_fraction=1.0)
    assert len(docs) == 5 and len(planted) == 2
    for (x, y), (kind, j, _) in planted.items():
        assert kind in b.KINDS and j == jaccard(dict(docs)[x], dict(docs)[y])

    planted = {("a", "b"): ("substitute", 0.9, 0.9), ("c", "d"): ("insert", 0.7, 0.7),
               ("e", "f"): ("delete", 0.82, 0.82), ("g", "h"): ("case", 1.0, 1.0)}
    text = {k: PARAGRAPHS[0] for k in "abcdefgh"}
    text["x"] = PARAGRAPHS[1]
    labels = {"a": "a", "b": "a", "c": "c", "d": "c", "e": "e", "f": "f", "g": "g", "h": "g", "x": "a"}
    sc = b.score(labels, planted, text, 0.8, {}, 5)
    # true: ab, ef, gh; predicted: ab, cd, gh, and ax, bx (unplanted, J computed: < 0.8)
    assert (sc["overall"]["tp"], sc["overall"]["fp"], sc["overall"]["fn"]) == (2, 3, 1)
    assert sc["overall"]["precision"] == pytest.approx(2 / 5) and sc["overall"]["recall"] == pytest.approx(2 / 3)
    assert (sc["outside_band"]["tp"], sc["outside_band"]["fp"], sc["outside_band"]["fn"]) == (2, 3, 0)
    assert sc["kind:delete"]["fn"] == 1 and sc["kind:insert"]["fp"] == 1 and sc["kind:unplanted"]["fp"] == 2
    assert sc["bin:[0.80,0.85)"]["recall"] == 0.0 and sc["bin:1.00"]["recall"] == 1.0
    assert sc["predicted_pairs"] == 5


def test_connected_components_matches_union_find(spark):
    from jobs.components import connected_components, local_components

    rng = random.Random(5)
    nodes = [f"v{i:03d}" for i in range(300)]
    edges = [(rng.choice(nodes), rng.choice(nodes)) for _ in range(220)]
    edges += [(f"c{i:03d}", f"c{i + 1:03d}") for i in range(40)]     # a long chain, reversed id order below
    edges += [(f"r{i + 1:03d}", f"r{i:03d}") for i in range(40)]
    parent = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    expected = {x: find(x) for a, b in edges for x in (a, b) if a != b}
    df = spark.createDataFrame(edges + [("v001", "v001")], "src string, dst string")   # a self loop is no edge
    comp, rounds = connected_components(df)
    got = {r["node"]: r["component"] for r in comp.collect()}
    assert got == expected
    assert rounds < 20
    # the one-task path (dedup's default below dedup.local_components_max_edges) gives the same components
    assert {r["node"]: r["component"] for r in local_components(df).collect()} == expected


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_min_label_components_equal_union_find(monkeypatch, backend):
    import numpy as np

    from udfs.graph import min_label_components

    monkeypatch.setenv("LMR_MINHASH_BACKEND", backend)
    for trial in range(60):
        rng = random.Random(trial)
        n = rng.randint(1, 200)
        if trial % 3 == 0:   # a chain numbered against the direction labels travel
            u, v = np.arange(n - 1, 0, -1), np.arange(n - 2, -1, -1)
        else:
            u = np.array([rng.randrange(n) for _ in range(rng.randint(0, 250))], np.int64)
            v = np.array([rng.randrange(n) for _ in range(len(u))], np.int64)
        parent = list(range(n))

        def find(x):
            while parent[x] != x:
                x = parent[x]
            return x

        for a, b in zip(u.tolist(), v.tolist()):
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
        assert min_label_components(u, v, n).tolist() == [find(i) for i in range(n)], trial


def test_writers_and_component_paths_give_the_same_tables(spark, tmp_path, corpus):
    """dedup.writer auto (the workers write deduped and duplicates in one Spark job; the default here) with LSH
    buckets, verification and components in one task, against Spark's writer with LSH buckets from a shuffle of
    the band keys, pairs joined to their sets and Large-Star/Small-Star components in Spark: the same rows in both tables, the same schemas, metrics (candidate
    pairs, shared buckets, largest bucket included) and audit sample."""
    from jobs.dedup import main
    from deltalake import DeltaTable

    from jobs.tables import Lake

    sys.path.insert(0, os.path.join(REPO, "scripts"))
    from lake_digest import table_digest

    rows, expect_removed, _ = corpus
    runs = {"auto": [], "spark": ["--set", "dedup.writer=spark", "--set", "dedup.local_components_max_edges=0",
                                  "--set", "dedup.local_lsh_max_keys=0", "--set", "dedup.local_verify_max_bytes=0"]}
    lakes = {}
    for name, extra in runs.items():
        lakes[name] = _make_lake(spark, str(tmp_path / name), rows)
        assert main(["--lake", lakes[name].root, "--bands", "32", "--rows", "4", *extra]) == 0
    a, b = lakes["auto"], lakes["spark"]
    for t in ("deduped", "duplicates"):
        assert table_digest(a.path(t)) == table_digest(b.path(t)), t
        assert a.read(t).schema == b.read(t).schema, t
        assert DeltaTable(a.path(t)).schema().to_json() == DeltaTable(b.path(t)).schema().to_json(), t
    assert {r["id"]: (r["method"], r["kept_id"]) for r in a.read("duplicates").collect()} == expect_removed

    def metrics(lake):
        m = [r for r in lake.read_arrow("metrics").to_pylist() if r["stage"] == "dedup"][-1]
        extra = json.loads(m["extra"])
        return ([m[k] for k in ("docs_in", "docs_out", "docs_rejected", "tokens_in", "tokens_out")], dict(m["reasons"]),
                {k: v for k, v in extra.items() if k not in ("timings", "timings_s", "cc_method", "cc_rounds",
                                                              "lsh_method", "verify_method", "resolve_method", "reader",
                                                              "values_method")},
                extra)

    ma, mb = metrics(a), metrics(b)
    assert ma[:3] == mb[:3] and ma[2]["candidate_pairs"] > 0 and ma[2]["shared_buckets"] > 0
    assert (ma[3]["cc_method"], mb[3]["cc_method"]) == ("one task", "spark")
    assert (ma[3]["lsh_method"], mb[3]["lsh_method"]) == ("one task", "spark")
    assert (ma[3]["verify_method"], mb[3]["verify_method"]) == ("one task", "spark")
    assert (ma[3]["resolve_method"], mb[3]["resolve_method"]) == ("one task", "spark")
    # the auto writer's keys pass put the shingle sets in files of a write folder of duplicates, gone afterwards
    assert (ma[3]["values_method"], mb[3]["values_method"]) == ("files", "text")
    from jobs.tables import remove_uncommitted

    assert remove_uncommitted(a.path("duplicates"), dry_run=True) == []
    assert (ma[3]["reader"], mb[3]["reader"]) == ("workers (pyarrow)", "spark")
    assert "keys_and_one_task" in ma[3]["timings_s"] and "lsh_candidates" in mb[3]["timings_s"]

    def audit(lake):
        with open(os.path.join(lake.root, "audit", "duplicates.jsonl")) as f:
            return [{k: v for k, v in json.loads(line).items() if k != "run_id"} for line in f]

    assert audit(a) == audit(b) and len(audit(a)) == 3 + 5   # every exact duplicate, 5 of the 9 near ones
    assert Lake(spark, a.root).read("deduped").count() + len(expect_removed) == len(rows)


@pytest.mark.parametrize("verify", ["exact", "estimate", "none"])
def test_near_in_one_task_equals_the_step_by_step_plan(spark, corpus, verify, monkeypatch, tmp_path):
    """Everything after the keys pass in one task (LSH, verification, components, survivors, with the values made
    by the keys pass) against the step-by-step plan: one-task LSH and verification after a second read of the
    candidates' text, and Spark's LSH, joins and components with the values from the keys pass. A quality column
    with ties, nulls and NaN decides survivors; the one task makes the exact groups itself, the Spark plan by a
    window over the digests joined back (broadcast, or a shuffle join). The same removed rows and counters."""
    import argparse

    from pyspark.sql import functions as F

    from jobs import dedup

    rows, _, _ = corpus
    rng = random.Random(5)
    extra = []
    for i in range(4):   # a cluster of four near copies, one of them also an exact copy, to move survivors about
        base = words(rng, 150)
        extra += [document_row(f"c{i}{j}", " ".join(substitute(rng, base, 1) if j else base)) for j in range(4)]
        extra.append(document_row(f"c{i}9", " ".join(base).upper()))
    df = documents_df(spark, rows + extra).repartition(3)
    q = (F.when(F.col("id").endswith("b") | F.col("id").endswith("2"), F.lit(float("nan")))
         .when(F.col("id").startswith("t") | F.col("id").endswith("1"), F.lit(None).cast("double"))
         .otherwise((F.length("id") % 2).cast("double")))
    df = df.withColumn("q", q)
    args = argparse.Namespace(threshold=None, ngram=None, num_perm=None, bands=32, rows=4, seed=None, verify=verify,
                              exact_only=False)

    def run(values_in_keys, values_dir=None, one_job=False, **cfg):
        p = dedup.resolve_params({"quality_column": "q", **cfg}, args)
        timings, driver = {}, {}
        removed, info = dedup.find_duplicates(df, p, timings, values_in_keys=values_in_keys, values_dir=values_dir,
                                              one_job=one_job, driver=driver)
        got = sorted(tuple(r) for r in removed.select("id", "cluster_id", "kept_id", "method", "n_tokens").collect())
        # the one-job plan: one Spark job, whose removed records are also on the driver (as Arrow), the same rows
        assert ("keys_and_one_task" in timings) == one_job == ("removed" in driver), (timings, driver)
        if one_job:
            assert sorted(tuple(r.values()) for r in driver["removed"].to_pylist()) == got
        return got, {k: v for k, v in info.items() if not k.endswith("_method") and k != "cc_rounds"}, info

    one, one_info, one_m = run(True)
    assert one_m["resolve_method"] == "one task" and one_info["docs_removed"] == len(one) > 10
    assert any(m == "minhash" for _, _, _, m, _ in one) and any(m == "exact" for _, _, _, m, _ in one)
    if verify == "none":   # no values to verify: one task is the plan whenever LSH fits in one
        variants = [run(False, local_lsh_max_keys=0, local_components_max_edges=0)]
    else:
        variants = [run(False), run(True, local_lsh_max_keys=0, local_components_max_edges=0)]
    with monkeypatch.context() as mp:   # exact groups joined back by a shuffle, not a broadcast
        mp.setattr(dedup, "BROADCAST_REMOVED", 0)
        variants.append(run(True, local_lsh_max_keys=0))
    for got, got_info, m in variants:
        assert m["resolve_method"] == "spark", m
        assert got == one
        assert got_info == one_info
    # the keys pass and the one task in one Spark job (the input's count known beforehand): the same result
    got, got_info, m = run(True, one_job=True)
    assert got == one and got_info == one_info and m["resolve_method"] == "one task"
    # the keys pass's shingle sets in files (one per keys batch) instead of rows: the one task reads only its
    # candidates' sets; a plan that does not fit one task reads the candidates' text again instead
    side = tmp_path / "values"
    side.mkdir()
    got, got_info, m = run(True, values_dir=str(side))
    assert got == one and got_info == one_info and m["resolve_method"] == "one task"
    got, got_info, m = run(True, values_dir=str(side), one_job=True)
    assert got == one and got_info == one_info and m["resolve_method"] == "one task"
    if verify == "exact":
        assert m["values_method"] == "files" and len(list(side.glob("v-*.arrow"))) >= 3  # 3 partitions
        got, got_info, m = run(True, values_dir=str(side), local_lsh_max_keys=0)
        assert got == one and got_info == one_info
        assert m["resolve_method"] == "spark" and m["values_method"] == "text"
    else:  # signatures are small: rows as before
        assert m["values_method"] == ("rows" if verify == "estimate" else "none") and not list(side.iterdir())


def test_workers_read_a_plain_table_and_spark_a_partitioned_one(spark, tmp_path, corpus):
    """jobs.direct.plain_files names every data file of a plain local table, and read_files gives its rows (a
    column a file lacks as nulls); a partitioned table is left to Spark's reader, and dedup gives the same result
    on it."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from jobs import direct
    from jobs.dedup import main

    rows, expect_removed, _ = corpus
    lake = _make_lake(spark, str(tmp_path / "plain"), rows)
    df = lake.read("filtered")
    units = direct.plain_files(lake, "filtered", None, df.columns, direct.file_schema(df))
    local = [os.path.realpath(u[7:] if u.startswith("file://") else u) for u in lake.files("filtered")]
    assert len(units) >= 1 and sorted(os.path.realpath(u["path"]) for u in units) == sorted(local)
    schema = pa.schema([("id", pa.string()), ("n_tokens_est", pa.int64()), ("not_there", pa.int64())])
    got = pa.Table.from_batches(list(direct.read_files([pa.record_batch({"path": [u["path"] for u in units]})],
                                                       ["id", "n_tokens_est", "not_there"], schema)))
    assert sorted(got.column("id").to_pylist()) == sorted(r["id"] for r in rows)
    assert got.column("not_there").null_count == got.num_rows == len(rows)

    from jobs.tables import Lake

    other = Lake(spark, str(tmp_path / "partitioned"))
    write_deltalake(other.path("filtered"), df.toArrow(), partition_by=["source"])
    pdf = other.read("filtered")
    assert direct.plain_files(other, "filtered", None, pdf.columns, direct.file_schema(pdf)) is None
    for lk in (lake, other):
        assert main(["--lake", lk.root, "--bands", "32", "--rows", "4"]) == 0
        assert {r["id"]: (r["method"], r["kept_id"]) for r in lk.read("duplicates").collect()} == expect_removed
        m = [r for r in lk.read_arrow("metrics").to_pylist() if r["stage"] == "dedup"][-1]
        assert json.loads(m["extra"])["reader"] == ("workers (pyarrow)" if lk is lake else "spark")


def test_bad_arguments_exit_2(spark, tmp_path):
    from jobs.cli import run_main
    from jobs.dedup import main

    assert run_main("dedup", main, ["--lake", str(tmp_path / "nolake")]) == 2          # no filtered table
    assert run_main("dedup", main, ["--lake", str(tmp_path), "--bands", "4"]) == 2      # rows missing
    assert run_main("dedup", main, ["--lake", str(tmp_path), "--bands", "20", "--rows", "20"]) == 2
    assert run_main("dedup", main, ["--lake", str(tmp_path), "--threshold", "1.5"]) == 2


def test_spark_submit_runs_the_job(spark, tmp_path, corpus):
    rows, expect_removed, expect_kept = corpus
    lake = _make_lake(spark, str(tmp_path / "lake"), rows)
    env = dict(os.environ, PYSPARK_PYTHON=os.path.join(REPO, ".venv", "bin", "python"),
               PYSPARK_DRIVER_PYTHON=os.path.join(REPO, ".venv", "bin", "python"))
    env.pop("PYSPARK_GATEWAY_PORT", None)
    env.pop("PYSPARK_GATEWAY_SECRET", None)
    submit = os.path.join(REPO, ".venv", "bin", "spark-submit")
    if not os.path.exists(submit):
        submit = os.path.join(os.path.dirname(sys.executable), "spark-submit")
    # 16 shuffle partitions here (4 in-process, 2 in the test above): the same output is expected
    res = subprocess.run([submit, "--master", "local[2]", "--conf", "spark.ui.enabled=false",
                          "--conf", "spark.sql.shuffle.partitions=16",
                          os.path.join(REPO, "jobs", "dedup.py"), "--lake", lake.root, "--bands", "32", "--rows", "4"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    ded, dup = _outputs(lake)
    assert set(ded) == expect_kept
    assert {i: (m, k) for i, _, k, m in dup} == expect_removed
    assert {i: c for i, c, _, _ in dup} == EXPECTED_CLUSTERS


def test_exact_groups_in_one_task_order_survivors_as_spark_does():
    """_with_exact_groups (the one task's exact groups) against a plain reference of the Spark window's order:
    per digest, the survivor of smallest coalesce(-q, +inf) with NaN after every number, ties by id (UTF-8 bytes),
    and the group's smallest id as its cluster."""
    import math

    import pyarrow as pa

    from jobs.dedup import _with_exact_groups

    rng = random.Random(11)
    ids = [f"d{rng.randrange(10**6)}-{i}" for i in range(400)] + ["é1", "z0", "Z0", "a10", "a9"]
    qs = [rng.choice([None, float("nan"), 0.0, 1.0, -2.5, float(rng.randrange(3))]) for _ in ids]
    keys = [bytes([rng.randrange(40)]) * 16 for _ in ids]
    got = _with_exact_groups(pa.table({"id": ids, "q": pa.array(qs, pa.float64()), "ekey": pa.array(keys, pa.binary())}))

    def rank(i):
        q = qs[i]
        nq = math.inf if q is None else -q
        return (math.isnan(nq), 0.0 if math.isnan(nq) else nq, ids[i].encode())

    groups = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    kept = {k: ids[min(g, key=rank)] for k, g in groups.items()}
    low = {k: min((ids[i] for i in g), key=str.encode) for k, g in groups.items()}
    assert got.column("exact_kept").to_pylist() == [kept[k] for k in keys]
    assert got.column("exact_cluster").to_pylist() == [low[k] for k in keys]
    assert len(set(keys)) < len(keys) and any(len(g) > 3 for g in groups.values())
