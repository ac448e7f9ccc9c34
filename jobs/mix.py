"""Mixture: sample a domain mixture with target token shares from the clean corpus.

    python jobs/mix.py --lake ./lake --strategy temperature --alpha 0.5 [--token-budget 10M] [--seed 1234]

Reads `decontaminated` (--input-table), writes `mixed`. Tokens are real tokens of the packing tokenizer
(`mix.tokens: exact`, the default): the column `n_tokens` (the document's tokens plus its EOS, what it takes in the
packed stream) with `n_tokens_tokenizer` naming the tokenizer and its ranks' hash; when the input lacks them, or
they were counted with another tokenizer, this stage counts them (one `mapInArrow` pass, tiktoken) and writes
them into `mixed`. `mix.tokens: estimate` uses `n_tokens_est` (bytes / 4) instead. Domain weights (token shares)
come from a strategy (see udfs/mixture.py); each domain then contributes weight * budget tokens: `full_epochs` complete copies of the
domain plus a prefix of one more pass, where the documents of the domain are ranked by xxhash64(id, seed, epoch)
and taken while each still fits under the remainder, a document that does not fit being skipped (so the domain
ends as close to its target as whole documents allow, and one huge document at the boundary neither overshoots
nor stops it short). Copies beyond the first carry `epoch_copy` 1, 2, ...
The choice depends only on ids, seed and per-domain counts, never on partitioning or run order.

Metrics: docs_out = distinct input documents in the mixture, docs_rejected = input documents not sampled
(so docs_in == docs_out + docs_rejected); rows and tokens with repeats are in `extra` and the printed table.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jobs import storage  # noqa: E402
from jobs.cli import UserError, run_main  # noqa: E402
from jobs.runner import Flag, Stage, stage_main  # noqa: E402
from jobs.stage import log  # noqa: E402
from udfs import mixture as mx  # noqa: E402

NULL_DOMAIN = "unknown"
TOKEN_MODES = ("exact", "estimate")


def _count_fn(resolved: dict, tid: str):
    """mapInArrow: every batch with `n_tokens` (tokens + EOS of the packing tokenizer) and `n_tokens_tokenizer`."""
    def count(batches):
        import pyarrow as pa

        from udfs.tokenize import count_with_eos, load_encoding

        enc = load_encoding(resolved)
        for b in batches:
            n = count_with_eos(enc, b.column("text").to_pylist())
            yield pa.RecordBatch.from_arrays(
                list(b.columns) + [pa.array(n, pa.int64()), pa.array([tid] * b.num_rows, pa.string())],
                names=list(b.schema.names) + ["n_tokens", "n_tokens_tokenizer"])
    return count


MAX_SKIPS = 16  # documents skipped per domain at most; the walk stops at the next one that does not fit


def partial_pass_ends(spark, x, remainders: dict) -> dict:
    """{domain: {"skipped": [ranks of skipped documents], "end": rank the pass stops before, or None}} for the
    partial pass. x has per domain `_r` (rank in hash order), `_cum` (running token sum), `_tok`, `_rem`.

    The walk takes documents while they fit entirely under the remainder and skips one that does not, so a huge
    document neither overshoots nor stops the domain short. Round k finds, per domain still walking, the first
    document after the previous skipped one that does not fit: cum - skipped tokens > rem. The walk ends when
    nothing fails (the rest fits), when the gap left is under 0.5% of the remainder, or after MAX_SKIPS skips; the
    document it ends at is taken when that brings the domain closer to its target (most of it fits)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    if not remainders:
        return {}
    narrow = (x.where(F.col("_rem") > 0).select("_dom", "_r", "_cum", "_tok", "_rem")
              .persist(StorageLevel.MEMORY_AND_DISK))
    state = {d: {"skipped": [], "skip_tok": 0, "last": 0, "end": None} for d in remainders}
    active = set(remainders)
    try:
        while active:
            cur = spark.createDataFrame([(d, state[d]["last"], state[d]["skip_tok"]) for d in sorted(active)],
                                        "_dom string, _last bigint, _skip bigint")
            fail = (F.col("_r") > F.col("_last")) & (F.col("_cum") - F.col("_skip") > F.col("_rem"))
            found = {r["_dom"]: r["b"] for r in narrow.join(F.broadcast(cur), "_dom").where(fail)
                     .groupBy("_dom").agg(F.min(F.struct("_r", "_cum", "_tok")).alias("b")).collect()}
            for d in sorted(active):
                st, b = state[d], found.get(d)
                if b is None:          # everything after the last skipped document fits: the walk takes it all
                    active.discard(d)
                    continue
                gap = remainders[d] - (b["_cum"] - b["_tok"] - st["skip_tok"])
                if len(st["skipped"]) >= MAX_SKIPS or gap <= max(1, remainders[d] // 200):
                    st["end"] = int(b["_r"]) + (1 if 2 * gap > b["_tok"] else 0)
                    active.discard(d)
                    continue
                st["skipped"].append(int(b["_r"]))
                st["skip_tok"] += int(b["_tok"])
                st["last"] = int(b["_r"])
    finally:
        narrow.unpersist()
    return {d: {"skipped": st["skipped"], "end": st["end"]} for d, st in state.items()}


def pack_tokenizer(args) -> str:
    """The tokenizer `pack` would use with this config: pack.tokenizer (default gpt2)."""
    from jobs.config import load_config

    return str((load_config(args.conf, args.overrides).get("pack") or {}).get("tokenizer") or "gpt2")


def resolve(cfg: dict, args) -> dict:
    cfg = {"strategy": "proportional", "weights": None, "alpha": 0.5, "token_budget": None, "max_epochs": 4,
           "force_epochs": False, "seed": 1234, "tokens": "exact", "tokenizer": None, "extra_tables": [], **cfg}
    if isinstance(cfg["extra_tables"], str):
        cfg["extra_tables"] = [t.strip() for t in cfg["extra_tables"].split(",") if t.strip()]
    if cfg["tokens"] not in TOKEN_MODES:
        raise UserError(f"mix.tokens must be exact or estimate, got {cfg['tokens']!r}")
    if cfg["strategy"] not in mx.STRATEGIES:
        raise UserError(f"unknown strategy {cfg['strategy']!r} (one of {', '.join(mx.STRATEGIES)})")
    try:
        cfg["token_budget"] = mx.parse_budget(cfg["token_budget"])
    except mx.WeightError as e:
        raise UserError(str(e)) from None
    cfg["seed"], cfg["max_epochs"] = int(cfg["seed"]), int(cfg["max_epochs"])
    if cfg["max_epochs"] < 1:
        raise UserError(f"--max-epochs must be >= 1, got {cfg['max_epochs']}")
    return cfg


def prepare(ctx) -> None:
    """Read the weights file (manual, doremi) before Spark starts; the run is identified by its content."""
    cfg = ctx.params
    file_weights = None
    if cfg["strategy"] in ("manual", "doremi"):
        if not cfg["weights"]:
            raise UserError(f"strategy {cfg['strategy']} needs --weights FILE")
        try:
            file_weights = mx.load_weights_file(cfg["weights"],
                                                "domain_weights" if cfg["strategy"] == "doremi" else None)
        except mx.WeightError as e:
            raise UserError(str(e)) from None
    ctx.state["file_weights"] = file_weights
    run_cfg = {k: v for k, v in cfg.items() if k != "weights"}
    run_cfg["file_weights"] = file_weights
    ctx.state["tok"] = None
    if cfg["tokens"] == "exact":
        from udfs.tokenize import TokenizerError, count_id, load_encoding, resolve_spec

        spec = str(cfg["tokenizer"] or pack_tokenizer(ctx.args))
        try:
            resolved = resolve_spec(spec)
            tid = count_id(load_encoding(resolved))
        except TokenizerError as e:
            raise UserError(f"mix: {e}") from None
        ctx.state["tok"] = (resolved, tid)
        run_cfg["tokenizer"] = tid  # the ranks' hash, not the path, identifies the counts
    if cfg["strategy"] not in ("manual", "doremi"):
        run_cfg["alpha"] = cfg["alpha"] if cfg["strategy"] == "temperature" else None
    ctx.run_config = run_cfg


def early(ctx):
    """Pin the versions of the extra tables (e.g. `synthetic`): they are part of the run's identity."""
    from jobs.tables import TableError, check_table_name

    versions = {}
    for t in ctx.params["extra_tables"]:
        check_table_name(t)
        v = ctx.lake.version(t)
        if v is None:
            raise TableError(f"--add-table: table '{t}' not found under lake {ctx.lake.root}")
        versions[t] = v
    ctx.state["extra_versions"] = versions
    if versions:
        ctx.run_config = dict(ctx.run_config, extra_tables=versions)
    return None


def plan(ctx) -> None:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    cfg, lake, run, spark = ctx.params, ctx.lake, ctx.run, ctx.spark
    file_weights = ctx.state["file_weights"]
    docs = ctx.input()
    if ctx.state["extra_versions"]:
        from jobs.schema import DOCUMENT_COLUMNS

        for t, v in ctx.state["extra_versions"].items():
            other = lake.read(t, version=v)
            missing = [c for c in ("id", "text", "domain") if c not in other.columns]
            if missing:
                raise UserError(f"--add-table: table '{t}' lacks columns {missing} (document schema expected)")
            # the document columns only: a table's own extras (prompt, verdict, ...) stay in that table
            docs = docs.unionByName(other.select(*[c for c in DOCUMENT_COLUMNS if c in other.columns]),
                                    allowMissingColumns=True)
        log(f"mix: input {ctx.args.input_table} + " + ", ".join(f"{t} v{v}" for t, v in
                                                                ctx.state["extra_versions"].items()))
    cached = None
    if ctx.state["tok"] is not None:
        from pyspark import StorageLevel
        from pyspark.sql.types import LongType, StringType, StructField, StructType

        resolved, tid = ctx.state["tok"]
        tok_cols = ("n_tokens", "n_tokens_tokenizer")
        reuse = set(tok_cols) <= set(docs.columns) and docs.where(
            F.col("n_tokens").isNull() | F.col("n_tokens_tokenizer").isNull()
            | (F.col("n_tokens_tokenizer") != tid)).limit(1).count() == 0
        if reuse:
            log(f"mix: using the input's n_tokens ({tid})")
        else:
            base = docs.drop(*tok_cols)
            schema = StructType(list(base.schema.fields) + [StructField("n_tokens", LongType()),
                                                            StructField("n_tokens_tokenizer", StringType())])
            log(f"mix: counting tokens with {resolved['spec']} ({tid})")
            docs = base.mapInArrow(_count_fn(resolved, tid), schema)
        # counted once: the domain totals and the sampling pass both read it
        docs = cached = docs.persist(StorageLevel.MEMORY_AND_DISK)
        tok_col = "n_tokens"
    else:
        tid, tok_col = None, "n_tokens_est"
    docs = docs.withColumn("_dom", F.coalesce(F.col("domain"), F.lit(NULL_DOMAIN)))
    docs = docs.withColumn("_tok", F.coalesce(F.col(tok_col), F.lit(0)).cast("bigint"))
    # one aggregate per (domain, source): the domain totals drive the plan, the finer rows let the report break
    # the stage's real-token input down by domain and source (the input table holds no exact counts)
    src_col = F.col("source") if "source" in docs.columns else F.lit(None).cast("string")
    by = [r.asDict() for r in docs.groupBy("_dom", "domain", src_col.alias("_src"))
          .agg(F.count(F.lit(1)).alias("d"), F.sum("_tok").alias("t")).collect()]
    doc_counts, tok_counts = {}, {}
    for r in by:
        doc_counts[r["_dom"]] = doc_counts.get(r["_dom"], 0) + int(r["d"])
        tok_counts[r["_dom"]] = tok_counts.get(r["_dom"], 0) + int(r["t"] or 0)

    try:
        weights, warnings = mx.compute_weights(cfg["strategy"], doc_counts, tok_counts, cfg["alpha"], file_weights)
        budget = mx.resolve_budget(cfg["token_budget"], weights, tok_counts, cfg["max_epochs"])
        plans = mx.plan(weights, doc_counts, tok_counts, budget, cfg["max_epochs"], bool(cfg["force_epochs"]))
    except mx.WeightError as e:
        raise UserError(str(e)) from None
    for w in warnings:
        log(f"mix: warning: {w}")
    if cfg["token_budget"] == mx.FIT:
        log(f"mix: token budget fit: {budget:,} of {sum(tok_counts.values()):,} tokens available (the most with no "
            f"domain above --max-epochs {cfg['max_epochs']})")

    plan_df = spark.createDataFrame([(p.domain, p.full_epochs, p.remainder) for p in plans],
                                    "_dom string, _full int, _rem bigint")
    x = docs.join(F.broadcast(plan_df), "_dom", "left").fillna({"_full": 0, "_rem": 0})
    # The partial pass walks a domain's documents in hash order (the id breaks ties: the order is total) and takes
    # each that still fits under the remainder; one that does not is skipped and the walk goes on, so one huge
    # document at the boundary (a 40k-token book among 600-byte pages) neither overshoots nor stops the domain
    # short; where it ends, the last document is taken if most of it fits.
    # Computed without any sequential pass: the walk is a running sum plus the few skipped "boundary" documents
    # per domain, found one per round by an aggregate over a narrow, persisted (domain, rank, cum, tokens) frame.
    x = x.withColumn("_h", F.xxhash64(F.col("id"), F.lit(cfg["seed"]), F.col("_full")))
    order = Window.partitionBy("_dom").orderBy("_h", "id")
    x = x.withColumn("_r", F.row_number().over(order))
    x = x.withColumn("_cum", F.sum("_tok").over(order.rowsBetween(Window.unboundedPreceding, Window.currentRow)))
    ends = partial_pass_ends(spark, x, {p.domain: p.remainder for p in plans if p.remainder > 0})
    ends_df = spark.createDataFrame([(d, e["skipped"], e["end"]) for d, e in ends.items()],
                                    "_dom string, _skipped array<bigint>, _end bigint")
    x = x.join(F.broadcast(ends_df), "_dom", "left")
    in_partial = ((F.col("_rem") > 0) & (F.col("_r") < F.coalesce(F.col("_end"), F.lit(2 ** 62)))
                  & ~F.coalesce(F.array_contains(F.col("_skipped"), F.col("_r")), F.lit(False)))
    x = x.withColumn("_copies", F.col("_full") + F.when(in_partial, 1).otherwise(0))
    sampled = x.where(F.col("_copies") > 0)
    mixed = (sampled.withColumn("epoch_copy", F.explode(F.sequence(F.lit(0), F.col("_copies") - 1)))
             .select(*[c for c in docs.columns if c not in ("_dom", "_tok", "epoch_copy")], "epoch_copy"))
    res = run.write(mixed, ctx.output)

    out = lake.read(ctx.output, version=res.version) if not res.skipped else lake.read(ctx.output)
    achieved = {r["_dom"]: r.asDict() for r in
                out.withColumn("_dom", F.coalesce(F.col("domain"), F.lit(NULL_DOMAIN)))
                .groupBy("_dom").agg(F.count(F.lit(1)).alias("rows"),
                                     F.sum(F.when(F.col("epoch_copy") == 0, 1).otherwise(0)).alias("unique"),
                                     F.coalesce(F.sum(tok_col), F.lit(0)).alias("tokens"),
                                     F.coalesce(F.sum("n_tokens_est"), F.lit(0)).alias("tokens_est"),
                                     F.max("epoch_copy").alias("max_copy")).collect()}
    tokens_out = sum(int(a["tokens"]) for a in achieved.values())
    rows = []
    for p in plans:
        a = achieved.get(p.domain, {})
        toks = int(a.get("tokens", 0) or 0)
        rows.append({"domain": p.domain, "target_weight": round(p.weight, 6),
                     "achieved_share": (toks / tokens_out) if tokens_out else 0.0,
                     "target_tokens": p.target_tokens, "tokens": toks, "tokens_available": p.tokens,
                     "tokens_est": int(a.get("tokens_est", 0) or 0),
                     "docs": int(a.get("rows", 0) or 0), "unique_docs": int(a.get("unique", 0) or 0),
                     "docs_available": p.docs, "epochs": (toks / p.tokens) if p.tokens else 0.0,
                     "copies": (int(a["max_copy"]) + 1) if a.get("max_copy") is not None else 0})
    if cached is not None:
        cached.unpersist()
    counts_note = f"real tokens, {tid}" if tid else "ESTIMATED tokens (bytes/4)"
    print(f"mixture ({cfg['strategy']}, budget {budget} tokens, {counts_note}, seed {cfg['seed']}):")
    print(mx.format_table(rows))

    docs_in = sum(doc_counts.values())
    docs_out = sum(r["unique_docs"] for r in rows)
    extra = {"strategy": cfg["strategy"], "alpha": cfg["alpha"] if cfg["strategy"] == "temperature" else None,
             "weights_file": cfg["weights"], "seed": cfg["seed"], "token_budget": budget,
             "max_epochs": cfg["max_epochs"], "force_epochs": bool(cfg["force_epochs"]),
             "weights": {p.domain: p.weight for p in plans}, "rows_out": sum(r["docs"] for r in rows),
             "token_counts": "exact" if tid else "estimate", "tokenizer": tid,
             "tokens_in_by": [{"domain": r["domain"], "source": r["_src"], "docs": int(r["d"]),
                               "tokens": int(r["t"] or 0)} for r in sorted(by, key=lambda r: (str(r["domain"]),
                                                                                             str(r["_src"])))],
             "warnings": warnings, "domains": rows}
    report_path = storage.join(lake.root, "reports", "mixture.json")
    storage.write_bytes(report_path, json.dumps({"run_id": run.run_id, **extra}, indent=2, sort_keys=True).encode())
    run.finish(docs_in=docs_in, docs_out=docs_out, docs_rejected=docs_in - docs_out,
               tokens_in=sum(tok_counts.values()), tokens_out=tokens_out,
               reasons={"not_sampled": docs_in - docs_out} if docs_in > docs_out else {}, extra=extra)


STAGE = Stage(
    name="mix", doc=__doc__.split("\n\n")[0], input_table="decontaminated", outputs={"output_table": "mixed"},
    input_hint="run decontaminate first, or pass --input-table",
    flags=[Flag("--strategy", "strategy", "how domain weights are set (default mix.strategy in the config)",
                choices=mx.STRATEGIES),
           Flag("--weights", "weights", "manual: YAML/JSON {domain: weight}; doremi: the DoReMi JSON "
                "{\"domain_weights\": {...}}"),
           Flag("--alpha", "alpha", "temperature: q_i ~ tokens_i^alpha (alpha = 1/T)", type=float),
           Flag("--token-budget", "token_budget", "tokens in the mixture, e.g. 5000000 or 5M (default: all tokens "
                "available); fit: all available, or less where a domain would need more than --max-epochs passes"),
           Flag("--max-epochs", "max_epochs", "most repetitions of a domain (default 4)", type=int),
           Flag("--force-epochs", "force_epochs", "allow more than --max-epochs", store_true=True),
           Flag("--seed", "seed", "sampling seed (default mix.seed)", type=int),
           Flag("--tokens", "tokens", "exact: real tokens of the packing tokenizer (default); estimate: bytes/4",
                choices=TOKEN_MODES),
           Flag("--tokenizer", "tokenizer", "tokenizer of the exact counts (default mix.tokenizer, else "
                "pack.tokenizer)"),
           Flag("--add-table", "extra_tables", "comma-separated tables mixed in with the input, each with the "
                "document schema (e.g. synthetic from jobs/synthesize.py, as its own domain)")],
    resolve=resolve, prepare=prepare, early=early, plan=plan)
main = stage_main(STAGE)


if __name__ == "__main__":
    from udfs.common import exit_process

    exit_process(run_main("mix", main))
