"""Synthetic data: templates, verifiers, the sandbox's refusals, pass@k, and jobs/synthesize.py end to end with
the project's own model (as a checkpoint and behind model/serve.py's OpenAI-compatible API on loopback)."""
import json
import os
import threading

import pytest

from jobs.cli import run_main
from udfs import synthetic as syn
from udfs.sandbox import run_python


# ---- templates and verifiers -----------------------------------------------------------------------------------
def test_templates_are_deterministic_and_their_references_verify():
    for t in syn.TEMPLATES:
        a, b = syn.make_problems(t, 20, seed=3), syn.make_problems(t, 20, seed=3)
        assert a == b and a != syn.make_problems(t, 20, seed=4)
        assert len({p["problem_id"] for p in a}) == 20
        for p in a:
            completion = p["reference"][len(p["prompt"]):]
            assert syn.verify(p, completion)[0] in syn.ACCEPTED, p
    p = syn.make_problem("arithmetic", 0, 0)
    assert p["prompt"].startswith("Question: ") and p["prompt"].endswith("\nAnswer:")


def test_numeric_and_exact_verifiers():
    p = {"problem_id": "x", "prompt": "Q\nAnswer:", "answer": 42.0, "tests": None, "verifier": "numeric"}
    assert syn.verify(p, " 42\nQuestion: next") == ("correct", 1.0, "")
    assert syn.verify(p, " 42.0000000001")[0] == "correct"          # within the relative tolerance
    assert syn.verify(p, " 42.1")[0] == "wrong"
    assert syn.verify(p, " forty-two")[0] == "no_answer"
    assert syn.verify(p, "\n\n 41 or 42")[0] == "wrong"             # the first number of the first line counts
    assert syn.verify(p, " 42", "exact")[0] == "correct" and syn.verify(p, " 42 apples", "exact")[0] == "wrong"


def test_pass_at_k_unbiased_estimator_by_hand():
    assert syn.pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert syn.pass_at_k(10, 3, 2) == pytest.approx(1 - (7 * 6) / (10 * 9))
    assert syn.pass_at_k(10, 0, 10) == 0.0 and syn.pass_at_k(10, 1, 10) == 1.0
    with pytest.raises(ValueError):
        syn.pass_at_k(4, 1, 5)


@pytest.mark.parametrize("code,verdict", [
    ("def f(x):\n    return x + 1\n", "passed"),
    ("def f(x):\n    return x\n", "failed"),
    ("def f(:\n", "failed"),
    ("while True:\n    pass\n", "timeout"),
    ("x = bytearray(4 * 1024 ** 3)\n", "memory"),
    ("import os\nos.fork()\n", "refused:process"),
    ("import subprocess\nsubprocess.run(['true'])\n", "refused:process"),
    ("import _posixsubprocess\n", "refused:process"),  # its fork_exec would spawn without an audit event
    ("try:\n    import os\n    os.system('true')\nexcept BaseException:\n    pass\n", "refused:process"),
    ("import socket\nsocket.create_connection(('127.0.0.1', 9))\n", "refused:network"),
    ("import urllib.request\nurllib.request.urlopen('http://example.com')\n", "refused:network"),
    ("open('/tmp/lmr-sandbox-escape.txt', 'w').write('x')\n", "refused:write"),
    ("import os\nos.remove('/etc/hostname')\n", "refused:write"),
    ("import ctypes\nctypes.CDLL(None)\n", "refused:native"),
    ("open('inside.txt', 'w').write('x')\nassert open('inside.txt').read() == 'x'\ndef f(x):\n    return x + 1\n",
     "passed"),
])
def test_sandbox_verdicts(code, verdict):
    res = run_python(code, "assert f(1) == 2\n" if "def f" in code else "", timeout_s=2.0, memory_mb=512)
    assert res["verdict"] == verdict, res
    assert not os.path.exists("/tmp/lmr-sandbox-escape.txt")
    if verdict == "timeout":
        assert res["seconds"] < 4


def test_python_verifier_runs_the_templates_tests():
    p = syn.make_problem("functions", 1, 2)
    good = p["reference"][len(p["prompt"]):]
    assert syn.verify(p, good + "\nQuestion: and more text after it\n")[0] == "passed"
    assert syn.verify(p, "def nothing():\n    pass\n")[0] == "failed"
    name = p["prompt"].split("function ")[1].split()[0]
    sneaky = f"import os\ndef {name}(*args):\n    os.system('true')\n    return args\n"
    assert syn.verify(p, sneaky)[0] == "refused:process"  # refused when the tests call it


# ---- end to end ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def arithmetic_model(tmp_path_factory):
    """A tiny byte-level GPT trained briefly on the arithmetic template's reference text (other seeds than the
    problems it is asked)."""
    from model import train
    from model.toy_pack import write_packed

    base = tmp_path_factory.mktemp("arith")
    texts = [p["reference"] for p in syn.make_problems("arithmetic", 3000, seed=100)]
    packed = str(base / "packed")
    write_packed(packed, {"train": texts[:2800], "val": texts[2800:]})
    out = str(base / "run")
    sets = ["n_layer=2", "n_head=2", "n_embd=64", "block_size=96", "batch_size=16", "max_steps=400",
            "warmup_steps=20", "lr=3e-3", "min_lr=3e-4", "eval_interval=400", "log_interval=50", "num_threads=2",
            f"out_dir={out}"]
    argv = ["--data", packed]
    for s in sets:
        argv += ["--set", s]
    assert run_main("train", train.main, argv) == 0
    return out


def _rows(lake, table):
    return [r.asDict(recursive=True) for r in lake.read(table).collect()]


def test_rejection_sampling_with_the_own_model(spark, lake, lake_dir, arithmetic_model, capsys):
    from jobs import mix, synthesize

    argv = ["--lake", lake_dir, "--generator", arithmetic_model, "--tasks", "arithmetic", "--n", "32", "--k", "8",
            "--max-tokens", "6", "--seed", "0"]
    assert run_main("synthesize", synthesize.main, argv) == 0
    kept, rejected = _rows(lake, "synthetic"), _rows(lake, "synthetic_rejected")
    assert len(kept) + len(rejected) == 32 * 8
    m = sorted((r for r in lake.read_arrow("metrics").to_pylist() if r["stage"] == "synthesize"),
               key=lambda r: r["started_at"])[-1]
    ex = json.loads(m["extra"])["by_template"]["arithmetic"]
    assert ex["problems"] == 32 and ex["candidates"] == 256 and ex["accepted"] == len(kept)
    # a briefly trained model: some right, not all; k tries find more than one
    assert 0 < ex["pass@1"] < ex["pass@8"] <= 1, ex
    assert len(ex["curve"]) == 8 and all(a <= b + 1e-12 for a, b in zip(ex["curve"], ex["curve"][1:]))
    assert m["docs_in"] == 256 and m["docs_out"] == len(kept)
    # the kept set is 100% verified: every accepted row checks out again against the template's ground truth
    problems = {p["problem_id"]: p for p in syn.make_problems("arithmetic", 32, seed=0)}
    for r in kept:
        assert r["verdict"] == "correct" and r["score"] == 1.0
        assert syn.verify(problems[r["problem_id"]], r["completion"])[0] == "correct"
        assert r["text"] == r["prompt"] + r["completion"] and r["domain"] == "synthetic"
        assert r["source"] == "synthetic:arithmetic" and r["n_bytes"] == len(r["text"].encode())
        assert json.loads(r["generator_settings"])["k"] == 8
    assert all(r["reason"].startswith(("wrong", "no_answer")) for r in rejected)
    # deterministic: the same run again (forced) gives the same candidates
    assert run_main("synthesize", synthesize.main, argv + ["--force"]) == 0
    again = sorted((r["id"], r["completion"]) for r in _rows(lake, "synthetic"))
    assert again == sorted((r["id"], r["completion"]) for r in kept)

    # decontamination runs on synthetic rows like on any other table: a benchmark holding one kept question
    from jobs import decontaminate

    leaked = kept[0]["prompt"].split("Question: ", 1)[1].split("\n")[0]
    bench = os.path.join(lake_dir, "..", "bench.jsonl")
    with open(bench, "w") as f:
        f.write(json.dumps({"id": "b1", "question": leaked}) + "\n")
    assert run_main("decontaminate", decontaminate.main, [
        "--lake", lake_dir, "--input-table", "synthetic", "--output-table", "synthetic_clean",
        "--contaminated-table", "synthetic_contaminated", "--benchmarks", bench, "--set",
        "decontaminate.min_words=5", "--set", "decontaminate.ngram=8"]) == 0
    bad = _rows(lake, "synthetic_contaminated")
    same_q = [r for r in kept if leaked in r["prompt"]]
    assert {r["id"] for r in bad} == {r["id"] for r in same_q} and bad
    assert len(_rows(lake, "synthetic_clean")) == len(kept) - len(bad)

    # the report's synthetic-data section: acceptance per template and the pass@k curve
    from jobs import report

    row = dict(m, extra=json.loads(m["extra"]), reasons=dict(m["reasons"] or []))  # as the report reads it
    html = report.render({"latest": {"synthesize": row}, "metrics": [],
                          "funnel": [], "mixture": None, "breakdown": None, "signals": None, "languages": None,
                          "duplicates": None, "token_lengths": None, "tokenizers": None, "run": None, "links": [],
                          "manifest": None, "packed": "", "lake": lake_dir, "generated_at": "now", "run_path": ""})
    sec = html.split('<section id="synthetic"')[1].split("</section>")[0]
    assert 'data-plot="synthetic"' in sec and "pass@8" in sec and "arithmetic" in sec

    # the accepted rows join a mixture as their own domain
    from jobs.schema import document_row, documents_df

    web = [document_row(f"web-{i}", f"Plain web text number {i}. " * 20, domain="web") for i in range(50)]
    lake.write(documents_df(spark, web), "decontaminated")
    assert run_main("mix", mix.main, ["--lake", lake_dir, "--add-table", "synthetic"]) == 0
    doms = {r["domain"] for r in lake.read("mixed").select("domain").collect()}
    assert doms == {"web", "synthetic"}
    mixm = sorted((r for r in lake.read_arrow("metrics").to_pylist() if r["stage"] == "mix"),
                  key=lambda r: r["started_at"])[-1]
    assert mixm["docs_in"] == 50 + len(kept)
    capsys.readouterr()


def test_openai_compatible_endpoint_serving_the_own_model(spark, lake, lake_dir, arithmetic_model):
    """The same generation through model/serve.py on loopback: identical candidates to the checkpoint's."""
    from jobs import synthesize
    from model.serve import make_server

    srv = make_server(arithmetic_model, "127.0.0.1", 0)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
        common = ["--lake", lake_dir, "--tasks", "arithmetic", "--n", "6", "--k", "4", "--max-tokens", "6"]
        assert run_main("synthesize", synthesize.main, common + ["--generator", url,
                                                                 "--output-table", "syn_url",
                                                                 "--rejected-table", "syn_url_rej"]) == 0
        assert run_main("synthesize", synthesize.main, common + ["--generator", arithmetic_model,
                                                                 "--output-table", "syn_ck",
                                                                 "--rejected-table", "syn_ck_rej"]) == 0
    finally:
        srv.shutdown()

    def cands(t1, t2):
        return sorted((r["problem_id"], r["candidate_index"], r["completion"], r["verdict"])
                      for t in (t1, t2) for r in _rows(lake, t))

    got = cands("syn_url", "syn_url_rej")
    assert len(got) == 24 and got == cands("syn_ck", "syn_ck_rej")
    assert all(r["generator"] == url for r in _rows(lake, "syn_url") + _rows(lake, "syn_url_rej"))


def test_code_template_runs_the_sandbox_in_spark_tasks(spark, lake, lake_dir, arithmetic_model, tmp_path):
    """The functions template through jobs/synthesize.py: every candidate of a model that never saw code gets a
    sandbox verdict in synthetic_rejected (none lost, none accepted); a missing checkpoint is a one-line error."""
    from jobs import synthesize

    assert run_main("synthesize", synthesize.main, ["--lake", lake_dir, "--generator", arithmetic_model, "--tasks",
                                                    "functions", "--n", "3", "--k", "2", "--max-tokens", "20"]) == 0
    rows = _rows(lake, "synthetic") + _rows(lake, "synthetic_rejected")
    assert len(rows) == 6 and all(r["verifier"] == "python" for r in rows)
    assert {r["verdict"] for r in rows} <= {"passed", "failed", "timeout", "memory", "refused:process",
                                            "refused:network", "refused:write", "refused:native"}
    assert not _rows(lake, "synthetic")
    assert run_main("synthesize", synthesize.main, ["--lake", lake_dir, "--generator", str(tmp_path / "no.ckpt")]) == 2


def test_self_instruct_grows_a_deterministic_task_set(spark, lake, lake_dir, arithmetic_model):
    from jobs import self_instruct
    from jobs.schema import document_row, documents_df

    common = ["--lake", lake_dir, "--generator", arithmetic_model, "--rounds", "2", "--per-round", "12",
              "--set", "self_instruct.max_tokens=110"]
    assert run_main("self_instruct", self_instruct.main, common + ["--critic-threshold", "0"]) == 0
    tasks, rej = _rows(lake, "tasks"), _rows(lake, "tasks_rejected")
    seeds = [t for t in tasks if t["origin"] == "seed"]
    gen = [t for t in tasks if t["origin"] == "generated"]
    assert len(seeds) == 8 and len(gen) + len(rej) == 24
    assert gen, "the generator wrote no usable task"
    assert {r["reason"] for r in rej} <= {"unparseable", "near_duplicate:pool", "critic:low_score"}
    for t in gen:
        assert t["question"] and t["answer"] and t["round"] in (1, 2) and 0 <= t["score"] <= 1
        assert t["prompt"].endswith("Question:") and t["generator"] == os.path.abspath(arithmetic_model)
    m = sorted((r for r in lake.read_arrow("metrics").to_pylist() if r["stage"] == "self_instruct"),
               key=lambda r: r["started_at"])[-1]
    assert m["docs_in"] == 24 and m["docs_out"] == len(gen)
    # the same seeds give the same task set
    assert run_main("self_instruct", self_instruct.main, common + ["--critic-threshold", "0", "--output-table",
                                                                   "tasks2", "--rejected-table", "tasks2_rej"]) == 0
    key = lambda r: (r["task_id"], r["question"], r["answer"], r["score"])  # noqa: E731
    assert sorted(map(key, _rows(lake, "tasks2"))) == sorted(map(key, tasks))
    # a corpus holding those questions: the same generations are now near duplicates of the corpus
    lake.write(documents_df(spark, [document_row(f"c{i}", t["question"]) for i, t in enumerate(gen)]), "corpus")
    assert run_main("self_instruct", self_instruct.main, common + [
        "--critic-threshold", "0", "--corpus-table", "corpus", "--output-table", "tasks3",
        "--rejected-table", "tasks3_rej"]) == 0
    first_round = {t["task_id"] for t in gen if t["round"] == 1}
    dup = {r["task_id"] for r in _rows(lake, "tasks3_rej") if r["reason"] == "near_duplicate:corpus"}
    assert first_round and first_round <= dup
    # a critic nobody passes: every parsed, new task is rejected by it
    assert run_main("self_instruct", self_instruct.main, common + [
        "--critic-threshold", "1.01", "--output-table", "tasks4", "--rejected-table", "tasks4_rej"]) == 0
    assert [t["origin"] for t in _rows(lake, "tasks4")] == ["seed"] * 8
    assert any(r["reason"] == "critic:low_score" for r in _rows(lake, "tasks4_rej"))
