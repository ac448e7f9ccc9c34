"""Packed-shard loader for the trainer (`lmrefinery-packed-v1`; the format, its checks and the memory-mapped
`PackedSplit` live in udfs/packed.py).

A split is read as one virtual token stream: the concatenation of its memory-mapped shards (every document already
ends with EOS, so a shard boundary is just another document boundary). Two sampling modes, both deterministic for a
seed and disjoint across ranks:

- `random`: the classic nanoGPT `get_batch` -- random windows x = s[i:i+T], y = s[i+1:i+T+1]. Batch number b draws
  `world * batch_size` starts from a generator seeded with (seed, b); rank r takes the r-th slice.
- `sequential`: the stream cut into non-overlapping windows (stride T) visited in epoch order, optionally shuffled
  per epoch with (seed, epoch); within a global batch rank r takes the r-th slice.

The cursor (`state_dict()` / `load_state_dict()`) is a couple of integers, so resuming reproduces the exact batches.
"""
from __future__ import annotations

import numpy as np
import torch

from udfs import packed

# the format's home is udfs/packed.py; the trainer's names for its reader and checks
PackedSplit = packed.PackedSplit
load_manifest = packed.load_manifest
ShardError = packed.PackedError  # the packed data does not match its manifest


def bytes_per_token(manifest: dict, split: str = "val") -> float:
    """UTF-8 text bytes per token of a split (EOS tokens included), for bits-per-byte."""
    s = manifest["splits"][split]
    if not s.get("tokens"):
        raise ShardError(f"split {split!r} has no tokens")
    return float(s["text_bytes"]) / float(s["tokens"])


class BatchLoader:
    """(x, y) batches from a PackedSplit for one rank. `next()` returns tensors on `device`."""

    def __init__(self, data: PackedSplit, block_size: int, batch_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 1337, mode: str = "random", shuffle: bool = True, device: str | torch.device = "cpu"):
        if mode not in ("random", "sequential"):
            raise ValueError(f"mode must be random or sequential, got {mode!r}")
        self.data, self.T, self.B = data, int(block_size), int(batch_size)
        self.rank, self.world, self.seed, self.mode, self.shuffle = rank, world_size, int(seed), mode, shuffle
        self.device = torch.device(device)
        self.n_windows = (data.n_tokens - 1) // self.T  # sequential windows of T inputs + 1 shifted target
        if data.n_tokens < self.T + 1:
            raise ShardError(f"split {data.split!r} has {data.n_tokens} tokens, fewer than block_size+1={self.T + 1}")
        self.batches_per_epoch = self.n_windows // (self.B * self.world)
        if mode == "sequential" and self.batches_per_epoch == 0:
            raise ShardError(f"split {data.split!r}: {self.n_windows} windows of {self.T} tokens cannot fill one "
                             f"global batch of {self.B * self.world}")
        self.batch = 0   # batches drawn so far (the cursor)
        self._perm_epoch, self._perm = -1, None

    # -- cursor ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"batch": self.batch, "mode": self.mode, "seed": self.seed, "world_size": self.world,
                "batch_size": self.B, "block_size": self.T}

    def load_state_dict(self, st: dict) -> None:
        for k in ("mode", "seed", "world_size", "batch_size", "block_size"):
            if st[k] != self.state_dict()[k]:
                raise ValueError(f"data cursor was saved with {k}={st[k]}, loader has {self.state_dict()[k]}")
        self.batch = int(st["batch"])

    @property
    def epoch(self) -> int:
        return self.batch // self.batches_per_epoch if self.batches_per_epoch else 0

    # -- sampling -------------------------------------------------------------------------------------------
    def starts_for(self, batch: int) -> np.ndarray:
        """Token offsets of this rank's B windows in global batch number `batch`."""
        gb = self.B * self.world
        if self.mode == "random":
            rng = np.random.default_rng([self.seed, batch])
            starts = rng.integers(0, self.data.n_tokens - self.T, size=gb)
        else:
            epoch, j = divmod(batch, self.batches_per_epoch)
            windows = np.arange(j * gb, (j + 1) * gb)
            if self.shuffle:
                if self._perm_epoch != epoch:
                    self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)
                    self._perm_epoch = epoch
                windows = self._perm[windows]
            starts = windows * self.T
        return starts[self.rank * self.B:(self.rank + 1) * self.B]

    def get_numpy(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        starts = self.starts_for(batch)
        buf = np.stack([self.data.read(int(s), self.T + 1) for s in starts])
        return buf[:, :-1], buf[:, 1:]

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.get_numpy(self.batch)
        self.batch += 1
        return to_device(x, self.device), to_device(y, self.device)

    __next__ = next

    def __iter__(self):
        return self


def to_device(a: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
    if device.type == "cuda":
        # pinned host memory lets the copy run asynchronously with the previous step's kernels
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def eval_windows(data: PackedSplit, block_size: int, max_windows: int, rank: int, world_size: int) -> np.ndarray:
    """Fixed evaluation set: the first `max_windows` non-overlapping windows of the split (all if fewer), dealt
    round-robin to ranks. The same windows at every evaluation, so val losses are comparable."""
    n = min((data.n_tokens - 1) // block_size, max_windows)
    return np.arange(rank, n, world_size, dtype=np.int64) * block_size
