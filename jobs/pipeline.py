"""Run every stage in order on one lake: ingest -> filter -> dedup -> decontaminate -> mix -> pack, then (optionally)
a short training run, a text sample and the HTML report.

Each stage decides for itself whether it already ran on its current input version with the same config (the
`metrics` table); such stages are skipped, so re-running the pipeline after a crash resumes where it stopped.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import importlib
import subprocess
import time

from jobs import storage
from jobs.cli import UserError, run_main
from jobs.config import load_config
from jobs.session import REPO_ROOT, get_spark
from jobs.stage import PIPELINE as STAGES

DESCRIPTION = """\
Run the whole pipeline on one lake, skipping stages that already ran on the same input and config.

Stages: jobs.stage.PIPELINE (ingest, filter, dedup, decontaminate, mix, pack), or the subset in `pipeline.stages` /
--stages, always in that order. After pack, unless
--no-train: a short CPU training run (`pipeline.train`), a text sample from it, and `<lake>/report.html`.
Before mix (`pipeline.tokenizer`): a byte-level BPE trained on `decontaminated` (jobs/train_tokenizer.py, 8k
tokens by default) into <lake>/tokenizer/bpe.json; mix counts real tokens with it and pack packs with it, so the
mixture's token shares are those of the shards. --set pack.tokenizer=gpt2 (or pipeline.tokenizer.train=false)
uses that tokenizer instead.
Every --set KEY=VALUE is passed to every stage, e.g. --set mix.strategy=temperature --set pack.tokenizer=gpt2.

examples:
  python jobs/pipeline.py --lake ./lake
  python jobs/pipeline.py --lake ./lake --stages ingest,filter,dedup --no-train
"""


def build_parser():
    import argparse

    p = argparse.ArgumentParser(prog="pipeline", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lake", default="./lake", help="lake root folder (default ./lake)")
    p.add_argument("--conf", default=None, help="pipeline config YAML (default conf/pipeline.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override passed to every stage (repeatable)")
    p.add_argument("--stages", default=None, help="comma-separated subset of stages to run, in pipeline order")
    p.add_argument("--sources", default=None, help="sources YAML for ingest (default ingest.sources: "
                   "conf/sources.yaml)")
    p.add_argument("--master", default=None, help="Spark master when run with plain python (default local[*])")
    p.add_argument("--force", action="store_true", help="run every stage even if it already ran")
    p.add_argument("--no-train", action="store_true", help="stop after pack (no training, sample or report)")
    p.add_argument("--train-steps", type=int, default=None, help="override pipeline.train.max_steps")
    return p


def banner(i, n, name, msg=""):
    print(f"\n=== [{i}/{n}] {name} {msg}".rstrip(), file=sys.stderr, flush=True)


def stage_argv(args):
    argv = ["--lake", args.lake]
    if args.conf:
        argv += ["--conf", args.conf]
    for o in args.overrides:
        argv += ["--set", o]
    if args.force:
        argv += ["--force"]
    return argv


def pack_tokenizer_given(overrides) -> bool:
    """Whether the command line names pack.tokenizer (then the pipeline trains no BPE and nothing picks one)."""
    return any(o.split("=", 1)[0].strip() == "pack.tokenizer" for o in overrides)


def tokenizer_file(tok_cfg: dict) -> str:
    """The pipeline's BPE file relative to the lake (`pipeline.tokenizer.out`)."""
    return str(tok_cfg.get("out") or "tokenizer/bpe.json")


def tokenizer_step(args, lake: str, tok_cfg: dict) -> str | None:
    """Train the pipeline's BPE (`pipeline.tokenizer`, sizes from the `train_tokenizer` section) on its input
    table, unless the file already holds a tokenizer of that table version and settings; returns its path (None
    when off). Mix then counts real tokens with it and pack packs with it: one tokenizer for both."""
    import hashlib
    import json

    from jobs.config import load_config
    from jobs.session import get_spark
    from jobs.stage import log
    from jobs.tables import Lake

    if not tok_cfg.get("train", True):
        return None
    if pack_tokenizer_given(args.overrides):
        log("pipeline: pack.tokenizer is set on the command line; not training a tokenizer")
        return None
    table = str(tok_cfg.get("input_table") or "decontaminated")
    rel = tokenizer_file(tok_cfg)
    record = None
    if storage.is_remote(lake):
        # the tokenizer file is read by path: train it into local scratch (one folder per lake) and keep a copy
        # in the lake for the record
        import tempfile

        base = os.environ.get("LMR_SCRATCH") or tempfile.gettempdir()
        out = os.path.join(base, "lmrefinery-tokenizer", hashlib.sha1(lake.encode()).hexdigest()[:16],
                           os.path.basename(rel))
        record = storage.join(lake, rel)
    else:
        out = os.path.join(lake, rel)
    version = Lake(get_spark("lmrefinery-pipeline", master=args.master), lake).version(table)
    if version is None:
        raise UserError(f"pipeline.tokenizer.input_table: table '{table}' not found under lake {lake}")
    section = load_config(args.conf, args.overrides).get("train_tokenizer") or {}
    key = hashlib.sha256(json.dumps({"table": table, "version": version, "cfg": section},
                                    sort_keys=True).encode()).hexdigest()
    stamp = out + ".key"
    if not args.force and os.path.exists(out) and os.path.exists(stamp) and open(stamp).read().strip() == key:
        log(f"pipeline: {out} already holds the tokenizer of {table} v{version} with these settings; skipping")
        return out
    os.makedirs(os.path.dirname(out), exist_ok=True)
    rc = importlib.import_module("jobs.train_tokenizer").main(stage_argv(args) + ["--input-table", table,
                                                                                "--out", out])
    if rc:
        raise UserError(f"train_tokenizer exited with code {rc}")
    with open(stamp, "w") as f:
        f.write(key + "\n")
    if record:
        with open(out, "rb") as f:
            storage.write_bytes(record, f.read())
        log(f"pipeline: tokenizer trained in {out}, copied to {record}")
    return out


def run_python(cmd, what):
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    rc = subprocess.call(cmd, cwd=REPO_ROOT)
    if rc != 0:
        raise UserError(f"{what} failed with exit code {rc}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.sources:
        if not os.path.isfile(args.sources):
            raise UserError(f"--sources: no such file {args.sources}")
        args.overrides = list(args.overrides) + [f"ingest.sources={os.path.abspath(args.sources)}"]
    cfg = load_config(args.conf, args.overrides)
    pcfg = cfg.get("pipeline", {}) or {}
    stages = pcfg.get("stages") or STAGES
    if isinstance(stages, str):
        stages = [stages]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise UserError(f"pipeline.stages: unknown stage(s) {', '.join(map(str, bad))}; stages are {', '.join(STAGES)}")
    if args.stages:
        wanted = [s.strip() for s in args.stages.split(",") if s.strip()]
        unknown = [s for s in wanted if s not in STAGES]
        if unknown:
            raise UserError(f"unknown stage(s) {', '.join(unknown)}; stages are {', '.join(STAGES)}")
        stages = [s for s in STAGES if s in wanted]
    else:
        stages = [s for s in STAGES if s in stages]
    tcfg = pcfg.get("train", {}) or {}
    train = not args.no_train and tcfg.get("enabled", True)
    total = len(stages) + (3 if train else 0)
    lake = storage.normalise(args.lake)
    if train and storage.is_remote(lake):
        raise UserError(f"--lake {lake}: the training run reads its shards from a local folder; run the stages "
                        f"with --no-train, then copy <lake>/packed down (or mount it) and run model/train.py --data")
    t_all = time.time()
    get_spark("lmrefinery-pipeline", master=args.master)
    timings = []
    tokenizer = None
    for i, name in enumerate(stages, 1):
        if name in ("mix", "pack") and tokenizer is None:
            t0 = time.time()
            tokenizer = tokenizer_step(args, lake, pcfg.get("tokenizer") or {}) or ""
            if tokenizer:
                timings.append(("tokenizer", time.time() - t0))
        banner(i, total, name)
        t0 = time.time()
        mod = importlib.import_module(f"jobs.{name}")
        argv = stage_argv(args) + (["--set", f"pack.tokenizer={tokenizer}"] if tokenizer else [])
        rc = mod.main(argv)
        if rc:
            raise UserError(f"stage {name} exited with code {rc}")
        timings.append((name, time.time() - t0))
        print(f"=== {name} done in {timings[-1][1]:.1f}s", file=sys.stderr, flush=True)

    if train:
        run_dir = os.path.join(lake, tcfg.get("run_dir", "runs/tiny"))
        py = sys.executable
        steps = args.train_steps or tcfg.get("max_steps", 300)
        nproc = int(tcfg.get("nproc", 1))
        sets = [f"out_dir={run_dir}", f"max_steps={steps}"] + list(tcfg.get("overrides", []) or [])
        if os.path.exists(os.path.join(run_dir, "summary.json")) and not args.force:
            banner(len(stages) + 1, total, "train", "(already trained: delete the run dir or use --force)")
        else:
            banner(len(stages) + 1, total, "train", f"({steps} steps, {nproc} process(es))")
            if args.force and os.path.exists(os.path.join(run_dir, "ckpt.pt")):
                sets.append("resume=never")
            t0 = time.time()
            base = ([py, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone"] if nproc > 1
                    else [py])
            cmd = base + [os.path.join(REPO_ROOT, "model", "train.py"), "--data", os.path.join(lake, "packed"),
                          "--config", os.path.join(REPO_ROOT, tcfg.get("config", "conf/model/tiny.yaml"))]
            for s in sets:
                cmd += ["--set", s]
            run_python(cmd, "training")
            timings.append(("train", time.time() - t0))

        banner(len(stages) + 2, total, "sample")
        scfg = pcfg.get("sample", {}) or {}
        run_python([py, os.path.join(REPO_ROOT, "model", "sample.py"), "--ckpt", run_dir,
                    "--data", os.path.join(lake, "packed"), "--prompt", str(scfg.get("prompt", "The")),
                    "--max-tokens", str(scfg.get("max_tokens", 80)), "--num-samples", "1"], "sampling")

        banner(len(stages) + 3, total, "report")
        importlib.import_module("jobs.report").main(["--lake", args.lake, "--run-dir", run_dir])

    print("\n" + "\n".join(f"  {n:<14} {s:7.1f}s" for n, s in timings), file=sys.stderr)
    losses = loud_losses(lake, stages)
    if losses:
        print("\nloud losses (a domain or source lost more than its share; see the metrics table):", file=sys.stderr)
        for line in losses:
            print(f"  {line}", file=sys.stderr)
    print(f"\nlmrefinery: pipeline finished in {time.time() - t_all:.0f}s. Lake: {lake}", file=sys.stderr)
    print(f"  tables:  {', '.join(sorted(d for d, is_dir, _, _ in storage.entries(lake) if is_dir and storage.isdir(storage.join(lake, d, '_delta_log'))))}",
          file=sys.stderr)
    if storage.exists(storage.join(lake, "packed", "manifest.json")):
        print(f"  shards:  {storage.join(lake, 'packed')}", file=sys.stderr)
    if train and os.path.exists(os.path.join(lake, "report.html")):
        print(f"  report:  {os.path.join(lake, 'report.html')}", file=sys.stderr)
    return 0


def loud_losses(lake_root: str, stages) -> list[str]:
    """`extra.loud_losses` of the latest metrics row of each stage, prefixed with the stage."""
    import json

    from jobs.tables import Lake

    lk = Lake(get_spark("lmrefinery-pipeline"), lake_root)
    if not lk.exists("metrics"):
        return []
    latest = {}
    for r in sorted(lk.read_arrow("metrics").to_pylist(), key=lambda r: r["started_at"]):
        latest[r["stage"]] = r
    out = []
    for st in stages:
        extra = json.loads((latest.get(st) or {}).get("extra") or "{}")
        out += [f"{st}: {line}" for line in extra.get("loud_losses") or []]
    return out


if __name__ == "__main__":
    from udfs.common import exit_process

    exit_process(run_main("pipeline", main))
