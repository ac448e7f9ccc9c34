"""DoReMi end to end: pack per domain -> reference and proxy models -> domain weights -> mix.

    python jobs/doremi.py --lake ./lake [--input-table decontaminated] [--steps 200] [--token-budget 5M]
        [--model-config conf/model/tiny.yaml] [--model-set n_layer=2 ...] [--set pack.tokenizer=gpt2 ...]

One command for what took hand work before (Xie et al. 2023; the algorithm is in model/doremi.py):
1. `jobs/pack.py --per-domain`: every domain of the input table into its own packed folder under
   <lake>/packed_domains (same tokenizer, same val split rule as the main pack);
2. model/doremi.py: a reference model on uniform domain weights, then a proxy trained with Group DRO whose
   exponentiated-gradient weights are averaged over its steps; written with their trajectory and the per-domain
   validation loss of both models to <lake>/reports/doremi.json (the report plots the trajectory);
3. `jobs/mix.py --strategy doremi --weights <lake>/reports/doremi.json` on the same input table (--no-mix skips).

On a lake that jobs/pipeline.py made, pack and mix use the BPE it trained (<lake>/tokenizer/bpe.json, or
pipeline.tokenizer.out) unless --set pack.tokenizer=... names another.

Every step is skipped when its inputs and settings are unchanged (--force runs them again). `--set` goes to the
pipeline stages (conf/pipeline.yaml keys), `--model-set` to the DoReMi models (conf/model keys).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jobs import storage  # noqa: E402
from jobs.cli import UserError, run_main  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="doremi", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--lake", required=True, help="lake folder")
    p.add_argument("--input-table", default="decontaminated", help="document table to weigh (default decontaminated)")
    p.add_argument("--conf", default=None, help="pipeline config (default conf/pipeline.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="pipeline config override for the pack and mix stages (repeatable)")
    p.add_argument("--model-config", default=None, help="model config of reference and proxy (default tiny.yaml)")
    p.add_argument("--model-set", dest="model_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="model config override, e.g. --model-set n_layer=2 (repeatable)")
    p.add_argument("--steps", type=int, default=200, help="training steps of the reference and of the proxy")
    p.add_argument("--eta", type=float, default=1.0, help="step size of the exponentiated-gradient update")
    p.add_argument("--smoothing", type=float, default=1e-3, help="mix the weights with uniform by this much")
    p.add_argument("--token-budget", default=None, help="mix: tokens in the mixture (default fit: all available, or less where a domain "
                   "would need more than mix.max_epochs passes)")
    p.add_argument("--no-mix", action="store_true", help="stop after writing the weights")
    p.add_argument("--force", action="store_true", help="run every step again")
    p.add_argument("--master", default=None, help="Spark master (default from conf/spark.yaml)")
    return p


def _stage_argv(a, *extra) -> list[str]:
    argv = ["--lake", a.lake, "--input-table", a.input_table, *extra]
    if a.conf:
        argv += ["--conf", a.conf]
    for o in a.overrides:
        argv += ["--set", o]
    if a.force:
        argv.append("--force")
    return argv


def _lake_tokenizer(a, lake: str) -> str | None:
    """The BPE jobs/pipeline.py trained for this lake (pipeline.tokenizer.out), unless pack.tokenizer is given."""
    from jobs.config import load_config
    from jobs.pipeline import pack_tokenizer_given, tokenizer_file

    if pack_tokenizer_given(a.overrides):
        return None
    tcfg = (load_config(a.conf, a.overrides).get("pipeline") or {}).get("tokenizer") or {}
    if not tcfg.get("train", True):  # as jobs/pipeline.py reads it
        return None
    path = os.path.join(lake, tokenizer_file(tcfg))
    return path if os.path.isfile(path) else None


def main(argv=None) -> int:
    from jobs import mix, pack
    from jobs.session import get_spark
    from jobs.stage import log

    a = build_parser().parse_args(argv)
    if a.steps < 1:
        raise UserError(f"--steps must be >= 1, got {a.steps}")
    lake = storage.normalise(a.lake)
    if storage.is_remote(lake):
        raise UserError(f"--lake {lake}: DoReMi trains on local packed folders; run it on a local lake")
    import torch

    from model.doremi import run_doremi
    from udfs.packed import domain_folders, read_domains
    from model.train import build_config

    cfg = build_config(a.model_config, a.model_overrides)  # config errors before Spark starts
    tok = _lake_tokenizer(a, lake)
    if tok:
        # the pipeline packed and mixed this lake with its own BPE: the per-domain packs, the models and the mix
        # use the same one (GPT-2's 50k vocabulary would also make every step several times slower)
        log(f"doremi: packing with the lake's tokenizer {tok} (--set pack.tokenizer=... chooses another)")
        a.overrides.append(f"pack.tokenizer={tok}")
    get_spark("lmrefinery-doremi", master=a.master)
    packed_dir = os.path.join(lake, "packed_domains")
    rc = pack.main(_stage_argv(a, "--per-domain", "--out", packed_dir))
    if rc:
        raise UserError(f"pack --per-domain exited with code {rc}")

    index = read_domains(packed_dir)
    key = hashlib.sha256(json.dumps({"pack_run": index["stage_run"]["run_key"], "model": cfg, "steps": a.steps,
                                     "eta": a.eta, "smoothing": a.smoothing}, sort_keys=True,
                                    default=str).encode()).hexdigest()
    out = os.path.join(lake, "reports", "doremi.json")
    res = None
    if os.path.exists(out) and not a.force:
        with open(out) as f:
            old = json.load(f)
        if old.get("run_key") == key:
            res = old
            log(f"doremi: {out} already holds the weights of these domains and settings; skipping the training")
    if res is None:
        if cfg["num_threads"]:
            torch.set_num_threads(cfg["num_threads"])
        log(f"doremi: reference and proxy, {a.steps} steps each, on {len(index['domains'])} domains")
        res = run_doremi(domain_folders(packed_dir), cfg, a.steps, a.eta, a.smoothing, log=log)
        res.update(run_key=key, input_table=a.input_table, source=index["source"])
        os.makedirs(os.path.dirname(out), exist_ok=True)
        tmp = out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(res, f, indent=2)
        os.replace(tmp, out)
    names = sorted(res["domain_weights"])
    print(f"{'domain':<20} {'reference w':>11} {'DoReMi w':>9} {'val loss ref':>13} {'val loss proxy':>15}")
    for d in names:
        print(f"{d:<20} {res['reference_weights'][d]:>11.4f} {res['domain_weights'][d]:>9.4f} "
              f"{res['val_loss']['reference'][d]:>13.4f} {res['val_loss']['proxy'][d]:>15.4f}")
    log(f"doremi: weights written to {out}")
    if a.no_mix:
        return 0
    # DoReMi may favour a small domain: by default the mixture is as large as it can be without any domain
    # repeated more than mix.max_epochs times (--token-budget fit), not an error about an infeasible budget
    extra = ["--strategy", "doremi", "--weights", out, "--token-budget", a.token_budget or "fit"]
    rc = mix.main(_stage_argv(a, *extra))
    if rc:
        raise UserError(f"mix --strategy doremi exited with code {rc}")
    return 0


if __name__ == "__main__":
    from udfs.common import exit_process

    exit_process(run_main("doremi", main))
