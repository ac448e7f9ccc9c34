"""Synthetic data by rejection sampling: a generator writes k answers per problem, a verifier keeps the right ones.

    python jobs/synthesize.py --lake L --generator <lake>/runs/tiny [--tasks arithmetic,units,functions | FILE.jsonl]
        [--n 64] [--k 8] [--verifier auto|numeric|exact|python] [--seed 0] [--temperature 1.0]

Problems come from task templates whose ground truth Python computes (udfs/synthetic.py: `arithmetic`, `units`,
`functions`; seeded and deterministic) or from a JSONL file of {"prompt", "answer" | "tests", "id"?}. Generators:
a checkpoint of the project's own model (model/train.py's out_dir or ckpt.pt, through model/sample.py, on CPU) or
any OpenAI-compatible completions endpoint given by URL (http://host:port/v1; `synthesize.model_name` names the
model). Verifiers: `numeric` (first number of the answer within a relative tolerance), `exact` (first line equals
the answer), `python` (candidate code run against the template's tests in udfs/sandbox.py's sandbox: time and
memory limits, no network, no processes, no writes outside its temporary folder; a refusal is a verdict);
`auto` takes each problem's own.

Spark does the work: problems are rows, one `mapInArrow` task generates and verifies a share of them (the model
loads once per Python worker). Writes `synthetic` (accepted candidates with the document schema, so mix can take
them as their own domain, plus prompt, candidate index, completion, generator and its settings, seed, verifier,
verdict, score) and `synthetic_rejected` (the others, with `reason` = the verdict and its detail). The metrics row
holds pass@1, pass@k and acceptance per template (unbiased pass@k of Chen et al. 2021), and the pass@j curve.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jobs.cli import UserError, run_main  # noqa: E402
from jobs.runner import Flag, Stage, stage_main  # noqa: E402
from udfs import synthetic as syn  # noqa: E402

PROBLEM_DDL = ("problem_id string, template string, prompt string, answer double, answer_text string, "
               "tests string, verifier string")
CANDIDATE_DDL = ("problem_id string, template string, prompt string, candidate_index int, completion string, "
                 "generator string, generator_settings string, seed bigint, verifier string, verdict string, "
                 "score double, detail string")


def resolve(cfg: dict, args) -> dict:
    cfg = {"tasks": ["arithmetic"], "n": 64, "k": 8, "generator": None, "verifier": "auto", "seed": 0,
           "temperature": 1.0, "top_k": 0, "max_tokens": 24, "tolerance": 1e-6, "timeout_s": 5.0,
           "memory_mb": 512, "domain": "synthetic", "model_name": None, **cfg}
    if isinstance(cfg["tasks"], str):
        cfg["tasks"] = [t.strip() for t in cfg["tasks"].split(",") if t.strip()]
    if not cfg["generator"]:
        raise UserError("synthesize needs --generator (a checkpoint folder or file, or an http(s):// URL of an "
                        "OpenAI-compatible completions API)")
    if cfg["verifier"] not in ("auto",) + syn.VERIFIERS:
        raise UserError(f"--verifier must be auto or one of {', '.join(syn.VERIFIERS)}, got {cfg['verifier']!r}")
    for key in ("n", "k", "max_tokens"):
        cfg[key] = int(cfg[key])
        if cfg[key] < 1:
            raise UserError(f"synthesize.{key} must be >= 1, got {cfg[key]}")
    return cfg


def load_problems(cfg: dict) -> list[dict]:
    """Problems of every task: template names, or JSONL files of {"prompt", "answer" | "tests", "id"}."""
    out = []
    for task in cfg["tasks"]:
        if task in syn.TEMPLATES:
            out += syn.make_problems(task, cfg["n"], int(cfg["seed"]))
            continue
        if not os.path.isfile(task):
            raise UserError(f"--tasks: {task!r} is neither a template ({', '.join(syn.TEMPLATES)}) nor a file")
        name = os.path.splitext(os.path.basename(task))[0]
        with open(task, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    prompt = rec["prompt"]
                except (ValueError, KeyError, TypeError):
                    raise UserError(f"{task}:{i}: expected a JSON object with a 'prompt'") from None
                ans, tests = rec.get("answer"), rec.get("tests")
                if tests is None and ans is None:
                    raise UserError(f"{task}:{i}: needs an 'answer' or 'tests' to verify against")
                numeric = isinstance(ans, (int, float)) and not isinstance(ans, bool)
                out.append({"problem_id": str(rec.get("id", f"{name}-{i:06d}")), "template": name,
                            "prompt": prompt, "answer": float(ans) if numeric else None,
                            "answer_text": None if numeric or ans is None else str(ans), "tests": tests,
                            "verifier": "python" if tests else ("numeric" if numeric else "exact")})
    ids = [p["problem_id"] for p in out]
    if len(set(ids)) != len(ids):
        raise UserError("--tasks: problem ids repeat (give each JSONL line a unique 'id')")
    return out


def sample_seed(seed: int, problem_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{problem_id}".encode()).digest()[:6], "big")


def _generator_fn(spec: str, settings: dict):
    """completions(prompt, k, seed) -> k strings, for a checkpoint path or an OpenAI-compatible URL."""
    if spec.startswith(("http://", "https://")):
        import urllib.request

        url = spec.rstrip("/") + "/completions"

        def complete(prompt: str, k: int, seed: int) -> list[str]:
            body = {"model": settings.get("model_name") or "lmrefinery", "prompt": prompt, "n": k, "seed": seed,
                    "max_tokens": settings["max_tokens"], "temperature": settings["temperature"]}
            if settings.get("top_k"):
                body["top_k"] = settings["top_k"]
            req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=120) as r:
                choices = json.loads(r.read())["choices"]
            return [c["text"] for c in sorted(choices, key=lambda c: c.get("index", 0))]
        return complete

    from model.sample import generate_text, load_model, load_tokenizer

    model, ck = load_model(spec)
    enc = load_tokenizer(ck)

    def complete(prompt: str, k: int, seed: int) -> list[str]:
        texts = generate_text(model, enc, prompt, settings["max_tokens"], settings["temperature"],
                              settings.get("top_k") or None, k, seed)
        return [t[len(prompt):] for t in texts]
    return complete


def gen_verify_fn(spec: str, settings: dict, verifier: str):
    """mapInArrow: every problem row -> k candidate rows, generated and verified."""
    def run(batches):
        import pyarrow as pa
        import torch

        torch.set_num_threads(1)
        complete = _generator_fn(spec, settings)
        label = spec if spec.startswith("http") else os.path.abspath(spec)
        kept = json.dumps({k: settings[k] for k in sorted(settings)})
        for b in batches:
            rows = []
            for p in b.to_pylist():
                seed = sample_seed(settings["seed"], p["problem_id"])
                problem = dict(p, answer=p["answer"] if p["answer"] is not None else p["answer_text"])
                v = p["verifier"] if verifier == "auto" else verifier
                for i, comp in enumerate(complete(p["prompt"], settings["k"], seed)):
                    verdict, score, detail = syn.verify(problem, comp, v, settings["tolerance"],
                                                        settings["timeout_s"], settings["memory_mb"])
                    rows.append({"problem_id": p["problem_id"], "template": p["template"], "prompt": p["prompt"],
                                 "candidate_index": i, "completion": comp, "generator": label,
                                 "generator_settings": kept, "seed": seed, "verifier": v, "verdict": verdict,
                                 "score": float(score), "detail": detail})
            if rows:
                yield pa.RecordBatch.from_pylist(rows, schema=_candidate_schema())
    return run


def _candidate_schema():
    import pyarrow as pa

    s = pa.string()
    return pa.schema([("problem_id", s), ("template", s), ("prompt", s), ("candidate_index", pa.int32()),
                      ("completion", s), ("generator", s), ("generator_settings", s), ("seed", pa.int64()),
                      ("verifier", s), ("verdict", s), ("score", pa.float64()), ("detail", s)])


def pass_curve(per_problem: list[tuple[str, int]], k: int) -> dict:
    """{template: {"problems", "pass@1", "pass@k", "curve": [pass@j for j = 1..k]}} from (template, correct)."""
    out = {}
    for t in sorted({t for t, _ in per_problem}):
        cs = [c for tt, c in per_problem if tt == t]
        curve = [sum(syn.pass_at_k(k, c, j) for c in cs) / len(cs) for j in range(1, k + 1)]
        out[t] = {"problems": len(cs), "pass@1": curve[0], f"pass@{k}": curve[-1], "curve": curve}
    return out


def generator_identity(gen: str) -> dict | None:
    """What identifies a checkpoint generator in a run's key (its size and mtime; a URL is its own identity);
    a one-line error when the checkpoint is missing."""
    if gen.startswith(("http://", "https://")):
        return None
    path = os.path.join(gen, "ckpt.pt") if os.path.isdir(gen) else gen
    if not os.path.isfile(path):
        raise UserError(f"--generator: no checkpoint at {path}")
    st = os.stat(path)
    return {"generator_size": st.st_size, "generator_mtime": int(st.st_mtime)}


def prepare(ctx) -> None:
    cfg = ctx.params
    problems = load_problems(cfg)
    if not problems:
        raise UserError("--tasks gave no problems")
    ctx.state["problems"] = problems
    ctx.extra_key = generator_identity(str(cfg["generator"]))
    ctx.run_config = dict(cfg, problems_digest=hashlib.sha256(
        json.dumps(problems, sort_keys=True).encode()).hexdigest())


def plan(ctx) -> None:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from jobs.schema import estimate_tokens_col
    from jobs.stage import log

    cfg, spark, run = ctx.params, ctx.spark, ctx.run
    problems = ctx.state["problems"]
    settings = {k: cfg[k] for k in ("k", "max_tokens", "temperature", "top_k", "tolerance", "timeout_s",
                                    "memory_mb", "seed", "model_name")}
    n_parts = max(1, min(len(problems), spark.sparkContext.defaultParallelism * 2))
    pdf = spark.createDataFrame(
        [(p["problem_id"], p["template"], p["prompt"], p.get("answer") if isinstance(p.get("answer"), float)
          else None, p.get("answer_text"), p.get("tests"), p["verifier"]) for p in problems],
        PROBLEM_DDL).repartition(n_parts, "problem_id")
    log(f"synthesize: {len(problems)} problems x k={cfg['k']} from {cfg['generator']} in {n_parts} tasks")
    cands = (pdf.mapInArrow(gen_verify_fn(str(cfg["generator"]), settings, cfg["verifier"]), CANDIDATE_DDL)
             .persist(StorageLevel.MEMORY_AND_DISK))
    accepted = F.col("verdict").isin(*syn.ACCEPTED)
    text = F.concat(F.col("prompt"), F.col("completion"))
    docs = cands.select(
        F.concat_ws("-", F.lit("syn"), F.col("problem_id"), F.lpad(F.col("candidate_index").cast("string"), 3, "0"))
        .alias("id"), text.alias("text"), F.concat(F.lit("synthetic:"), F.col("template")).alias("source"),
        F.lit(cfg["domain"]).alias("domain"), F.lit(None).cast("string").alias("url"),
        F.to_json(F.struct("problem_id", "template", "generator", "verifier")).alias("meta"),
        F.struct(F.lit(None).cast("string").alias("file"), F.lit(None).cast("bigint").alias("line"),
                 F.col("candidate_index").cast("bigint").alias("row"),
                 F.lit(None).cast("bigint").alias("byte_offset")).alias("trace"),
        F.octet_length(text).cast("bigint").alias("n_bytes"),
        estimate_tokens_col(F.octet_length(text)).alias("n_tokens_est"), F.sha2(text, 256).alias("text_sha256"),
        F.lit(f"synthesize-{run.config_hash}").alias("ingest_run"),
        "prompt", "candidate_index", "completion", "generator", "generator_settings", "seed", "verifier",
        "verdict", "score", "detail", "problem_id", "template")
    tables = ctx.tables
    run.write(docs.where(accepted).drop("detail"), tables["output_table"])
    run.write(docs.where(~accepted).withColumn("reason", F.concat_ws(": ", "verdict", "detail")),
              tables["rejected_table"])
    per_problem = [(r["template"], int(r["c"])) for r in cands.groupBy("template", "problem_id").agg(
        F.sum(F.when(accepted, 1).otherwise(0)).alias("c")).collect()]
    stats = {(r["template"], r["verdict"]): int(r["n"]) for r in
             cands.groupBy("template", "verdict").agg(F.count(F.lit(1)).alias("n")).collect()}
    tok = {bool(r["a"]): int(r["t"] or 0) for r in docs.groupBy(accepted.alias("a"))
           .agg(F.sum("n_tokens_est").alias("t")).collect()}
    cands.unpersist()
    k = cfg["k"]
    by_template = pass_curve(per_problem, k)
    for t, v in by_template.items():
        n = sum(c for (tt, _), c in stats.items() if tt == t)
        acc = sum(c for (tt, vd), c in stats.items() if tt == t and vd in syn.ACCEPTED)
        v.update(candidates=n, accepted=acc, acceptance=acc / n if n else 0.0,
                 verdicts={vd: c for (tt, vd), c in sorted(stats.items()) if tt == t})
        log(f"synthesize: {t}: {v['problems']} problems, pass@1 {v['pass@1']:.3f}, pass@{k} {v[f'pass@{k}']:.3f}, "
            f"accepted {acc}/{n} ({100 * v['acceptance']:.1f}%)")
    n_all = sum(stats.values())
    n_ok = sum(c for (_, vd), c in stats.items() if vd in syn.ACCEPTED)
    reasons = {}
    for (_, vd), c in stats.items():
        if vd not in syn.ACCEPTED:
            reasons[vd] = reasons.get(vd, 0) + c
    run.finish(docs_in=n_all, docs_out=n_ok, docs_rejected=n_all - n_ok, tokens_in=sum(tok.values()),
               tokens_out=tok.get(True, 0), reasons=reasons,
               extra={"k": k, "generator": str(cfg["generator"]), "by_template": by_template,
                      "problems": len(problems), "settings": settings})


STAGE = Stage(
    name="synthesize", doc=__doc__.split("\n\n")[0], input_table=None,
    outputs={"output_table": "synthetic", "rejected_table": "synthetic_rejected"},
    flags=[Flag("--tasks", "tasks", "comma-separated templates (arithmetic, units, functions) and/or JSONL files"),
           Flag("--generator", "generator", "checkpoint (model/train.py out_dir or ckpt.pt) or http(s):// URL of "
                "an OpenAI-compatible completions API"),
           Flag("--n", "n", "problems per template (default 64)", type=int),
           Flag("--k", "k", "candidates per problem (default 8)", type=int),
           Flag("--verifier", "verifier", "auto (each problem's own) | numeric | exact | python"),
           Flag("--seed", "seed", "problem and sampling seed (default 0)", type=int),
           Flag("--temperature", "temperature", "sampling temperature (default 1.0)", type=float),
           Flag("--max-tokens", "max_tokens", "tokens generated per candidate (default 24)", type=int)],
    resolve=resolve, prepare=prepare, plan=plan)
main = stage_main(STAGE)


if __name__ == "__main__":
    from udfs.common import exit_process

    exit_process(run_main("synthesize", main))
