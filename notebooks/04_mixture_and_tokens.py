# Databricks notebook source
# MAGIC %md
# MAGIC # 04 · Mixture and tokens
# MAGIC The domain mixture the `mix` stage aimed for (its metrics row) next to what the `mixed` table holds, and
# MAGIC token statistics of the packed shards (`<lake>/packed/manifest.json` and the `.idx` document offsets).
# MAGIC
# MAGIC On Databricks set the `lake` widget; as plain Python set `LMR_LAKE` (default `./lake`).

# COMMAND ----------

# Lake path from the widget on Databricks (where `spark` is predefined), else from env LMR_LAKE (default ./lake).
import os
import sys

try:
    REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
except NameError:  # Databricks Repos run a notebook with its own folder as working directory
    REPO = os.path.dirname(os.getcwd())
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import json  # noqa: E402

import numpy as np  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from jobs.notebook import open_lake  # noqa: E402

lake, spark, show = open_lake(globals())

# COMMAND ----------

# MAGIC %md
# MAGIC ## Mixture: target vs achieved
# MAGIC Target weights come from the latest `mix` metrics row; achieved shares are recomputed here from the
# MAGIC `mixed` table (`n_tokens`, the real token counts mix wrote, or `n_tokens_est` for a mix run with
# MAGIC `mix.tokens: estimate`; epoch copies included), so the two columns are independent.

# COMMAND ----------

mix_rows = [r for r in lake.read_arrow("metrics").to_pylist() if r["stage"] == "mix"] if lake.exists("metrics") else []
mix_row = max(mix_rows, key=lambda r: r["started_at"]) if mix_rows else None
extra = json.loads(mix_row["extra"] or "{}") if mix_row else {}
target = {d["domain"]: d["target_weight"] for d in extra.get("domains", [])}
print("## Mixture: target vs achieved")
print(f"strategy: {extra.get('strategy')}  token_budget: {extra.get('token_budget')}  seed: {extra.get('seed')}")

mixed = lake.read("mixed")
tok_col = "n_tokens" if "n_tokens" in mixed.columns else "n_tokens_est"
achieved = (mixed.groupBy("domain")
            .agg(F.count(F.lit(1)).alias("rows"), F.countDistinct("id").alias("unique_docs"),
                 F.sum(tok_col).alias("tokens"))
            .orderBy("domain").collect())
total = sum(r["tokens"] or 0 for r in achieved)
print(f"{'domain':<14}{'target':>10}{'achieved':>10}{'diff':>9}{'tokens':>12}{'rows':>8}{'unique':>8}")
for r in achieved:
    t = target.get(r["domain"])
    a = (r["tokens"] or 0) / total if total else 0.0
    diff = f"{a - t:+.4f}" if t is not None else "n/a"
    t_s = f"{t:.4f}" if t is not None else "n/a"
    print(f"{r['domain']:<14}{t_s:>10}{a:>10.4f}{diff:>9}{r['tokens']:>12}{r['rows']:>8}{r['unique_docs']:>8}")
print(f"mixed {tok_col}: {total}  rows: {sum(r['rows'] for r in achieved)}")
for w in extra.get("warnings") or []:
    print(f"warning: {w}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Packed tokens
# MAGIC Per split: tokens (EOS included), documents, shards and bytes of text per token; document lengths from the
# MAGIC `.idx` end offsets (EOS excluded).

# COMMAND ----------

packed = os.path.join(lake.root, "packed")
manifest_path = os.path.join(packed, "manifest.json")
print("## Packed tokens")
if os.path.exists(manifest_path):
    with open(manifest_path) as f:
        manifest = json.load(f)
    tok = manifest["tokenizer"]
    print(f"tokenizer: {tok.get('name')}  vocab: {tok.get('vocab_size')}  eos: {tok.get('eos_id')}  "
          f"dtype: {manifest['dtype']}  source: {manifest['source']}")
    print(f"{'split':<7}{'tokens':>12}{'documents':>11}{'shards':>8}{'text_bytes':>12}{'bytes/token':>13}"
          f"{'mean':>8}{'median':>8}{'p95':>8}{'max':>8}")
    for split, info in manifest["splits"].items():
        lengths = [np.diff(np.fromfile(os.path.join(packed, sh["idx"]), dtype="<u8").astype(np.int64), prepend=0) - 1
                   for sh in info["shards"]]
        v = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
        bpt = info["text_bytes"] / (info["tokens"] - info["documents"]) if info["tokens"] > info["documents"] else 0
        stats = (f"{v.mean():>8.1f}{int(np.median(v)):>8}{int(np.percentile(v, 95)):>8}{int(v.max()):>8}"
                 if len(v) else f"{'-':>8}" * 4)
        print(f"{split:<7}{info['tokens']:>12}{info['documents']:>11}{len(info['shards']):>8}"
              f"{info['text_bytes']:>12}{bpt:>13.3f}" + stats)
    if manifest.get("mixture_weights"):
        print(f"mixture weights in manifest: {manifest['mixture_weights']}")
else:
    print(f"no packed shards at {packed} (run jobs/pack.py)")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Tokenizer compression
# MAGIC Bytes per token per domain for gpt2, cl100k_base, o200k_base (and the packing tokenizer): from
# MAGIC `<lake>/reports/tokenizers.json` (`jobs/pack.py --compression-report`, whole table) when present, else measured
# MAGIC here on the first 500 unique documents per domain of the packed source table (the report's function).

# COMMAND ----------

from jobs.report import Sources, tokenizer_compression  # noqa: E402

print("## Tokenizer compression")
comp = tokenizer_compression(Sources(lake.root), packed, manifest if os.path.exists(manifest_path) else None)
if comp:
    print(f"from {comp['from']}")
    print(f"{'bytes/token':<14}" + "".join(f"{t[:18]:>20}" for t in comp["tokenizers"]))
    for d, per in comp["rows"]:
        print(f"{d[:14]:<14}" + "".join(f"{per.get(t) or 0:>20.3f}" for t in comp["tokenizers"]))
    if comp["tokens_per_word"]:
        print(f"{'tokens/word':<14}" + "".join(f"{comp['tokens_per_word'].get(t) or 0:>20.3f}"
                                             for t in comp["tokenizers"]))
else:
    print("no tokenizer data (run jobs/pack.py, or jobs/pack.py --compression-report)")
