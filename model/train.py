"""Train the GPT on packed shards.

    python model/train.py --data <lake>/packed [--config conf/model/tiny.yaml] [--set k=v ...]
    torchrun --nproc_per_node=N model/train.py --data <lake>/packed [--config ...] [--set ...]

Single process, or DDP under torchrun (gloo on CPU, NCCL on GPU). AdamW with linear warmup + cosine decay, gradient
clipping and accumulation, bf16 autocast on GPU (`dtype`: float16 adds a GradScaler). Every `log_interval` steps a
line and a metrics.jsonl row: loss, gradient norm, learning rate, tokens seen, epochs of the train split, tokens/s,
MFU (6N plus the attention term), elapsed time and ETA; a loss far above its recent mean is flagged as a spike.
Every `eval_interval` steps the val split is evaluated (loss, perplexity, bits per byte). Checkpoints (`<out_dir>/ckpt.pt`) hold model, optimiser, step, data cursor and every
rank's RNG state, so a resumed run continues exactly where it stopped (bitwise on CPU). Writes
`<out_dir>/metrics.jsonl`, `<out_dir>/loss.png` and `<out_dir>/summary.json`.

Exit codes: 0 done, 2 bad input (config, data, checkpoint), 3 training stopped (NaN or divergence).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from udfs.common import REPO_ROOT, ConfigError, UserError, apply_overrides, load_yaml, nearest, run_main  # noqa: E402,E501
from model.data import (BatchLoader, PackedSplit, ShardError, bytes_per_token, eval_windows, load_manifest,  # noqa: E402
                        to_device)
from model.gpt import ATTENTION_KINDS, GPT, GPTConfig  # noqa: E402

DEFAULT_CONFIG = os.path.join(REPO_ROOT, "conf", "model", "tiny.yaml")

# Every accepted key with its default. conf/model/*.yaml documents them.
DEFAULTS: dict = {
    # model
    "n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 128, "dropout": 0.0, "bias": True,
    "vocab_pad_to": 64, "doc_mask": False, "attention": "auto",
    # data
    "batch_size": 16, "grad_accum": 1, "sampling": "random", "shuffle": True, "verify": "full",
    # optimisation
    "max_steps": 1000, "lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 100, "lr_decay_steps": None,
    "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "grad_clip": 1.0,
    # evaluation, logging, checkpoints
    "eval_interval": 100, "eval_windows": 64, "log_interval": 10, "ckpt_interval": None,
    "out_dir": "out/tiny", "resume": "auto", "stop_at_step": None,
    # run
    "seed": 1337, "device": "auto", "dtype": "auto", "compile": False, "num_threads": None, "peak_flops": None,
    # health checks
    "flat_check_step": None, "flat_frac": 0.95, "divergence_margin": 2.0,
    "spike_window": 20, "spike_sigma": 4.0, "spike_action": "warn",
}
DTYPES = {"auto": None, "float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
# Keys that must match between a checkpoint and the run resuming it (they change the trajectory's meaning).
RESUME_MUST_MATCH = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_pad_to", "doc_mask", "batch_size",
                     "grad_accum", "sampling", "shuffle", "seed")
_TYPES = {"lr_decay_steps": int, "ckpt_interval": int, "stop_at_step": int, "num_threads": int,
          "peak_flops": float, "flat_check_step": int}


class TrainingStopped(RuntimeError):
    """Loss became NaN/inf or diverged; training stops with a message."""


# ---------------------------------------------------------------------------------------------------------------
# config, metrics, schedule
# ---------------------------------------------------------------------------------------------------------------
def _coerce(key: str, value):
    default = DEFAULTS[key]
    typ = type(default) if default is not None else _TYPES.get(key)
    if value is None or typ is None or isinstance(value, typ) and not (typ is int and isinstance(value, bool)):
        return value
    try:
        if typ is bool:
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
            raise ValueError
        if typ is int:
            f = float(value)
            if f != int(f):
                raise ValueError
            return int(f)
        return typ(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config key {key!r}: cannot use {value!r} as {typ.__name__}") from None


def build_config(path: str | None, overrides: list[str] | None) -> dict:
    """DEFAULTS <- YAML file <- `--set k=v` overrides; unknown keys are an error."""
    loaded = apply_overrides(load_yaml(path or DEFAULT_CONFIG), overrides)
    unknown = sorted(set(loaded) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]!r}{nearest(unknown[0], DEFAULTS)}"
                          + (f" (and {len(unknown) - 1} more unknown)" if len(unknown) > 1 else ""))
    cfg = dict(DEFAULTS)
    cfg.update({k: _coerce(k, v) for k, v in loaded.items()})
    if cfg["sampling"] not in ("random", "sequential"):
        raise ConfigError(f"sampling must be random or sequential, got {cfg['sampling']!r}")
    if str(cfg["dtype"]) not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {cfg['dtype']!r}")
    if cfg["attention"] not in ATTENTION_KINDS:
        raise ConfigError(f"attention must be {', '.join(ATTENTION_KINDS)}, got {cfg['attention']!r}")
    if cfg["spike_action"] not in ("warn", "stop"):
        raise ConfigError(f"spike_action must be warn or stop, got {cfg['spike_action']!r}")
    dev = str(cfg["device"])
    if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {dev!r}")
    for k in ("max_steps", "batch_size", "block_size", "grad_accum", "eval_interval", "log_interval"):
        if cfg[k] < 1:
            raise ConfigError(f"{k} must be >= 1, got {cfg[k]}")
    return cfg


def perplexity(loss_nats: float) -> float:
    return math.exp(loss_nats)


def bits_per_byte(loss_nats: float, bytes_per_tok: float) -> float:
    """Per-token loss in nats -> bits per UTF-8 byte of text."""
    return loss_nats / math.log(2) / bytes_per_tok


def get_lr(step: int, cfg: dict) -> float:
    """Linear warmup to `lr` over `warmup_steps`, cosine decay to `min_lr` at `lr_decay_steps` (default
    max_steps), then constant."""
    lr, min_lr, warm = cfg["lr"], cfg["min_lr"], cfg["warmup_steps"]
    decay = cfg["lr_decay_steps"] or cfg["max_steps"]
    if step < warm:
        return lr * (step + 1) / (warm + 1)
    if step >= decay:
        return min_lr
    ratio = (step - warm) / max(1, decay - warm)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def autocast_dtype(cfg: dict, device: torch.device):
    """The autocast dtype (None = fp32): `auto` is bf16 on CUDA (fp16 where the GPU has no bf16), fp32 on CPU."""
    want = DTYPES[str(cfg["dtype"])]
    if cfg["dtype"] == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if want == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"dtype {cfg['dtype']!r}: {torch.cuda.get_device_name(device)} has no bfloat16; "
                          f"use float16")
    return None if want == torch.float32 else want


class SpikeDetector:
    """A logged train loss more than `sigma` standard deviations above the mean of the previous `window` logged
    losses (and at least 5% above it) is a spike; spikes do not enter the window."""

    def __init__(self, window: int, sigma: float):
        self.window, self.sigma, self.recent = int(window), float(sigma), []

    def check(self, loss: float) -> tuple[bool, float | None]:
        spike, mean = False, None
        if len(self.recent) >= max(3, self.window // 2):
            mean = sum(self.recent) / len(self.recent)
            std = math.sqrt(sum((v - mean) ** 2 for v in self.recent) / len(self.recent))
            spike = loss > mean + self.sigma * std and loss > 1.05 * mean
        if not spike:
            self.recent = (self.recent + [loss])[-self.window:]
        return spike, mean


def _fmt_s(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def default_peak_flops(device: torch.device) -> tuple[float, str]:
    """Peak FLOP/s of one device for MFU: dense bf16 tensor-core figures for known GPUs; on CPU a rough
    guess (threads x 2.5 GHz x 32 fp32 FLOP/cycle for AVX2 FMA)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, val in (("H100", 989e12), ("H200", 989e12), ("A100", 312e12), ("L4", 121e12), ("A10", 125e12),
                         ("V100", 125e12), ("4090", 165e12)):
            if key in name:
                return val, f"{name} bf16 dense peak"
        return 100e12, f"{name}: unknown GPU, assumed 100 TFLOP/s"
    return torch.get_num_threads() * 2.5e9 * 32, "CPU: rough estimate (threads x 2.5 GHz x 32 FLOP/cycle)"


# ---------------------------------------------------------------------------------------------------------------
# distributed helpers
# ---------------------------------------------------------------------------------------------------------------
def setup_distributed(cfg: dict):
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    want = str(cfg["device"])
    use_cuda = torch.cuda.is_available() if want == "auto" else want.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
        raise ConfigError(f"device {want!r}: CUDA is not available on this host (torch {torch.__version__}, "
                          f"{build}); use device=cpu or auto")
    if use_cuda and want.startswith("cuda:") and int(want[5:]) >= torch.cuda.device_count():
        raise ConfigError(f"device {want!r}: this host has {torch.cuda.device_count()} CUDA device(s)")
    if use_cuda:
        device = torch.device(f"cuda:{local_rank}" if world > 1 or want in ("auto", "cuda") else want)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        threads = cfg["num_threads"] or max(1, (os.cpu_count() or 1) // local_world)
        torch.set_num_threads(threads)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", device_id=device if use_cuda else None)
    return rank, world, device


def all_mean(values: list[float], device, world: int) -> list[float]:
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / world).tolist()


def params_sha256(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in model.state_dict().items():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# evaluation, checkpoints, outputs
# ---------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: GPT, val: PackedSplit, cfg: dict, rank: int, world: int, device, autocast) -> float:
    """Token-mean val loss (nats) over the fixed evaluation windows, summed across ranks."""
    model.eval()
    T, B = cfg["block_size"], cfg["batch_size"]
    starts = eval_windows(val, T, cfg["eval_windows"], rank, world)
    tot = torch.zeros(2, dtype=torch.float64, device=device)
    for i in range(0, len(starts), B):
        buf = to_device(np.stack([val.read(int(s), T + 1) for s in starts[i:i + B]]), device)
        x, y = buf[:, :-1], buf[:, 1:]
        with autocast:
            logits, _ = model(x, y)
        tot[0] += F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), reduction="sum")
        tot[1] += y.numel()
    if world > 1:
        dist.all_reduce(tot)
    model.train()
    return float(tot[0] / tot[1])


def gather_rng(device, world: int) -> dict:
    mine = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        mine["cuda"] = torch.cuda.get_rng_state(device)
    if world == 1:
        return {"per_rank": [mine]}
    allr = [None] * world
    dist.all_gather_object(allr, mine)
    return {"per_rank": [{k: v.cpu() for k, v in r.items()} for r in allr]}


def save_checkpoint(path: str, ckpt: dict) -> None:
    tmp = path + ".tmp"
    torch.save(ckpt, tmp)
    os.replace(tmp, path)  # a crash mid-write never leaves a half checkpoint behind


def load_checkpoint(path: str) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is a user-facing error
        raise UserError(f"cannot load checkpoint {path}: {str(e).splitlines()[0]}") from None


def write_plot(out_dir: str, rows: list[dict], ln_v: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    tr = [(r["step"], r["train_loss"]) for r in rows if r.get("train_loss") is not None]
    va = [(r["step"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
    if tr:
        ax.plot(*zip(*tr), label="train loss", lw=1)
    if va:
        ax.plot(*zip(*va), "o-", label="val loss", lw=1.5, ms=3)
    ax.axhline(ln_v, ls="--", c="gray", lw=0.8, label=f"ln(V) = {ln_v:.2f} (uniform)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "loss.png"), dpi=100)
    plt.close(fig)


def _read_metrics(path: str, upto_step: int) -> list[dict]:
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    if r["step"] <= upto_step:
                        rows.append(r)
    return rows


# ---------------------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--data", required=True, help="packed folder (manifest.json + shards), e.g. lake/packed")
    p.add_argument("--config", default=None, help="model/training YAML (default conf/model/tiny.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set max_steps=200 (repeatable)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cfg = build_config(args.config, args.overrides)
    rank, world, device = setup_distributed(cfg)
    finished = False
    try:
        code = _train(args, cfg, rank, world, device)
        finished = True
        return code
    except TrainingStopped as e:
        if rank == 0:
            print(f"train: stopped: {e}", file=sys.stderr)
        return 3
    finally:
        if world > 1 and dist.is_initialized():
            shutdown_distributed(finished)


def shutdown_distributed(finished: bool) -> None:
    """End the process group while the interpreter is fully alive. DDP's reducer keeps the gloo group alive through
    reference cycles; left to interpreter finalisation, its C++ worker threads now and then aborted a rank that had
    already finished ("terminate called without an active exception", seen once in CI). After a normal finish the
    barrier keeps any rank from closing its sockets while a peer still writes its summary; after a failure there is
    no barrier, since a peer may be waiting in another collective."""
    if finished:
        dist.barrier()
    gc.collect()
    dist.destroy_process_group()
    gc.collect()


def _train(args, cfg: dict, rank: int, world: int, device: torch.device) -> int:
    master = rank == 0
    log = print if master else (lambda *a, **k: None)
    out_dir = cfg["out_dir"]
    ckpt_path = os.path.join(out_dir, "ckpt.pt")
    metrics_path = os.path.join(out_dir, "metrics.jsonl")
    if master:
        os.makedirs(out_dir, exist_ok=True)

    # data
    manifest = load_manifest(args.data)
    train_data = PackedSplit(args.data, "train", manifest, verify=cfg["verify"])
    val_data = PackedSplit(args.data, "val", manifest, verify=cfg["verify"])
    bpt = bytes_per_token(manifest, "val")
    if (val_data.n_tokens - 1) // cfg["block_size"] < 1:
        raise ShardError(f"val split has {val_data.n_tokens} tokens, fewer than block_size+1")
    loader = BatchLoader(train_data, cfg["block_size"], cfg["batch_size"], rank, world, cfg["seed"],
                         cfg["sampling"], cfg["shuffle"], device)
    V = train_data.vocab_size
    ln_v = math.log(V)

    # model (same init on every rank; DDP also broadcasts rank 0's parameters)
    torch.manual_seed(cfg["seed"])
    gconf = GPTConfig(vocab_size=V, block_size=cfg["block_size"], n_layer=cfg["n_layer"], n_head=cfg["n_head"],
                      n_embd=cfg["n_embd"], dropout=cfg["dropout"], bias=cfg["bias"],
                      vocab_pad_to=cfg["vocab_pad_to"], doc_mask=cfg["doc_mask"], eos_id=train_data.eos_id,
                      attention=cfg["attention"])
    model = GPT(gconf).to(device)
    opt = model.configure_optimizer(cfg["weight_decay"], cfg["lr"], (cfg["beta1"], cfg["beta2"]), device.type)
    torch.manual_seed(cfg["seed"] + rank)  # dropout streams differ per rank

    step, best_val, rows, scaler_state = 0, None, [], None
    resume = cfg["resume"]
    resume_path = ckpt_path if resume == "auto" else (None if resume in ("never", None, False) else resume)
    if resume_path and os.path.exists(resume_path):
        ck = load_checkpoint(resume_path)
        for k in RESUME_MUST_MATCH:
            if ck["config"].get(k) != cfg[k]:
                raise UserError(f"checkpoint {resume_path} was trained with {k}={ck['config'].get(k)!r}, this run "
                                f"has {cfg[k]!r}; use another out_dir or --set resume=never")
        if ck["world_size"] != world:
            raise UserError(f"checkpoint {resume_path} was written by {ck['world_size']} ranks, this run has {world}")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        if ck.get("scaler") is not None:
            scaler_state = ck["scaler"]
        loader.load_state_dict(ck["data_cursor"])
        step, best_val = int(ck["step"]), ck.get("best_val_loss")
        rs = ck["rng"]["per_rank"][rank]
        torch.set_rng_state(rs["cpu"])
        if device.type == "cuda" and "cuda" in rs:
            torch.cuda.set_rng_state(rs["cuda"], device)
        rows = _read_metrics(metrics_path, step)
        log(f"resumed from {resume_path} at step {step}")
    if master:  # drop metrics logged after the checkpoint (by an interrupted run) so steps stay unique
        with open(metrics_path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)

    raw_model = model
    if cfg["compile"]:
        model = torch.compile(model)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    amp_dtype = autocast_dtype(cfg, device)
    amp_name = str(amp_dtype or "off").replace("torch.", "")
    autocast = (torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None
                else contextlib.nullcontext())
    # fp16 has too few exponent bits for small gradients: scale the loss, unscale before clipping, skip steps
    # whose gradients overflowed (torch.amp.GradScaler). bf16 and fp32 need none.
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    if scaler_state is not None and scaler.is_enabled():
        scaler.load_state_dict(scaler_state)

    peak, peak_note = (cfg["peak_flops"], "configured") if cfg["peak_flops"] else default_peak_flops(device)
    n_params = raw_model.num_params()
    flops_per_token = raw_model.flops_per_token()
    tokens_per_step = cfg["batch_size"] * cfg["block_size"] * cfg["grad_accum"] * world
    flat_check = cfg["flat_check_step"] or max(1, min(200, cfg["max_steps"] // 2))
    log(f"model: {n_params / 1e6:.2f}M params (vocab {V}, padded {gconf.padded_vocab_size}) | {world} rank(s) on "
        f"{device.type} | {tokens_per_step:,} tokens/step | train {train_data.n_tokens:,} tokens, "
        f"val {val_data.n_tokens:,} | ln(V) = {ln_v:.3f} | autocast {amp_name}")
    log(f"MFU against peak {peak:.3g} FLOP/s per rank ({peak_note})")

    def checkpoint():
        rng = gather_rng(device, world)  # collective: every rank calls it
        if master:
            save_checkpoint(ckpt_path, {
                "model": raw_model.state_dict(), "optimizer": opt.state_dict(), "step": step, "config": cfg,
                "model_args": gconf.to_dict(), "data_cursor": loader.state_dict(), "rng": rng,
                "world_size": world, "best_val_loss": best_val, "data_dir": os.path.abspath(args.data),
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "tokenizer": manifest["tokenizer"]})

    def last_ckpt():
        return (f"Last checkpoint: {ckpt_path}" if os.path.exists(ckpt_path) else "No checkpoint was written yet.")

    def emit(row):
        rows.append(row)
        if master:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")

    ckpt_every = cfg["ckpt_interval"] or cfg["eval_interval"]
    stop_at = min(cfg["stop_at_step"] or cfg["max_steps"], cfg["max_steps"])
    warned_flat, status = False, 0
    loss_acc, n_acc, t_last, tok_last = torch.zeros((), device=device), 0, time.perf_counter(), 0
    spikes, n_spikes = SpikeDetector(cfg["spike_window"], cfg["spike_sigma"]), 0
    t_start, step_start = time.perf_counter(), step
    grad_norm = torch.zeros((), device=device)
    try:
        while step < stop_at:
            lr = get_lr(step, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            for micro in range(cfg["grad_accum"]):
                x, y = loader.next()
                sync = world == 1 or micro == cfg["grad_accum"] - 1
                ctx = contextlib.nullcontext() if sync else model.no_sync()
                with ctx:
                    with autocast:
                        _, loss = model(x, y)
                    scaler.scale(loss / cfg["grad_accum"]).backward()
                loss_acc = loss_acc + loss.detach().float()  # stays on the device: no sync per step
                n_acc += 1
            scaler.unscale_(opt)
            # the global gradient norm before clipping (max_norm inf measures without clipping)
            grad_norm = torch.nn.utils.clip_grad_norm_(
                model.parameters(), cfg["grad_clip"] if cfg["grad_clip"] > 0 else float("inf"))
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            step += 1
            tok_last += tokens_per_step

            evaluating = step % cfg["eval_interval"] == 0 or step == stop_at
            if step % cfg["log_interval"] == 0 or evaluating:
                train_loss = all_mean([float(loss_acc) / n_acc], device, world)[0]
                loss_acc, n_acc = torch.zeros((), device=device), 0
                dt = time.perf_counter() - t_last
                tps = tok_last / dt
                elapsed = time.perf_counter() - t_start
                eta = elapsed / max(1, step - step_start) * (stop_at - step)
                tokens_seen = step * tokens_per_step
                row = {"step": step, "train_loss": train_loss, "grad_norm": float(grad_norm), "lr": lr,
                       "tokens_seen": tokens_seen, "epoch": tokens_seen / train_data.n_tokens,
                       "tokens_per_s": tps, "mfu": flops_per_token * tps / (peak * world),
                       "elapsed_s": elapsed, "eta_s": eta}
                if scaler.is_enabled():
                    row["loss_scale"] = float(scaler.get_scale())
                t_last, tok_last = time.perf_counter(), 0
                msg = (f"step {step}/{cfg['max_steps']} | loss {train_loss:.4f} | gnorm {row['grad_norm']:.3f} | "
                       f"lr {lr:.2e} | {tokens_seen:,} tok (epoch {row['epoch']:.3f}) | {tps:,.0f} tok/s | "
                       f"mfu {100 * row['mfu']:.2f}% | {_fmt_s(elapsed)} elapsed, ETA {_fmt_s(eta)}")
                if not math.isfinite(train_loss):
                    emit(row)
                    raise TrainingStopped(f"train loss is {train_loss} at step {step} (lr {lr:.2e}); lower lr or "
                                          f"check the data. {last_ckpt()}")
                if step > cfg["warmup_steps"] and train_loss > ln_v + cfg["divergence_margin"]:
                    emit(row)
                    raise TrainingStopped(f"diverged: train loss {train_loss:.3f} at step {step} is above "
                                          f"ln(V)+{cfg['divergence_margin']} = {ln_v + cfg['divergence_margin']:.3f} "
                                          f"(a uniform guess scores ln(V)); lower lr. {last_ckpt()}")
                spike, mean = spikes.check(train_loss)
                if spike:
                    n_spikes += 1
                    row["spike"] = True
                    msg += f" | SPIKE (recent mean {mean:.4f})"
                    if cfg["spike_action"] == "stop":
                        emit(row)
                        raise TrainingStopped(f"loss spike: train loss {train_loss:.4f} at step {step} against a "
                                              f"recent mean of {mean:.4f} (spike_sigma {cfg['spike_sigma']}); "
                                              f"lower lr or check the data at this point. {last_ckpt()}")
                if evaluating:
                    vl = evaluate(raw_model, val_data, cfg, rank, world, device, autocast)
                    row.update(val_loss=vl, val_ppl=perplexity(vl), val_bpb=bits_per_byte(vl, bpt))
                    best_val = vl if best_val is None else min(best_val, vl)
                    msg += f" | val loss {vl:.4f} ppl {row['val_ppl']:.2f} bpb {row['val_bpb']:.3f}"
                    t_last = time.perf_counter()  # evaluation time is not training throughput
                log(msg, flush=True)
                emit(row)
                if not warned_flat and step >= flat_check and train_loss > cfg["flat_frac"] * ln_v:
                    warned_flat = True
                    log(f"WARNING: loss {train_loss:.3f} is still near ln(V) = {ln_v:.3f} at step {step}: the model "
                        f"is barely better than uniform (learning rate, data or tokenizer problem?)", flush=True)
            if step % ckpt_every == 0 or step == stop_at:
                checkpoint()
    except TrainingStopped:
        status = 3
        raise
    finally:
        if master and rows:
            write_plot(out_dir, rows, ln_v)

    sums = [params_sha256(raw_model)]
    if world > 1:
        allh = [None] * world
        dist.all_gather_object(allh, sums[0])
        sums = allh
    last_val = next((r for r in reversed(rows) if "val_loss" in r), {})
    if master:
        summary = {"step": step, "max_steps": cfg["max_steps"], "finished": step >= cfg["max_steps"],
                   "world_size": world, "params": n_params, "val_loss": last_val.get("val_loss"),
                   "val_ppl": last_val.get("val_ppl"), "val_bpb": last_val.get("val_bpb"),
                   "bytes_per_token_val": bpt, "ln_vocab": ln_v, "param_sha256_per_rank": sums,
                   "tokens_seen": step * tokens_per_step, "epochs": step * tokens_per_step / train_data.n_tokens,
                   "loss_spikes": n_spikes, "autocast": amp_name,
                   "status": status}
        with open(os.path.join(out_dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    if len(set(sums)) != 1:
        raise RuntimeError(f"ranks hold different parameters after training: {sums}")
    log(f"done at step {step}; outputs in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main("train", main))
