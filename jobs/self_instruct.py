"""Self-instruct: grow a task set from seed tasks with a generator, a near-duplicate filter and a critic.

    python jobs/self_instruct.py --lake L --generator CKPT|URL [--seed-tasks arithmetic|FILE.jsonl] [--rounds 3]
        [--per-round 32] [--corpus-table decontaminated] [--critic-threshold 0.5]

Every round (Wang et al. 2023, "Self-Instruct", reduced to question/answer tasks):
1. `per_round` few-shot prompts, each `shots` tasks of the current pool (chosen with a seeded generator) followed
   by "Question:"; the generator (a checkpoint of the project's own model, or an OpenAI-compatible URL) writes a
   new question and its answer; a completion without that shape is rejected as `unparseable`;
2. near-duplicate removal with the dedup kernels (udfs/minhash.py signatures, word `dedup_ngram`-grams): a new
   task whose estimated Jaccard with a pool task, a task accepted earlier in the round, or a document of
   `--corpus-table` reaches `dedup_threshold` is rejected (`near_duplicate:pool` / `near_duplicate:corpus`); the
   corpus is scanned in Spark against the round's few candidates;
3. the critic: the generator answers the new question `critic_k` times; the share agreeing with the proposed
   answer (self-consistency) is the task's score, kept when >= `critic_threshold` (`critic:low_score`).
Accepted tasks join the pool. Writes `tasks` (seed and accepted tasks: task_id, question, answer, prompt,
origin, round, score, generator, seed) and `tasks_rejected` (with reason). Given the seeds and the generator the
result is the same on every run. The pool (a few thousand short tasks at most) lives on the driver between
rounds; generation, critique and the corpus scan are Spark tasks.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jobs.cli import UserError, run_main  # noqa: E402
from jobs.runner import Flag, Stage, stage_main  # noqa: E402
from udfs import synthetic as syn  # noqa: E402

TASK_DDL = ("task_id string, question string, answer string, prompt string, origin string, round int, "
            "score double, generator string, seed bigint, reason string")


def resolve(cfg: dict, args) -> dict:
    cfg = {"seed_tasks": "arithmetic", "n_seed": 8, "rounds": 3, "per_round": 32, "shots": 3, "generator": None,
           "temperature": 1.0, "max_tokens": 48, "seed": 0, "dedup_threshold": 0.7, "dedup_ngram": 3,
           "num_perm": 64, "critic_k": 4, "critic_threshold": 0.5, "corpus_table": None, "model_name": None,
           **cfg}
    if not cfg["generator"]:
        raise UserError("self_instruct needs --generator (a checkpoint, or an http(s):// completions URL)")
    for key in ("n_seed", "rounds", "per_round", "shots", "critic_k", "max_tokens", "num_perm", "dedup_ngram"):
        cfg[key] = int(cfg[key])
        if cfg[key] < 1:
            raise UserError(f"self_instruct.{key} must be >= 1, got {cfg[key]}")
    return cfg


def seed_pool(cfg: dict) -> list[dict]:
    src = str(cfg["seed_tasks"])
    if src in ("arithmetic", "units"):
        probs = syn.make_problems(src, cfg["n_seed"], int(cfg["seed"]))
        return [{"task_id": f"seed-{p['problem_id']}", "question": syn.question_of(p["prompt"]),
                 "answer": syn._num(p["answer"]), "origin": "seed", "round": 0, "score": None} for p in probs]
    if not os.path.isfile(src):
        raise UserError(f"--seed-tasks: {src!r} is neither arithmetic, units nor a JSONL file")
    out = []
    with open(src, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    rec = json.loads(line)
                    q, a = syn.question_of(rec["prompt"]), str(rec["answer"])
                except (ValueError, KeyError, TypeError):
                    raise UserError(f"{src}:{i}: expected a JSON object with 'prompt' and 'answer'") from None
                out.append({"task_id": f"seed-{rec.get('id', i)}", "question": q, "answer": a, "origin": "seed",
                            "round": 0, "score": None})
    if not out:
        raise UserError(f"--seed-tasks: {src} holds no tasks")
    return out


def _gen_fn(spec: str, settings: dict):
    """mapInArrow over (key string, prompt string, seed bigint, n int) -> (key, i, text)."""
    def run(batches):
        import pyarrow as pa
        import torch

        from jobs.synthesize import _generator_fn

        torch.set_num_threads(1)
        complete = _generator_fn(spec, settings)
        for b in batches:
            keys, idx, texts = [], [], []
            for r in b.to_pylist():
                for i, t in enumerate(complete(r["prompt"], int(r["n"]), int(r["seed"]))):
                    keys.append(r["key"])
                    idx.append(i)
                    texts.append(t)
            if keys:
                yield pa.RecordBatch.from_arrays([pa.array(keys), pa.array(idx, pa.int32()), pa.array(texts)],
                                                 names=["key", "i", "text"])
    return run


def _generate(spark, spec: str, settings: dict, requests: list[tuple[str, str, int, int]]) -> dict:
    """{key: [texts]} for (key, prompt, seed, n) requests, generated in Spark tasks."""
    if not requests:
        return {}
    parts = max(1, min(len(requests), spark.sparkContext.defaultParallelism * 2))
    df = spark.createDataFrame(requests, "key string, prompt string, seed bigint, n int").repartition(parts, "key")
    out: dict = {}
    for r in df.mapInArrow(_gen_fn(spec, settings), "key string, i int, text string").collect():
        out.setdefault(r["key"], []).append((r["i"], r["text"]))
    return {k: [t for _, t in sorted(v)] for k, v in out.items()}


def _corpus_hits_fn(cand_sigs, threshold: float, ngram: int, num_perm: int, seed: int):
    def run(batches):
        import numpy as np
        import pyarrow as pa

        from udfs import minhash

        cs = np.asarray(cand_sigs)
        for b in batches:
            texts = b.column("text").to_pylist()
            sig = minhash.signatures([t or "" for t in texts], ngram, num_perm, seed)
            hits = []
            for j in range(len(cs)):
                est = minhash.estimated_jaccard(sig, cs[j])
                if (est >= threshold).any():
                    hits.append(j)
            if hits:
                yield pa.RecordBatch.from_arrays([pa.array(hits, pa.int32())], names=["j"])
    return run


def prepare(ctx) -> None:
    from jobs.synthesize import generator_identity

    ctx.state["pool"] = seed_pool(ctx.params)
    ctx.extra_key = generator_identity(str(ctx.params["generator"]))


def plan(ctx) -> None:
    import numpy as np

    from jobs.stage import log
    from jobs.synthesize import sample_seed
    from udfs import minhash

    cfg, spark, run, lake = ctx.params, ctx.spark, ctx.run, ctx.lake
    spec = str(cfg["generator"])
    settings = {"max_tokens": cfg["max_tokens"], "temperature": cfg["temperature"], "top_k": 0,
                "model_name": cfg["model_name"]}
    seed = int(cfg["seed"])
    pool = list(ctx.state["pool"])
    corpus = None
    if cfg["corpus_table"]:
        if lake.version(cfg["corpus_table"]) is None:
            raise UserError(f"--corpus-table: table '{cfg['corpus_table']}' not found under lake {lake.root}")
        corpus = lake.read(cfg["corpus_table"]).select("text")
    ng, npm, thr = cfg["dedup_ngram"], cfg["num_perm"], float(cfg["dedup_threshold"])

    def sigs(texts):
        return minhash.signatures(texts, ng, npm, seed=1)

    pool_sig = sigs([t["question"] for t in pool])
    rejected = []
    for rnd in range(1, cfg["rounds"] + 1):
        reqs = [(f"r{rnd}-{i:05d}", syn.few_shot_prompt(pool, seed, rnd, i, cfg["shots"]),
                 sample_seed(seed, f"self-instruct:{rnd}:{i}"), 1) for i in range(cfg["per_round"])]
        gen = _generate(spark, spec, settings, reqs)
        cands = []
        for key, prompt, s, _ in reqs:
            text = (gen.get(key) or [""])[0]
            parsed = syn.parse_generated_task(text)
            base = {"task_id": f"gen-{key}", "origin": "generated", "round": rnd, "score": None, "seed": s,
                    "prompt": prompt}
            if parsed is None:
                rejected.append(dict(base, question=text[:400], answer="", reason="unparseable"))
                continue
            cands.append(dict(base, question=parsed[0], answer=parsed[1]))
        # near duplicates of the pool and of each other (in order), then of the corpus
        kept = []
        if cands:
            csig = sigs([c["question"] for c in cands])
            for j, c in enumerate(cands):
                ref = np.vstack([pool_sig] + [csig[[k for k, _ in kept]]] if kept else [pool_sig])
                if len(ref) and float(minhash.estimated_jaccard(ref, csig[j]).max()) >= thr:
                    rejected.append(dict(c, reason="near_duplicate:pool"))
                else:
                    kept.append((j, c))
            if corpus is not None and kept:
                ks = [csig[j].tolist() for j, _ in kept]
                hits = {r["j"] for r in corpus.mapInArrow(_corpus_hits_fn(ks, thr, ng, npm, 1), "j int")
                        .distinct().collect()}
                rejected += [dict(c, reason="near_duplicate:corpus") for n, (_, c) in enumerate(kept) if n in hits]
                kept = [(j, c) for n, (j, c) in enumerate(kept) if n not in hits]
        # the critic: the generator's own answers to each new question
        answers = _generate(spark, spec, settings | {"max_tokens": 12},
                            [(c["task_id"], f"Question: {c['question']}\nAnswer:", c["seed"] + 1, cfg["critic_k"])
                             for _, c in kept])
        n_acc = 0
        for j, c in kept:
            c["score"] = syn.consistency_score(c["answer"], answers.get(c["task_id"], []))
            if c["score"] >= float(cfg["critic_threshold"]):
                pool.append(c)
                pool_sig = np.vstack([pool_sig, csig[j:j + 1]])
                n_acc += 1
            else:
                rejected.append(dict(c, reason="critic:low_score"))
        log(f"self_instruct: round {rnd}: {len(reqs)} generated, {len(cands)} parsed, {len(kept)} not near "
            f"duplicates, {n_acc} passed the critic; pool {len(pool)}")

    label = spec if spec.startswith("http") else os.path.abspath(spec)

    def rows(items, with_reason):
        return [(t["task_id"], t["question"], t["answer"], t.get("prompt"), t["origin"], int(t["round"]),
                 t.get("score"), label if t["origin"] == "generated" else None, t.get("seed"),
                 t.get("reason") if with_reason else None) for t in items]

    run.write(spark.createDataFrame(rows(pool, False), TASK_DDL).drop("reason"), ctx.tables["output_table"])
    run.write(spark.createDataFrame(rows(rejected, True), TASK_DDL), ctx.tables["rejected_table"])
    generated = cfg["rounds"] * cfg["per_round"]
    n_new = len(pool) - len(ctx.state["pool"])
    reasons = {}
    for t in rejected:
        reasons[t["reason"]] = reasons.get(t["reason"], 0) + 1
    run.finish(docs_in=generated, docs_out=n_new, docs_rejected=len(rejected), reasons=reasons,
               extra={"seed_tasks": len(ctx.state["pool"]), "tasks_out": len(pool), "rounds": cfg["rounds"],
                      "generator": label})


STAGE = Stage(
    name="self_instruct", doc=__doc__.split("\n\n")[0], input_table=None,
    outputs={"output_table": "tasks", "rejected_table": "tasks_rejected"},
    flags=[Flag("--generator", "generator", "checkpoint or http(s):// completions URL"),
           Flag("--seed-tasks", "seed_tasks", "arithmetic | units | JSONL of {\"prompt\", \"answer\"}"),
           Flag("--rounds", "rounds", "rounds of generation (default 3)", type=int),
           Flag("--per-round", "per_round", "new tasks asked for per round (default 32)", type=int),
           Flag("--corpus-table", "corpus_table", "also drop tasks near-duplicating a document of this table"),
           Flag("--critic-threshold", "critic_threshold", "self-consistency score to keep a task (default 0.5)",
                type=float),
           Flag("--seed", "seed", "seed of the seed tasks, few-shot choice and sampling (default 0)", type=int)],
    resolve=resolve, prepare=prepare, plan=plan)
main = stage_main(STAGE)


if __name__ == "__main__":
    from udfs.common import exit_process

    exit_process(run_main("self_instruct", main))
