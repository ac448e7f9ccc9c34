"""Data-loader throughput vs the trainer's consumption, on this machine, in one run.

    python bench/bench_loader.py [--config conf/model/tiny.yaml] [--steps 30] [--threads 1] [--copies 8]

Builds a packed dataset (byte-level tokens of /usr/share/common-licenses, repeated `--copies` times, in shards of
1M tokens) unless `--data DIR` is given, then measures:
  * baseline: the trainer's consumption -- tokens/s of forward + backward + AdamW step of the configured model
    (conf/model/tiny.yaml by default) on this CPU;
  * the loader: tokens/s of BatchLoader.next() (memmap reads, window assembly, tensor conversion) in random and
    sequential mode, for the same batch and block size, single-threaded.
A loader/trainer ratio well above 1 means the loader is never the bottleneck (it runs in the training process
between steps, so its time adds to the step time: 1/ratio is the fraction it costs).
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from model.data import BatchLoader, PackedSplit  # noqa: E402
from model.gpt import GPT, GPTConfig  # noqa: E402
from model.toy_pack import paragraphs_from_files, split_docs, write_packed  # noqa: E402
from model.train import build_config  # noqa: E402


def loader_tps(split: PackedSplit, T: int, B: int, mode: str, seconds: float = 2.0) -> float:
    ld = BatchLoader(split, T, B, seed=1, mode=mode)
    ld.next()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        ld.next()
        n += 1
    return n * B * T / (time.perf_counter() - t0)


def trainer_tps(cfg: dict, vocab: int, loader: BatchLoader, steps: int) -> tuple[float, GPT]:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab, block_size=cfg["block_size"], n_layer=cfg["n_layer"],
                          n_head=cfg["n_head"], n_embd=cfg["n_embd"], dropout=cfg["dropout"], bias=cfg["bias"]))
    opt = model.configure_optimizer(0.1, 1e-3, (0.9, 0.95), "cpu")
    batches = [loader.next() for _ in range(steps + 3)]  # loader time excluded here
    for i, (x, y) in enumerate(batches):
        if i == 3:
            t0 = time.perf_counter()
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps * x.numel() / (time.perf_counter() - t0), model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=None, help="model config (default conf/model/tiny.yaml)")
    p.add_argument("--data", default=None, help="packed folder (default: build one from common-licenses)")
    p.add_argument("--copies", type=int, default=8, help="repeat the licence corpus this many times")
    p.add_argument("--steps", type=int, default=30, help="timed training steps")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the training step")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = build_config(a.config, [])
    T, B = cfg["block_size"], cfg["batch_size"]

    data = a.data
    if data is None:
        data = os.path.join(tempfile.mkdtemp(prefix="bench-loader-"), "packed")
        docs = paragraphs_from_files(sorted(f for f in glob.glob("/usr/share/common-licenses/*") if os.path.isfile(f)))
        write_packed(data, split_docs(docs * a.copies), shard_tokens=1 << 20)
    t0 = time.perf_counter()
    split = PackedSplit(data, "train", verify="full")
    verify_s = time.perf_counter() - t0

    trainer, model = trainer_tps(cfg, split.vocab_size, BatchLoader(split, T, B, seed=2), a.steps)
    torch.set_num_threads(1)
    rnd = loader_tps(split, T, B, "random")
    seq = loader_tps(split, T, B, "sequential")

    print(f"data: {split.n_tokens:,} tokens in {len(split.shards)} shards, vocab {split.vocab_size}; "
          f"manifest check with sha256 took {verify_s:.2f} s ({split.n_tokens * split.dtype.itemsize / verify_s / 1e6:.0f} MB/s)")
    print(f"model: {cfg['n_layer']}x{cfg['n_embd']} ({model.num_params() / 1e6:.2f}M params), "
          f"batch {B} x block {T}, {a.threads} torch threads, CPU")
    print(f"{'measurement':<42}{'tokens/s':>14}{'vs trainer':>12}")
    print(f"{'trainer consumption (baseline: fwd+bwd+step)':<42}{trainer:>14,.0f}{1.0:>11.1f}x")
    print(f"{'loader, random windows (1 thread)':<42}{rnd:>14,.0f}{rnd / trainer:>11.1f}x")
    print(f"{'loader, sequential epoch (1 thread)':<42}{seq:>14,.0f}{seq / trainer:>11.1f}x")
    worst = min(rnd, seq) / trainer
    print(f"loader share of a training step: {100 / (1 + worst):.2f}% "
          f"({'never the bottleneck' if worst > 10 else 'SIGNIFICANT: consider prefetching'})")
    print(f"tiny-model MFU on CPU (rough, peak = threads x 2.5 GHz x 32 FLOP/cycle): "
          f"{100 * 6 * model.num_params() * trainer / (a.threads * 2.5e9 * 32):.1f}%")


if __name__ == "__main__":
    main()
