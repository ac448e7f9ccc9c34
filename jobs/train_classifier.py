"""Train the fastText quality classifier that the filter stage applies (filter.classifier.model_path).

Examples come either from lake tables (one table + optional SQL filter per class):

    python jobs/train_classifier.py --lake lake \\
        --positive-table filtered --positive-where "domain = 'reference'" \\
        --negative-table rejected --negative-where "reason LIKE 'gopher%'" --out models/quality.bin

or from JSONL files, one per class (--positive-jsonl / --negative-jsonl) or one file with a label field
(--jsonl FILE --label-field label --positive-value good). Every example lands in the held-out split when the
SHA-1 of its id falls in the first --val-fraction of the hash range, so the split is the same on every run. The job
trains on the rest (fastText, thread=1 and a fixed seed: reproducible), reports precision / recall / F1 of the
positive class on the held-out split at --threshold, and writes the model (.bin) and a JSON report.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import hashlib
import json
import time

import yaml

from jobs.cli import UserError, run_main
from jobs.stage import log


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train_classifier", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("examples from lake tables")
    src.add_argument("--lake", default="./lake", help="lake root for --positive-table/--negative-table")
    src.add_argument("--positive-table", help="table holding good examples (columns id, text)")
    src.add_argument("--positive-where", help="Spark SQL condition selecting the good rows of that table")
    src.add_argument("--negative-table", help="table holding bad examples")
    src.add_argument("--negative-where", help="Spark SQL condition selecting the bad rows of that table")
    src.add_argument("--master", default=None, help="Spark master (default local[*]); only used for tables")
    js = p.add_argument_group("examples from JSONL files")
    js.add_argument("--positive-jsonl", help="JSONL file of good examples")
    js.add_argument("--negative-jsonl", help="JSONL file of bad examples")
    js.add_argument("--jsonl", help="one JSONL file with a label field (see --label-field/--positive-value)")
    js.add_argument("--label-field", default="label", help="label field of --jsonl (default label)")
    js.add_argument("--positive-value", default="hq",
                    help="value of --label-field that marks a good example; any other value is bad (default hq)")
    js.add_argument("--text-field", default="text", help="text field of the JSONL files (default text)")
    js.add_argument("--id-field", default="id",
                    help="id field of the JSONL files (default id; missing ids become file:line)")
    out = p.add_argument_group("training and output")
    out.add_argument("--out", required=True, help="where to write the model (.bin)")
    out.add_argument("--report", default=None, help="JSON report path (default: --out with .json)")
    out.add_argument("--val-fraction", type=float, default=0.1,
                     help="share of examples held out for evaluation, chosen by hash of id (default 0.1)")
    out.add_argument("--max-per-class", type=int, default=200000,
                     help="at most this many examples per class, the ones with the smallest id hash (default 200000)")
    out.add_argument("--threshold", type=float, default=0.5,
                     help="P(positive) threshold for the reported precision/recall (default 0.5)")
    out.add_argument("--positive-label", default="hq", help="fastText label of good examples (default hq); "
                     "the filter's filter.classifier.positive_label must match")
    out.add_argument("--negative-label", default="lq", help="fastText label of bad examples (default lq)")
    out.add_argument("--max-chars", type=int, default=10000,
                     help="train on the first N characters of each text (default 10000, as the filter scores)")
    out.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                     help="fastText train_supervised parameter, e.g. --param epoch=10 --param wordNgrams=1 "
                          "(defaults in udfs.classifier.DEFAULT_TRAIN_PARAMS)")
    return p


def _id_hash(doc_id: str) -> str:
    return hashlib.sha1(str(doc_id).encode("utf-8")).hexdigest()


def _from_jsonl(path: str, text_field: str, id_field: str, label_field: str | None = None):
    """Yield (id, text, label_value) from a JSONL file."""
    if not os.path.isfile(path):
        raise UserError(f"JSONL file not found: {path}")
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                raise UserError(f"{path}:{n}: not valid JSON") from None
            text = obj.get(text_field)
            if not isinstance(text, str):
                raise UserError(f"{path}:{n}: field {text_field!r} missing or not a string")
            doc_id = obj.get(id_field)
            doc_id = f"{os.path.basename(path)}:{n}" if doc_id is None else str(doc_id)
            yield doc_id, text, (None if label_field is None else obj.get(label_field))


def _limit(rows, max_n: int):
    """The max_n rows with the smallest id hash (deterministic subsample)."""
    rows = sorted(rows, key=lambda r: _id_hash(r[0]))
    return rows[:max_n]


def _from_table(lake, table: str, where: str | None, max_n: int):
    from pyspark.sql import functions as F

    df = lake.read(table)
    for c in ("id", "text"):
        if c not in df.columns:
            raise UserError(f"table '{table}' has no column {c!r}")
    if where:
        try:
            df = df.where(where)
        except Exception as e:
            raise UserError(f"bad --*-where condition {where!r}: {str(e).splitlines()[0]}") from None
    df = df.select(F.col("id").cast("string").alias("id"), "text").where(F.col("text").isNotNull())
    df = df.orderBy(F.sha1(F.col("id")), "id").limit(max_n)
    return [(r["id"], r["text"]) for r in df.toLocalIterator()]


def load_examples(args) -> list[tuple[str, str, str]]:
    """[(id, text, label)] with label = args.positive_label / args.negative_label."""
    pos, neg = args.positive_label, args.negative_label
    have_tables = bool(args.positive_table or args.negative_table)
    have_files = bool(args.positive_jsonl or args.negative_jsonl)
    if sum([have_tables, have_files, bool(args.jsonl)]) != 1:
        raise UserError("give exactly one source of examples: --positive-table/--negative-table, "
                        "--positive-jsonl/--negative-jsonl, or --jsonl")
    if have_tables:
        if not (args.positive_table and args.negative_table):
            raise UserError("--positive-table and --negative-table go together")
        from jobs.session import get_spark
        from jobs.tables import Lake

        lake = Lake(get_spark("lmrefinery-train-classifier", master=args.master), args.lake)
        p = _from_table(lake, args.positive_table, args.positive_where, args.max_per_class)
        n = _from_table(lake, args.negative_table, args.negative_where, args.max_per_class)
        return [(i, t, pos) for i, t in p] + [(i, t, neg) for i, t in n]
    if have_files:
        if not (args.positive_jsonl and args.negative_jsonl):
            raise UserError("--positive-jsonl and --negative-jsonl go together")
        p = _limit(_from_jsonl(args.positive_jsonl, args.text_field, args.id_field), args.max_per_class)
        n = _limit(_from_jsonl(args.negative_jsonl, args.text_field, args.id_field), args.max_per_class)
        return [(i, t, pos) for i, t, _ in p] + [(i, t, neg) for i, t, _ in n]
    rows = list(_from_jsonl(args.jsonl, args.text_field, args.id_field, args.label_field))
    p = _limit([r for r in rows if str(r[2]) == str(args.positive_value)], args.max_per_class)
    n = _limit([r for r in rows if str(r[2]) != str(args.positive_value)], args.max_per_class)
    return [(i, t, pos) for i, t, _ in p] + [(i, t, neg) for i, t, _ in n]


def _parse_params(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--param expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def main(argv=None):
    from udfs.classifier import DEFAULT_TRAIN_PARAMS, evaluate, score_texts, split_of, train_classifier

    args = build_parser().parse_args(argv)
    if not 0.0 < args.val_fraction < 1.0:
        raise UserError("--val-fraction must be between 0 and 1")
    if args.positive_label == args.negative_label:
        raise UserError("--positive-label and --negative-label must differ")
    params = {**DEFAULT_TRAIN_PARAMS, **_parse_params(args.param)}
    t0 = time.time()
    examples = load_examples(args)
    # one id in both classes would leak between splits in a confusing way; keep its first occurrence
    seen, uniq = set(), []
    for ex in examples:
        if ex[0] not in seen:
            seen.add(ex[0])
            uniq.append(ex)
    examples = uniq
    train = [e for e in examples if split_of(e[0], args.val_fraction) == "train"]
    val = [e for e in examples if split_of(e[0], args.val_fraction) == "val"]
    counts = {split: {lab: sum(1 for e in rows if e[2] == lab) for lab in (args.positive_label, args.negative_label)}
              for split, rows in (("train", train), ("val", val))}
    log(f"train_classifier: {len(examples)} examples; split counts {counts}")
    for lab in (args.positive_label, args.negative_label):
        if counts["train"][lab] == 0:
            raise UserError(f"no training examples labelled {lab!r}; check the inputs")

    model = train_classifier([e[1] for e in train], [e[2] for e in train], params, max_chars=args.max_chars)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)) or ".", exist_ok=True)
    tmp_out = args.out + ".tmp"
    model.save_model(tmp_out)
    os.replace(tmp_out, args.out)

    def metrics(rows):
        if not rows:
            return None
        scores = score_texts([e[1] for e in rows], model, args.positive_label, args.max_chars)
        return evaluate(scores, [e[2] == args.positive_label for e in rows], args.threshold)

    with open(args.out, "rb") as f:
        model_sha = hashlib.sha256(f.read()).hexdigest()
    report = {
        "model": os.path.abspath(args.out), "model_sha256": model_sha,
        "positive_label": args.positive_label, "negative_label": args.negative_label,
        "val_fraction": args.val_fraction, "split": "sha1(id) < val_fraction", "counts": counts,
        "params": params, "max_chars": args.max_chars,
        "heldout": metrics(val), "train": metrics(train),
        "inputs": {k: getattr(args, k) for k in ("positive_table", "positive_where", "negative_table",
                                                 "negative_where", "positive_jsonl", "negative_jsonl", "jsonl",
                                                 "label_field", "positive_value")
                   if getattr(args, k) is not None},
        "seconds": round(time.time() - t0, 3),
    }
    report_path = args.report or os.path.splitext(args.out)[0] + ".json"
    with open(report_path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    h = report["heldout"]
    if h is None:
        log("train_classifier: held-out split is empty; no evaluation (raise --val-fraction or add examples)")
    else:
        log(f"train_classifier: held-out n={h['n']} precision={h['precision']:.4f} recall={h['recall']:.4f} "
            f"f1={h['f1']:.4f} at threshold {args.threshold}")
    log(f"train_classifier: model {args.out}, report {report_path}")
    return 0


if __name__ == "__main__":
    from udfs.common import exit_process

    exit_process(run_main("train_classifier", main))
