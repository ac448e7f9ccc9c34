"""Decontamination: remove (or excise) text that overlaps benchmark items by word n-grams.

    python jobs/decontaminate.py --lake ./lake --benchmarks 'data/benchmarks/*.jsonl' [--ngram 13] [--policy excise]

Reads `deduped` (--input-table), writes `decontaminated` (clean documents, and excised documents with the
`excised` column listing what was cut) and `contaminated` (every affected document in its original form with
`benchmark`, `item_id`, `ngram` of its first match, all `matches`, `action` = dropped|excised and `reason`).
Conservation: docs_in == docs_out (clean + excised) + docs_rejected (dropped). A report per benchmark goes to the
metrics row's `extra`, stdout and `<lake>/reports/contamination.json`.

The benchmark n-gram set is broadcast to the workers when it has at most `broadcast_max_ngrams` n-grams; above
that, document n-gram hashes are joined with the benchmark n-grams in Spark and each document is then checked
against only the n-grams it shares with the benchmarks. Both paths give the same tables.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jobs import storage  # noqa: E402
from jobs.cli import UserError, run_main  # noqa: E402
from jobs.runner import Flag, Stage, stage_main  # noqa: E402
from jobs.schema import estimate_tokens  # noqa: E402
from jobs.session import REPO_ROOT  # noqa: E402
from jobs.stage import count_docs_tokens, log  # noqa: E402
from udfs import ngrams as ng  # noqa: E402

DEFAULTS = {"ngram": 13, "policy": "drop", "fields": list(ng.DEFAULT_FIELDS), "id_field": "id", "segment": "item",
            "min_words": 8, "excise_window": 200, "excise_min_piece": 200, "excise_max_pieces": 10,
            "broadcast_max_ngrams": 1_000_000}
MATCH_DDL = "array<struct<benchmark:string,item_id:string,ngram:string,n_ngrams:bigint>>"


def resolve_benchmark_paths(spec) -> list[str]:
    if not spec:
        raise UserError("no benchmarks given: pass --benchmarks PATH_OR_GLOB or set decontaminate.benchmarks")
    parts = spec if isinstance(spec, list) else [s for s in str(spec).split(",")]
    paths = []
    for part in (str(p).strip() for p in parts):
        if not part:
            continue
        cand = part if os.path.isabs(part) or os.path.exists(part) else os.path.join(REPO_ROOT, part)
        found = sorted(glob.glob(cand)) if glob.has_magic(cand) else ([cand] if os.path.exists(cand) else [])
        if not found:
            raise UserError(f"benchmark file(s) not found: {part}")
        paths.extend(p for p in found if os.path.isfile(p))
    if not paths:
        raise UserError(f"no benchmark files matched {spec}")
    return sorted(dict.fromkeys(os.path.abspath(p) for p in paths))


def load_benchmarks(paths, cfg) -> tuple[list[dict], dict]:
    """(items, info): items as {benchmark, item_id, segments}; info per benchmark (file, items, skipped)."""
    items, info = [], {}
    for path in paths:
        name = ng.benchmark_name(path)
        if name in info:
            raise UserError(f"two benchmark files are both named {name!r}: {info[name]['file']} and {path}")
        try:
            raw = ng.read_benchmark(path, cfg["id_field"])
        except ng.BenchmarkError as e:
            raise UserError(str(e)) from None
        n_usable = 0
        for it in raw:
            segs = ng.item_segments(it, cfg["fields"], cfg["segment"])
            if ng.count_item_ngrams(segs, cfg["ngram"], cfg["min_words"]) > 0:
                n_usable += 1
                items.append({"benchmark": name, "item_id": it["_id"], "segments": segs})
        info[name] = {"file": path, "items": len(raw), "items_checked": n_usable,
                      "items_skipped_short": len(raw) - n_usable}
    return items, info


def _files_digest(paths) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.encode())
        with open(p, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()[:16]


def _apply_fn(cfg, lengths, lookup_bc=None):
    """mapInArrow body: decide each document; an excised document is emitted twice (the excised text, bound for
    `decontaminated`, and the original, bound for `contaminated`)."""
    policy, window = cfg["policy"], int(cfg["excise_window"])
    min_piece, max_pieces = int(cfg["excise_min_piece"]), int(cfg["excise_max_pieces"])

    def fn(batches):
        import pyarrow as pa

        global_lookup = lookup_bc.value if lookup_bc is not None else None
        for batch in batches:
            names = batch.schema.names
            texts = batch.column("text").to_pylist()
            cands = batch.column("_cands").to_pylist() if "_cands" in names else None
            idx, new_text, dest, action, reason, matches = [], [], [], [], [], []
            for i, text in enumerate(texts):
                if global_lookup is not None:
                    lookup = global_lookup
                else:
                    lookup = {}
                    for c in cands[i] or ():
                        lookup.setdefault(c["gram"], []).append((c["benchmark"], c["item_id"]))
                r = ng.decontaminate_text(text or "", lookup, lengths, policy, window, min_piece, max_pieces)
                if r["action"] == "clean":
                    idx.append(i); new_text.append(text); dest.append("out"); action.append("clean")
                    reason.append(None); matches.append([])
                    continue
                if r["action"] == "excised":
                    idx.append(i); new_text.append(r["text"]); dest.append("out"); action.append("excised")
                    reason.append(r["reason"]); matches.append(r["matches"])
                idx.append(i); new_text.append(text); dest.append("contaminated"); action.append(r["action"])
                reason.append(r["reason"]); matches.append(r["matches"])
            out = batch.take(pa.array(idx, type=pa.int64()))
            cols = {n: out.column(n) for n in out.schema.names if n != "_cands"}
            cols["text"] = pa.array(new_text, type=pa.string())
            encoded = [(t or "").encode("utf-8") for t in new_text]
            if "n_bytes" in cols:
                cols["n_bytes"] = pa.array([len(b) for b in encoded], type=pa.int64())
            if "n_tokens_est" in cols:
                cols["n_tokens_est"] = pa.array([estimate_tokens(len(b)) for b in encoded], type=pa.int64())
            if "text_sha256" in cols:
                cols["text_sha256"] = pa.array([hashlib.sha256(b).hexdigest() for b in encoded], type=pa.string())
            cols["_dest"] = pa.array(dest, type=pa.string())
            cols["_action"] = pa.array(action, type=pa.string())
            cols["_reason"] = pa.array(reason, type=pa.string())
            cols["_matches"] = pa.array(matches, type=pa.list_(pa.struct([
                ("benchmark", pa.string()), ("item_id", pa.string()), ("ngram", pa.string()),
                ("n_ngrams", pa.int64())])))
            yield pa.RecordBatch.from_arrays(list(cols.values()), names=list(cols.keys()))

    return fn


def _doc_hashes_fn(lengths):
    def fn(batches):
        import pyarrow as pa

        for batch in batches:
            ids, hs = [], []
            for doc_id, text in zip(batch.column("id").to_pylist(), batch.column("text").to_pylist()):
                for h in ng.doc_gram_hashes(text or "", lengths):
                    ids.append(doc_id); hs.append(h)
            yield pa.RecordBatch.from_arrays([pa.array(ids, pa.string()), pa.array(hs, pa.int64())], ["id", "h"])

    return fn


def _bench_grams_fn(n, min_words):
    def fn(batches):
        import pyarrow as pa

        for batch in batches:
            rows = {"h": [], "gram": [], "benchmark": [], "item_id": []}
            for item in batch.to_pylist():
                for g in sorted(ng.item_ngrams(item["segments"], n, min_words)):
                    rows["h"].append(ng.gram_hash(g)); rows["gram"].append(g)
                    rows["benchmark"].append(item["benchmark"]); rows["item_id"].append(item["item_id"])
            yield pa.RecordBatch.from_arrays(
                [pa.array(rows["h"], pa.int64()), pa.array(rows["gram"], pa.string()),
                 pa.array(rows["benchmark"], pa.string()), pa.array(rows["item_id"], pa.string())],
                ["h", "gram", "benchmark", "item_id"])

    return fn


def decide(spark, docs, items, cfg):
    """Return (decided DataFrame with `_dest`, `action`, `reason`, `matches`; path used)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StructField, StructType, _parse_datatype_string

    n, min_words = int(cfg["ngram"]), int(cfg["min_words"])
    n_grams = sum(ng.count_item_ngrams(it["segments"], n, min_words) for it in items)
    lengths = sorted({min(n, len(ng.normalize_words(s))) for it in items for s in it["segments"]
                      if len(ng.normalize_words(s)) >= max(1, min_words)})
    out_schema = StructType(list(docs.schema.fields) + [
        StructField("_dest", _parse_datatype_string("string")),
        StructField("_action", _parse_datatype_string("string")),
        StructField("_reason", _parse_datatype_string("string")),
        StructField("_matches", _parse_datatype_string(MATCH_DDL))])
    if n_grams <= int(cfg["broadcast_max_ngrams"]):
        lookup: dict[str, list] = {}
        for it in items:
            for g in ng.item_ngrams(it["segments"], n, min_words):
                lookup.setdefault(g, []).append((it["benchmark"], it["item_id"]))
        bc = spark.sparkContext.broadcast(lookup)
        return docs.mapInArrow(_apply_fn(cfg, lengths, bc), out_schema), "broadcast", n_grams, bc

    items_df = spark.createDataFrame(
        [(it["benchmark"], it["item_id"], it["segments"]) for it in items],
        "benchmark string, item_id string, segments array<string>")
    bench = items_df.mapInArrow(_bench_grams_fn(n, min_words),
                                "h bigint, gram string, benchmark string, item_id string")
    doc_h = docs.select("id", "text").mapInArrow(_doc_hashes_fn(lengths), "id string, h bigint")
    cands = (doc_h.join(bench, "h")
             .groupBy("id").agg(F.collect_set(F.struct("gram", "benchmark", "item_id")).alias("_cands")))
    joined = docs.join(cands, "id", "left")
    return joined.mapInArrow(_apply_fn(cfg, lengths), out_schema), "join", n_grams, None


def resolve(conf: dict, args) -> dict:
    cfg = {**DEFAULTS, **conf}
    if int(cfg["ngram"]) < 1:
        raise UserError(f"--ngram must be >= 1, got {cfg['ngram']}")
    if cfg["policy"] not in ("drop", "excise"):
        raise UserError(f"policy must be drop or excise, got {cfg['policy']!r}")
    if cfg["segment"] not in ("item", "field"):
        raise UserError(f"decontaminate.segment must be item or field, got {cfg['segment']!r}")
    if isinstance(cfg["fields"], str):
        cfg["fields"] = [cfg["fields"]]
    return cfg


def prepare(ctx) -> None:
    """Read the benchmark files before Spark starts; their content digest is part of the run's identity."""
    cfg = ctx.params
    paths = resolve_benchmark_paths(cfg["benchmarks"])
    ctx.state["paths"] = paths
    ctx.state["items"], ctx.state["info"] = load_benchmarks(paths, cfg)
    ctx.run_config = {**cfg, "benchmarks": [ng.benchmark_name(p) for p in paths]}
    ctx.extra_key = _files_digest(paths)


def plan(ctx) -> None:
    cfg, lake, run, spark = ctx.params, ctx.lake, ctx.run, ctx.spark
    paths, items, info = ctx.state["paths"], ctx.state["items"], ctx.state["info"]
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    docs = ctx.input()
    decided, path, n_grams, bc = decide(spark, docs, items, cfg)
    decided = decided.persist(StorageLevel.MEMORY_AND_DISK)
    log(f"decontaminate: {len(items)} benchmark items from {len(paths)} file(s), {n_grams} n-grams "
        f"(n={cfg['ngram']}), {path} path, policy {cfg['policy']}")

    added = ("benchmark", "item_id", "ngram", "matches", "action", "reason")
    clean = (decided.where(F.col("_dest") == "out")
             .withColumn("excised", F.when(F.col("_action") == "excised", F.col("_matches"))
                         .otherwise(F.array().cast(MATCH_DDL)))
             .select(*[c for c in docs.columns if c != "excised"], "excised"))
    first = F.element_at("_matches", 1)
    contaminated = (decided.where(F.col("_dest") == "contaminated")
                    .select(*[c for c in docs.columns if c not in added], first["benchmark"].alias("benchmark"),
                            first["item_id"].alias("item_id"), first["ngram"].alias("ngram"),
                            F.col("_matches").alias("matches"), F.col("_action").alias("action"), F.col("_reason").alias("reason")))
    run.write(clean, ctx.tables["output_table"])
    run.write(contaminated, ctx.tables["contaminated_table"])

    docs_in, tokens_in = count_docs_tokens(docs)
    stats = decided.groupBy("_dest", "_action", "_reason").agg(
        F.count(F.lit(1)).alias("d"), F.coalesce(F.sum("n_tokens_est"), F.lit(0)).alias("t")).collect()
    docs_clean = sum(int(r["d"]) for r in stats if r["_dest"] == "out" and r["_action"] == "clean")
    docs_excised = sum(int(r["d"]) for r in stats if r["_dest"] == "out" and r["_action"] == "excised")
    docs_out = docs_clean + docs_excised
    tokens_out = sum(int(r["t"]) for r in stats if r["_dest"] == "out")
    dropped = [r for r in stats if r["_dest"] == "contaminated" and r["_action"] == "dropped"]
    docs_dropped = sum(int(r["d"]) for r in dropped)
    reasons = {r["_reason"]: int(r["d"]) for r in dropped}

    report = contamination_report(decided if docs_dropped + docs_excised else None, info)
    report_doc = {"policy": cfg["policy"], "ngram": int(cfg["ngram"]), "path": path, "benchmark_ngrams": n_grams,
                  "docs_in": docs_in, "docs_clean": docs_clean, "docs_excised": docs_excised,
                  "docs_dropped": docs_dropped, "benchmarks": report}
    print(format_report(report_doc))
    rep_path = storage.join(lake.root, "reports", "contamination.json")
    storage.write_bytes(rep_path, json.dumps({"run_id": run.run_id, **report_doc}, indent=2,
                                             sort_keys=True).encode())

    run.finish(docs_in=docs_in, docs_out=docs_out, docs_rejected=docs_dropped, tokens_in=tokens_in,
               tokens_out=tokens_out, reasons=reasons, extra=report_doc)
    if docs_dropped + docs_excised:
        run.write_audit(contaminated, ctx.tables["contaminated_table"])
    decided.unpersist()
    if bc is not None:
        bc.unpersist()
    return 0


STAGE = Stage(
    name="decontaminate", doc=__doc__.split("\n\n")[0], input_table="deduped",
    outputs={"output_table": "decontaminated", "contaminated_table": "contaminated"},
    input_hint="run dedup first, or pass --input-table",
    flags=[Flag("--benchmarks", "benchmarks", "benchmark JSONL file(s): a path, a glob or a comma-separated list "
                "(default decontaminate.benchmarks in the config)"),
           Flag("--ngram", "ngram", "n-gram length in words (default 13)", type=int),
           Flag("--policy", "policy", "drop affected documents, or excise the matches GPT-3 style (default drop)",
                choices=("drop", "excise"))],
    resolve=resolve, prepare=prepare, plan=plan)
main = stage_main(STAGE)


def contamination_report(decided, info) -> dict:
    """Per benchmark: items, items matched, documents affected (dropped / excised)."""
    from pyspark.sql import functions as F

    if decided is None:  # nothing affected: no Spark job needed
        return contamination_report_rows({}, info)
    affected = (decided.where(F.col("_dest") == "contaminated")
                .select("id", F.col("_action").alias("action"), F.explode("_matches").alias("m")))
    rows = (affected.groupBy(F.col("m.benchmark").alias("benchmark"))
            .agg(F.countDistinct("m.item_id").alias("items_matched"),
                 F.countDistinct("id").alias("documents_affected"),
                 F.countDistinct(F.when(F.col("action") == "dropped", F.col("id"))).alias("documents_dropped"),
                 F.countDistinct(F.when(F.col("action") == "excised", F.col("id"))).alias("documents_excised"))
            .collect())
    return contamination_report_rows({r["benchmark"]: r.asDict() for r in rows}, info)


def contamination_report_rows(by_name: dict, info: dict) -> dict:
    out = {}
    for name, meta in sorted(info.items()):
        r = by_name.get(name, {})
        out[name] = {"file": meta["file"], "items": meta["items"], "items_checked": meta["items_checked"],
                     "items_skipped_short": meta["items_skipped_short"],
                     "items_matched": int(r.get("items_matched", 0)),
                     "documents_affected": int(r.get("documents_affected", 0)),
                     "documents_dropped": int(r.get("documents_dropped", 0)),
                     "documents_excised": int(r.get("documents_excised", 0))}
    return out


def format_report(doc: dict) -> str:
    head = (f"{'benchmark':<24} {'items':>7} {'checked':>8} {'matched':>8} {'docs affected':>14} {'dropped':>8} "
            f"{'excised':>8}")
    lines = [f"contamination report (policy {doc['policy']}, {doc['ngram']}-grams, {doc['path']} path)", head,
             "-" * len(head)]
    for name, r in doc["benchmarks"].items():
        lines.append(f"{name:<24} {r['items']:>7} {r['items_checked']:>8} {r['items_matched']:>8} "
                     f"{r['documents_affected']:>14} {r['documents_dropped']:>8} {r['documents_excised']:>8}")
    lines.append(f"documents: {doc['docs_in']} in, {doc['docs_clean']} clean, {doc['docs_excised']} excised (kept), "
                 f"{doc['docs_dropped']} dropped")
    return "\n".join(lines)


if __name__ == "__main__":
    from udfs.common import exit_process

    exit_process(run_main("decontaminate", main))
