"""Report, part 1: gathering. Reads the lake (metrics through delta-rs; Spark only when a fallback must aggregate a
big table), the packed folder and the training run into plain data (dicts, lists, numpy arrays) for the plots
(jobs/report_plots.py) and the page (jobs/report.py). Every function returns None when its data is missing.
"""
from __future__ import annotations

import datetime as dt
import glob
import json
import os

from jobs.stage import PIPELINE as STAGE_ORDER
from udfs import packed as packed_format


# ---- data gathering (small results only) --------------------------------------------------------------------
class Sources:
    """Lazy access to the lake: metrics through delta-rs, Spark only on demand."""

    def __init__(self, root: str, master: str | None = None):
        from jobs.tables import Lake

        self.root = os.path.abspath(root)
        self.master = master
        self.lake = Lake(None, self.root, backend="delta-rs")
        self._spark_lake = None

    def exists(self, name: str) -> bool:
        return self.lake.exists(name)

    def metrics_rows(self) -> list[dict]:
        if not self.exists("metrics"):
            return []
        rows = self.lake.read_arrow("metrics").to_pylist()
        for r in rows:
            r["reasons"] = dict(r.get("reasons") or [])
            r["outputs"] = dict(r.get("outputs") or [])
            try:
                r["extra"] = json.loads(r.get("extra") or "{}")
            except ValueError:
                r["extra"] = {}
        return sorted(rows, key=lambda r: r["started_at"])

    def arrow_dataset(self, name: str, version: int | None = None):
        """A pyarrow dataset over the data files of a table's snapshot (latest, or `version`), read on the driver."""
        import pyarrow.dataset as pads

        paths = [u[len("file://"):] if u.startswith("file://") else u for u in self.lake.files(name, version)]
        return pads.dataset(paths, format="parquet")

    def spark_lake(self):
        if self._spark_lake is None:
            from jobs.session import get_spark
            from jobs.tables import Lake

            self._spark_lake = Lake(get_spark("lmrefinery-report", master=self.master), self.root)
        return self._spark_lake


def latest_per_stage(rows: list[dict]) -> dict[str, dict]:
    latest: dict[str, dict] = {}
    for r in rows:  # rows are sorted by started_at
        latest[r["stage"]] = r
    return latest


def stage_sort_key(stage: str):
    return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), stage)


def funnel(latest: dict[str, dict]) -> list[dict]:
    """One row per stage in pipeline order with the counts exactly as in its metrics row."""
    keys = ("docs_in", "docs_out", "docs_rejected", "tokens_in", "tokens_out", "doc_acceptance", "token_acceptance",
            "input_table", "output_table")
    out = []
    for s in sorted(latest, key=stage_sort_key):
        row = {"stage": s, **{k: latest[s].get(k) for k in keys}}
        # mix counts unique documents out; its table holds their epoch copies too (extra.rows_out)
        row["rows_out"] = (latest[s].get("extra") or {}).get("rows_out", row["docs_out"])
        extra = latest[s].get("extra") or {}
        tok = extra.get("tokenizer")
        if s == "pack" and isinstance(tok, dict):
            row["unit"] = f"{tok.get('name') or 'tokenizer'} tokens"
        elif s == "mix" and extra.get("token_counts") == "exact":
            row["unit"] = f"{str(tok).split(':')[0]} tokens"
        else:
            row["unit"] = None  # the n_tokens_est estimate (UTF-8 bytes / 4)
        out.append(row)
    return out


def chain_mismatches(fun: list[dict]) -> list[str]:
    """Where a stage read the table the stage before it wrote, its documents (and estimated tokens) in should be
    that stage's out; list every place where they are not (tokens only where both count the same unit: the
    estimate, or real tokens of one tokenizer)."""
    out = []
    for prev, cur in zip(fun, fun[1:]):
        if not prev.get("output_table") or prev.get("output_table") != cur.get("input_table"):
            continue
        same_unit = prev.get("unit") == cur.get("unit")
        keys = [("rows", "docs", "documents")] + ([("tokens", "tokens", "tokens")] if same_unit else [])
        for out_key, in_key, word in keys:
            a, b = prev.get(f"{out_key}_out"), cur.get(f"{in_key}_in")
            if a is not None and b is not None and a != b:
                out.append(f"{cur['stage']} read {b:,} {word} from {cur['input_table']}, but {prev['stage']} "
                           f"reported writing {a:,} (latest metrics rows; a re-run of one stage only, or "
                           f"inconsistent counting)")
    return out


def language_distribution(src: Sources, latest: dict[str, dict]) -> dict | None:
    """{"in": {lang: docs}, "kept": {lang: docs}, "from": where} or None."""
    extra = (latest.get("filter") or {}).get("extra") or {}
    if isinstance(extra.get("languages_in"), dict):
        return {"in": extra["languages_in"], "kept": extra.get("languages_kept") or {},
                "from": "filter metrics (extra.languages_in / languages_kept)"}
    if not (src.exists("filtered") or src.exists("rejected")):
        return None
    return language_distribution_from_tables(src.spark_lake())


def language_distribution_from_tables(lake) -> dict | None:
    from pyspark.sql import functions as F

    counts = {}
    for name in ("filtered", "rejected"):
        if not lake.exists(name):
            continue
        df = lake.read(name)
        if "lang" not in df.columns:
            continue
        rows = df.groupBy(F.coalesce("lang", F.lit("unknown")).alias("lang")).count().collect()
        counts[name] = {r["lang"]: int(r["count"]) for r in rows}
    if not counts:
        return None
    kept = counts.get("filtered", {})
    total = dict(kept)
    for lang, n in counts.get("rejected", {}).items():
        total[lang] = total.get(lang, 0) + n
    return {"in": dict(sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))),
            "kept": dict(sorted(kept.items(), key=lambda kv: (-kv[1], kv[0]))),
            "from": "lang column of the filtered / rejected tables"}


def duplicate_clusters(src: Sources, latest: dict[str, dict]) -> dict | None:
    """{"hist": {size bucket: clusters}, "methods": {method: docs removed}, "from": where} or None."""
    row = latest.get("dedup")
    if row and isinstance(row["extra"].get("cluster_size_histogram"), dict):
        return {"hist": row["extra"]["cluster_size_histogram"], "methods": dict(row["reasons"]),
                "from": "dedup metrics (extra.cluster_size_histogram)"}
    if not src.exists("duplicates"):
        return None
    return duplicate_clusters_from_table(src.spark_lake())


def size_bucket(size: int) -> str:
    """The dedup job's buckets: 2, 3, 4, 5-8, 9-16, ..."""
    if size <= 4:
        return str(size)
    hi = 1 << (size - 1).bit_length()
    return f"{hi // 2 + 1}-{hi}"


def duplicate_clusters_from_table(lake) -> dict | None:
    from pyspark.sql import functions as F

    df = lake.read("duplicates")
    if "kept_id" not in df.columns:
        return None
    sizes = df.groupBy("kept_id").count().select((F.col("count") + 1).alias("size")).groupBy("size").count()
    hist: dict = {}
    for r in sorted(sizes.collect(), key=lambda r: r["size"]):
        b = size_bucket(int(r["size"]))
        hist[b] = hist.get(b, 0) + int(r["count"])
    methods = {}
    if "method" in df.columns:
        methods = {r["method"]: int(r["count"]) for r in df.groupBy("method").count().collect()}
    return {"hist": hist, "methods": methods, "from": "duplicates table (kept_id)"}


def mixture(latest: dict[str, dict]) -> dict | None:
    row = latest.get("mix")
    if not row or not isinstance(row["extra"].get("domains"), list) or not row["extra"]["domains"]:
        return None
    return {"strategy": row["extra"].get("strategy"), "domains": row["extra"]["domains"],
            "token_budget": row["extra"].get("token_budget"), "warnings": row["extra"].get("warnings") or [],
            "token_counts": row["extra"].get("token_counts", "estimate"), "tokenizer": row["extra"].get("tokenizer"),
            "output_version": row.get("output_version")}


def with_packed(mix: dict | None, manifest: dict | None) -> dict | None:
    """The mixture plus what the packed manifest says each domain got (tokens with EOS, train + val), when the
    packed folder was made from the table that mix run wrote."""
    if not mix or not manifest:
        return mix
    src = manifest.get("source") or {}
    got = (manifest.get("mixture") or {}).get("achieved_tokens")
    if isinstance(got, dict) and src.get("table") == "mixed" and src.get("version") == mix.get("output_version"):
        mix = dict(mix, packed_tokens=got)
    return mix


# ---- per domain / source, filter signals (delta-rs + pyarrow, column projection; no Spark) ---------------------
BREAKDOWN_STAGES = ("ingest", "filter", "dedup", "decontaminate", "mix")
NO_VALUE = "(none)"  # a null domain / source / reason key
TOP_REASONS_PER_DOMAIN = 5
MAX_REASON_BARS = 12
HIST_MAX_ROWS = 200_000
# (signal, x scale) of the signal histograms, in figure order
KEY_SIGNALS = (("alpha_words_ratio", "linear"), ("word_count", "log"), ("lang_score", "linear"),
               ("dup_5gram_char_frac", "linear"), ("top_2gram_char_frac", "linear"), ("line_punct_ratio", "linear"),
               ("char_dup_ratio", "linear"), ("stop_word_count", "linear"), ("mean_word_length", "linear"))


def group_reasons(reasons: dict, max_items: int = MAX_REASON_BARS) -> list[tuple[str, int]]:
    """(reason, docs) by docs descending; beyond `max_items`, the smallest are one ("other (N reasons)", docs) item
    so that at most `max_items` are returned."""
    items = sorted(((k, int(v)) for k, v in reasons.items() if v), key=lambda kv: (-kv[1], kv[0]))
    if len(items) <= max_items:
        return items
    head, rest = items[:max_items - 1], items[max_items - 1:]
    return head + [(f"other ({len(rest)} reasons)", sum(v for _, v in rest))]


def _key(v) -> str:
    return NO_VALUE if v is None else str(v)


def _table_version(row: dict, table: str | None):
    """The version of `table` a metrics row wrote (its outputs map, else output_version), None when unknown."""
    if not table:
        return None
    outs = row.get("outputs") or {}
    if table in outs and outs[table] is not None:
        return int(outs[table])
    return row.get("output_version") if table == row.get("output_table") else None


def grouped_sums(ds, keys: tuple, sums: tuple, row_filter=None, prep=None) -> dict:
    """{key tuple: {"docs": rows, <sum column>: total}} over a pyarrow dataset, batch by batch, reading only the
    named columns (a missing key column is all null, a missing sum column 0). `prep(table)` may add columns."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names = set(ds.schema.names)
    want = [c for c in dict.fromkeys(list(keys) + list(sums) + list(getattr(prep, "needs", ()))) if c in names]
    out: dict = {}
    for batch in ds.to_batches(columns=want, filter=row_filter, batch_size=1 << 17):
        if batch.num_rows == 0:
            continue
        t = pa.Table.from_batches([batch])
        if prep is not None:
            t = prep(t)
        for k in keys:
            if k not in t.column_names:
                t = t.append_column(k, pa.nulls(t.num_rows, pa.string()))
        have = [c for c in sums if c in t.column_names]
        for c in have:  # sums of int and bool alike
            t = t.set_column(t.column_names.index(c), c, pc.cast(t[c], pa.int64()))
        g = t.group_by(list(keys)).aggregate([(c, "sum") for c in have] + [([], "count_all")])
        for r in g.to_pylist():
            acc = out.setdefault(tuple(_key(r[k]) for k in keys), {"docs": 0, **{c: 0 for c in sums}})
            acc["docs"] += int(r["count_all"])
            for c in have:
                acc[c] += int(r[f"{c}_sum"] or 0)
    return out


def _by(groups: dict, pos: int, mapping: dict) -> dict:
    """Sum {(domain, source): counts} over one key position into {name: {out key: value}} (mapping out <- in)."""
    out: dict = {}
    for key, v in groups.items():
        acc = out.setdefault(key[pos], {k: 0 for k in mapping})
        for k, src_k in mapping.items():
            acc[k] += int(v.get(src_k, 0) or 0)
    return out


def _merge(into: dict, add: dict) -> dict:
    res = {k: dict(v) for k, v in into.items()}
    for k, v in add.items():
        acc = res.setdefault(k, {kk: 0 for kk in v})
        for kk, x in v.items():
            acc[kk] = acc.get(kk, 0) + x
    return res


def _stage_counts(src: Sources, row: dict, cache: dict) -> dict:
    """{"in": {(domain, source): {"docs", "tokens"}}, "out": {...}, "input", "output"} for one stage's metrics row,
    from its input table at input_version and its main output table at the version it wrote."""
    import pyarrow.compute as pc

    from jobs.schema import estimate_tokens

    stage = row["stage"]

    def counts(table, version, row_filter=None, prep=None, tag=None, keys=("domain", "source")):
        ck = (table, version, tag, keys)
        if ck not in cache:
            if not src.exists(table):
                raise LookupError(f"table {table} is missing")
            try:
                ds = src.arrow_dataset(table, version)
            except Exception as e:  # a vacuumed version, a broken log
                raise LookupError(f"table {table} v{version} cannot be read ({str(e).splitlines()[0][:160]})")
            f = row_filter(ds) if callable(row_filter) else row_filter
            cache[ck] = grouped_sums(ds, keys, ("n_tokens_est",) + tuple(getattr(prep, "sums", ())), f, prep)
        return cache[ck]

    def tokens(g, col="n_tokens_est"):
        return {k: {"docs": v["docs"], "tokens": v.get(col, 0)} for k, v in g.items()}

    out_t = row.get("output_table")
    out_v = _table_version(row, out_t)
    if not out_t:
        raise LookupError("its metrics row names no output table")
    res = {"output": f"{out_t} v{out_v}" if out_v is not None else out_t}
    if stage == "ingest":
        run_tag = f"ingest-{row.get('config_hash')}"

        def this_run(ds):  # the lake's documents may come from several ingest runs: this run's rows
            return pc.field("ingest_run") == run_tag if "ingest_run" in ds.schema.names else None

        out = tokens(counts(out_t, out_v, this_run, tag=run_tag))
        q_t = next((t for t in (row.get("outputs") or {}) if t != out_t), None)
        quarantined: dict = {}
        if q_t and src.exists(q_t):
            def raw_len(t):
                return t
            raw_len.sums = ("raw_length",)
            # as ingest counts them: estimated tokens of the raw payload bytes per source and reason
            q = counts(q_t, _table_version(row, q_t), this_run, raw_len, tag=run_tag,
                       keys=("domain", "source", "reason"))
            for (d, so, _), v in q.items():
                acc = quarantined.setdefault((d, so), {"docs": 0, "tokens": 0})
                acc["docs"] += v["docs"]
                acc["tokens"] += estimate_tokens(v.get("raw_length", 0))
        res.update({"in": _merge(out, quarantined), "out": out,
                    "input": f"{out_t} + {q_t} rows of run {run_tag}" if q_t else f"{out_t} rows of run {run_tag}"})
        return res
    in_t, in_v = row.get("input_table"), row.get("input_version")
    if not in_t:
        raise LookupError("its metrics row names no input table")
    res["input"] = f"{in_t} v{in_v}" if in_v is not None else in_t
    res["in"] = tokens(counts(in_t, in_v))
    if stage == "mix":  # documents out: unique documents (epoch_copy 0); tokens out: every row, repeats included
        import pyarrow as pa

        def first_copy(t):
            if "epoch_copy" in t.column_names:
                first = pc.cast(pc.equal(t["epoch_copy"], 0), pa.int64())
            else:
                first = pa.array([1] * t.num_rows, pa.int64())
            return t.append_column("_first", first)
        extra = row.get("extra") or {}
        exact = extra.get("token_counts") == "exact"
        first_copy.needs, first_copy.sums = ("epoch_copy",), ("_first",) + (("n_tokens",) if exact else ())
        g = counts(out_t, out_v, prep=first_copy, tag="first_copy" + ("_exact" if exact else ""))
        col = "n_tokens" if exact else "n_tokens_est"
        res["out"] = {k: {"docs": v.get("_first", 0), "tokens": v.get(col, 0), "rows": v["docs"]}
                      for k, v in g.items()}
        if exact and isinstance(extra.get("tokens_in_by"), list):
            # real tokens in: the input table has no exact counts, the mix run recorded them per domain, source
            res["in"] = {}
            for r in extra["tokens_in_by"]:
                acc = res["in"].setdefault((_key(r["domain"]), _key(r["source"])), {"docs": 0, "tokens": 0})
                acc["docs"] += int(r["docs"])
                acc["tokens"] += int(r["tokens"])
    else:
        res["out"] = tokens(counts(out_t, out_v))
    return res


def stage_breakdown(src: Sources, latest: dict[str, dict]) -> dict | None:
    """Documents and tokens in -> out per domain and per source for every stage with a metrics row:
    {"stages": [{"stage", "input", "output", "domains": {name: counts}, "sources": {...}, "error"}],
     "loud_losses": [filter extra.loud_losses lines], "share": loud loss share}; None without such a stage.
    counts: docs_in, docs_out, tokens_in, tokens_out, lost_share, loud (lost more than `share` of its docs)."""
    stages = [s for s in BREAKDOWN_STAGES if s in latest]
    if not stages:
        return None
    fextra = (latest.get("filter") or {}).get("extra") or {}
    share = 0.5  # "loud": lost more than half of its documents, as the filter's loud losses (loud_loss_share)
    cache: dict = {}
    out = []
    for s in stages:
        row = latest[s]
        entry = {"stage": s, "input": None, "output": None, "domains": {}, "sources": {}, "error": None}
        try:
            c = _stage_counts(src, row, cache)
        except LookupError as e:
            entry["error"] = str(e)
            out.append(entry)
            continue
        entry["input"], entry["output"] = c["input"], c["output"]
        for pos, name in ((0, "domains"), (1, "sources")):
            ins = _by(c["in"], pos, {"docs_in": "docs", "tokens_in": "tokens"})
            outs = _by(c["out"], pos, {"docs_out": "docs", "tokens_out": "tokens"})
            groups = {}
            for k in sorted(set(ins) | set(outs)):
                g = {"docs_in": 0, "tokens_in": 0, **ins.get(k, {}), "docs_out": 0, "tokens_out": 0, **outs.get(k, {})}
                g["lost_share"] = (g["docs_in"] - g["docs_out"]) / g["docs_in"] if g["docs_in"] else None
                g["loud"] = bool(g["docs_in"]) and (g["lost_share"] > share or g["docs_out"] == 0)
                groups[k] = g
            entry[name] = groups
        out.append(entry)
    return {"stages": out, "loud_losses": list(fextra.get("loud_losses") or []), "share": share}


def _signals_table(src: Sources, latest: dict[str, dict]):
    """(name, version, filter metrics row or None) of the filter's signals table, None when there is none."""
    row = latest.get("filter")
    name = ((row or {}).get("extra") or {}).get("signals_table") or "filter_signals"
    if not src.exists(name):
        return None
    return name, _table_version(row, name) if row else None, row


def filter_signals_summary(src: Sources, latest: dict[str, dict], max_rows: int = HIST_MAX_ROWS) -> dict | None:
    """From the filter's signals table (one row per input document), None when the lake has none:
    {"table", "version", "rows",
     "reasons": {domain: {reason: docs}} (rejected documents), "docs": {domain: docs in}, "kept": {domain: docs},
     "line_cleaning": {domain: {"docs", "bytes_raw", "bytes_clean", "tokens_raw", "tokens_clean"}} (kept documents),
     "sample": {"domain": [...], "kept": bool array, <signal>: float array} (every k-th row, at most `max_rows`),
     "stride", "signals": [(signal, scale)] present, "cuts": filter extra.cuts or None, "presets"}."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    found = _signals_table(src, latest)
    if not found:
        return None
    name, version, row = found
    try:
        ds = src.arrow_dataset(name, version)
    except Exception:  # that version was vacuumed: the latest snapshot
        ds, version = src.arrow_dataset(name), src.lake.version(name)
    names = set(ds.schema.names)
    if not {"domain", "kept"} <= names:
        return None
    n_rows = ds.count_rows()

    def kept_int(t):
        return t.append_column("_kept", pc.cast(pc.fill_null(t["kept"], False), pa.int64()))
    kept_int.needs, kept_int.sums = ("kept",), ("_kept",)
    by_reason = grouped_sums(ds, ("domain", "reason"), ("_kept",), prep=kept_int)
    reasons: dict = {}
    docs: dict = {}
    kept: dict = {}
    for (d, r), v in by_reason.items():
        docs[d] = docs.get(d, 0) + v["docs"]
        kept[d] = kept.get(d, 0) + v["_kept"]
        if v["docs"] - v["_kept"] > 0:
            reasons.setdefault(d, {})[r] = reasons.get(d, {}).get(r, 0) + v["docs"] - v["_kept"]
    sizes = ("n_bytes_raw", "n_bytes_clean", "n_tokens_raw", "n_tokens_clean")
    cleaning = {}
    if all(c in names for c in sizes):
        g = grouped_sums(ds, ("domain",), sizes, row_filter=pc.field("kept") == True)  # noqa: E712
        cleaning = {d: {"docs": v["docs"], "bytes_raw": v["n_bytes_raw"], "bytes_clean": v["n_bytes_clean"],
                        "tokens_raw": v["n_tokens_raw"], "tokens_clean": v["n_tokens_clean"]}
                    for (d,), v in sorted(g.items())}
    signals = [(s, scale) for s, scale in KEY_SIGNALS if s in names]
    stride = max(1, -(-n_rows // max_rows)) if max_rows else 1
    parts: dict = {"domain": [], "kept": [], **{s: [] for s, _ in signals}}
    seen = 0
    for b in ds.to_batches(columns=["domain", "kept"] + [s for s, _ in signals], batch_size=1 << 16):
        idx = np.arange(seen, seen + b.num_rows)
        take = np.nonzero(idx % stride == 0)[0]
        seen += b.num_rows
        if not len(take):
            continue
        b = b.take(pa.array(take))
        parts["domain"] += [_key(x) for x in b.column("domain").to_pylist()]
        parts["kept"].append(b.column("kept").fill_null(False).to_numpy(zero_copy_only=False))
        for s, _ in signals:
            parts[s].append(pc.cast(b.column(s), pa.float64()).to_numpy(zero_copy_only=False))
    sample = {"domain": np.array(parts["domain"], dtype=object),
              "kept": np.concatenate(parts["kept"]).astype(bool) if parts["kept"] else np.zeros(0, bool),
              **{s: np.concatenate(parts[s]) if parts[s] else np.zeros(0) for s, _ in signals}}
    extra = (row or {}).get("extra") or {}
    return {"table": name, "version": version, "rows": n_rows, "reasons": reasons, "docs": dict(sorted(docs.items())),
            "kept": kept, "line_cleaning": cleaning, "sample": sample, "stride": stride, "signals": signals,
            "cuts": extra.get("cuts") if isinstance(extra.get("cuts"), dict) else None,
            "presets": extra.get("presets") or {}}


def top_reasons_per_domain(reasons: dict, docs: dict, top: int = TOP_REASONS_PER_DOMAIN) -> list[dict]:
    """Per domain (by documents in, descending): its `top` rejection reasons and the rest as one item:
    [{"domain", "docs_in", "rejected", "top": [(reason, docs)], "other": (n reasons, docs) or None}]."""
    out = []
    for d in sorted(docs, key=lambda d: (-docs[d], d)):
        items = sorted(reasons.get(d, {}).items(), key=lambda kv: (-kv[1], kv[0]))
        rest = items[top:]
        out.append({"domain": d, "docs_in": docs[d], "rejected": sum(v for _, v in items), "top": items[:top],
                    "other": (len(rest), sum(v for _, v in rest)) if rest else None})
    return out


def cuts_for(cuts: dict | None, domain: str) -> list:
    """The document-level rules in force for `domain` (extra.cuts: its own list, else the default "*")."""
    if not cuts:
        return []
    return list(cuts.get(domain, cuts.get("*")) or [])


def load_manifest(packed: str) -> dict | None:
    """The packed folder's manifest as it is (unverified: the report shows what is there), None without one."""
    if not os.path.exists(os.path.join(packed, packed_format.MANIFEST)):
        return None
    return packed_format.read_manifest(packed)


def token_lengths(packed: str, manifest: dict | None) -> dict | None:
    """Document lengths in tokens (EOS not counted) per split, from the .idx end offsets."""
    import numpy as np

    if not manifest:
        return None
    out = {}
    for split, info in (manifest.get("splits") or {}).items():
        parts = []
        for sh in info.get("shards") or []:
            p = os.path.join(packed, sh["idx"])
            if not os.path.exists(p):
                continue
            parts.append(np.diff(packed_format.read_index(p), prepend=0) - 1)
        if parts:
            out[split] = np.concatenate(parts)
    return out or None


def tokenizer_compression(src: Sources, packed: str, manifest: dict | None, sample_docs: int = 500) -> dict | None:
    """{"tokenizers": [...], "rows": [(domain, {tok: bytes_per_token})], "tokens_per_word": {...}, "from": where}.

    From `<lake>/reports/tokenizers.json` (jobs/pack.py --compression-report, whole table, Spark) when present; else
    measured here on a bounded sample of the packed source table (`sample_docs` unique documents per domain, read
    with delta-rs, encoded with the same function the pack job uses); else the packed manifest (one tokenizer)."""
    path = os.path.join(src.root, "reports", "tokenizers.json")
    if os.path.exists(path):
        with open(path) as f:
            rep = json.load(f)
        return _compression_rows(rep, os.path.relpath(path, src.root) + " (jobs/pack.py --compression-report)")
    if manifest and sample_docs > 0:
        rep = compression_sample(src, packed, manifest, sample_docs)
        if rep:
            return rep
    if not manifest:
        return None
    name = (manifest.get("tokenizer") or {}).get("name") or "packed tokenizer"
    rows = []
    for split, info in sorted((manifest.get("splits") or {}).items()):
        if info.get("tokens") and info.get("text_bytes"):
            # the manifest's token counts include one EOS per document; text bytes do not
            toks = info["tokens"] - info.get("documents", 0)
            rows.append((split, {name: round(info["text_bytes"] / toks, 4) if toks > 0 else None}))
    if not rows:
        return None
    return {"tokenizers": [name], "rows": rows, "tokens_per_word": {},
            "from": "packed manifest (text_bytes / tokens per split, EOS excluded)"}


def _compression_rows(rep: dict, where: str) -> dict:
    toks = list(rep.get("tokenizers") or [])
    rows = [(d, {t: (per.get(t) or {}).get("bytes_per_token") for t in toks})
            for d, per in sorted((rep.get("domains") or {}).items())]
    rows.append(("ALL", {t: (rep.get("all", {}).get(t) or {}).get("bytes_per_token") for t in toks}))
    words = {t: (rep.get("all", {}).get(t) or {}).get("tokens_per_word") for t in toks}
    return {"tokenizers": toks, "rows": rows, "tokens_per_word": words, "from": where}


def _report_tokenizers(packed: str, manifest: dict) -> list[tuple[str, dict]]:
    """(label, resolved spec) for gpt2 / cl100k_base / o200k_base and the packing tokenizer, those present here."""
    from jobs.pack import DEFAULT_REPORT_TOKENIZERS
    from udfs.tokenize import resolve_spec

    tok = manifest.get("tokenizer") or {}
    specs = [(t, t) for t in DEFAULT_REPORT_TOKENIZERS]
    if tok.get("file"):  # a trained BPE shipped inside the packed folder
        specs.append(("packed: " + str(tok.get("spec") or tok["file"]), os.path.join(packed, tok["file"])))
    elif tok.get("name") and tok["name"] not in DEFAULT_REPORT_TOKENIZERS:
        specs.append((tok["name"], tok.get("spec") or tok["name"]))
    out = []
    for label, spec in specs:
        try:
            out.append((label, resolve_spec(spec)))
        except Exception:  # ranks file not installed here: leave that tokenizer out
            continue
    return out


def compression_sample(src: Sources, packed: str, manifest: dict, per_domain: int,
                       scan_bytes: int = 256 << 20) -> dict | None:
    """Bytes/token and tokens/word per domain and tokenizer on the first `per_domain` unique documents of each
    domain in the packed source table (scan stops after `scan_bytes` of Arrow data). Driver only, no Spark."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from jobs.pack import compression_counts_fn

    source = manifest.get("source") or {}
    table, version = source.get("table"), source.get("version")
    if not table or not src.exists(table):
        return None
    try:
        ds = src.arrow_dataset(table, version)
    except Exception:  # that version was vacuumed: the latest one is close enough for a compression estimate
        ds, version = src.arrow_dataset(table), src.lake.version(table)
    names = ds.schema.names
    if "text" not in names or "domain" not in names:
        return None
    cols = ["domain", "text"] + (["epoch_copy"] if "epoch_copy" in names else [])
    taken: dict[str, list[str]] = {}
    scanned = 0
    for b in ds.to_batches(columns=cols, batch_size=2048):
        scanned += b.nbytes
        if "epoch_copy" in cols:
            b = b.filter(pc.equal(b.column("epoch_copy"), 0))
        for d, t in zip(b.column("domain").to_pylist(), b.column("text").to_pylist()):
            if t is None:
                continue
            got = taken.setdefault(d or "unknown", [])
            if len(got) < per_domain:
                got.append(t)
        if scanned >= scan_bytes:
            break
    tokenizers = _report_tokenizers(packed, manifest)
    if not taken or not tokenizers:
        return None
    doms = sorted(taken)
    batch = pa.RecordBatch.from_arrays(
        [pa.array([d for d in doms for _ in taken[d]], pa.string()), pa.array([t for d in doms for t in taken[d]])],
        names=["domain", "text"])
    acc: dict = {}
    for out in compression_counts_fn([(label, r) for label, r in tokenizers])(iter([batch])):
        for r in out.to_pylist():
            a = acc.setdefault((r["domain"], r["tokenizer"]), {"docs": 0, "bytes": 0, "tokens": 0, "words": 0})
            for k in a:
                a[k] += int(r[k])

    def ratios(a):
        return {**a, "bytes_per_token": round(a["bytes"] / a["tokens"], 4) if a["tokens"] else None,
                "tokens_per_word": round(a["tokens"] / a["words"], 4) if a["words"] else None}

    domains: dict = {}
    overall: dict = {}
    for (d, t), a in sorted(acc.items()):
        domains.setdefault(d, {})[t] = ratios(a)
        o = overall.setdefault(t, {k: 0 for k in a})
        for k in a:
            o[k] += a[k]
    rep = {"tokenizers": [label for label, _ in tokenizers], "domains": domains,
           "all": {t: ratios(a) for t, a in overall.items()}}
    n = sum(len(v) for v in taken.values())
    where = (f"a sample of table {table} v{version}: the first {per_domain:,} unique documents per domain "
             f"({n:,} documents), measured by this report; jobs/pack.py --compression-report measures the "
             f"whole table")
    res = _compression_rows(rep, where)
    res["sample_docs"] = {d: len(v) for d, v in taken.items()}
    return res


def load_run(run_dir: str) -> list[dict] | None:
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue  # a line cut off by a killed run
    return rows or None


def load_doremi(root: str) -> dict | None:
    """reports/doremi.json of a local lake (jobs/doremi.py), or None."""
    path = os.path.join(root, "reports", "doremi.json")
    try:
        with open(path) as f:
            res = json.load(f)
    except (OSError, ValueError):
        return None
    return res if isinstance(res.get("domain_weights"), dict) else None


def audit_links(root: str, out_dir: str) -> list[tuple[str, str, str]]:
    links = []
    for pattern, note in ((os.path.join(root, "audit", "*.jsonl"), "audit sample (a few records per reason)"),
                          (os.path.join(root, "reports", "*.json"), "stage report")):
        for p in sorted(glob.glob(pattern)):
            with open(p, "rb") as f:
                n = sum(1 for _ in f) if p.endswith(".jsonl") else None
            links.append((os.path.relpath(p, root), os.path.relpath(p, out_dir),
                          note + (f", {n} lines" if n is not None else "")))
    return links


def gather(src: Sources, run_dir: str, packed: str, out_dir: str, compression_docs: int = 500) -> dict:
    rows = src.metrics_rows()
    latest = latest_per_stage(rows)
    manifest = load_manifest(packed)
    return {
        "lake": src.root, "generated_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "metrics": rows, "latest": latest, "funnel": funnel(latest),
        "breakdown": stage_breakdown(src, latest), "signals": filter_signals_summary(src, latest),
        "languages": language_distribution(src, latest), "duplicates": duplicate_clusters(src, latest),
        "mixture": with_packed(mixture(latest), manifest), "packed": packed, "manifest": manifest,
        "token_lengths": token_lengths(packed, manifest),
        "tokenizers": tokenizer_compression(src, packed, manifest, compression_docs),
        "doremi": load_doremi(src.root),
        "run_path": os.path.join(run_dir, "metrics.jsonl"),
        "run": load_run(run_dir), "links": audit_links(src.root, out_dir),
    }
