"""Packed-shard loader for the trainer (`lmrefinery-packed-v1`, see docs in /work/shared/design.md).

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

import hashlib
import json
import os
import re

import numpy as np
import torch

from udfs.common import UserError

FORMAT = "lmrefinery-packed-v1"


class ShardError(UserError):
    """The packed data does not match its manifest (missing file, wrong size, checksum or dtype)."""


_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def load_manifest(packed_dir: str) -> dict:
    path = os.path.join(packed_dir, "manifest.json")
    if not os.path.exists(path):
        raise ShardError(f"no manifest.json in {packed_dir} (expected the output of jobs/pack.py)")
    try:
        with open(path) as f:
            m = json.load(f)
    except json.JSONDecodeError as e:
        raise ShardError(f"{path} is not valid JSON: {e}") from None
    if m.get("format") != FORMAT:
        raise ShardError(f"{path}: format is {m.get('format')!r}, expected {FORMAT!r}")
    for key in ("tokenizer", "dtype", "splits", "files"):
        if key not in m:
            raise ShardError(f"{path}: missing key {key!r}")
    return m


def expected_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 65536 else np.dtype("<u4")


def bytes_per_token(manifest: dict, split: str = "val") -> float:
    """UTF-8 text bytes per token of a split (EOS tokens included), for bits-per-byte."""
    s = manifest["splits"][split]
    if not s.get("tokens"):
        raise ShardError(f"split {split!r} has no tokens")
    return float(s["text_bytes"]) / float(s["tokens"])


class PackedSplit:
    """The shards of one split, verified against the manifest and memory-mapped."""

    def __init__(self, packed_dir: str, split: str, manifest: dict | None = None, verify: str = "full"):
        """verify: "full" (sizes, sha256, index consistency), "size" (no hashing), or "none"."""
        self.dir = packed_dir
        self.split = split
        self.manifest = manifest or load_manifest(packed_dir)
        m = self.manifest
        if split not in m["splits"]:
            raise ShardError(f"manifest has no split {split!r} (has {sorted(m['splits'])})")
        tok = m["tokenizer"]
        self.vocab_size = int(tok["vocab_size"])
        self.eos_id = int(tok["eos_id"])
        want = expected_dtype(self.vocab_size)
        if np.dtype(m["dtype"]).newbyteorder("<") != want:
            raise ShardError(f"manifest dtype {m['dtype']!r} does not fit vocab_size {self.vocab_size} "
                             f"(expected {want.name})")
        self.dtype = want
        info = m["splits"][split]
        self.shards, self.docs_per_shard = [], []
        for sh in info["shards"]:
            self._check_file(sh["bin"], verify)
            self._check_file(sh["idx"], verify)
            path = os.path.join(packed_dir, sh["bin"])
            nbytes = os.path.getsize(path)
            if nbytes != int(sh["tokens"]) * want.itemsize:
                raise ShardError(f"{sh['bin']}: {nbytes} bytes is not {sh['tokens']} tokens of {want.name}")
            if verify != "none":
                self._check_index(sh, want)
            self.shards.append(np.memmap(path, dtype=want, mode="r") if nbytes else np.zeros(0, want))
            self.docs_per_shard.append(int(sh["documents"]))
        lens = [len(s) for s in self.shards]
        if sum(lens) != int(info["tokens"]):
            raise ShardError(f"split {split!r}: shards hold {sum(lens)} tokens, manifest says {info['tokens']}")
        self.offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        self.n_tokens = int(self.offsets[-1])
        self.text_bytes = int(info.get("text_bytes", 0))

    def _check_file(self, name: str, verify: str) -> None:
        # a manifest names files inside its own folder: no separators, no '..', nothing absolute
        if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name) or ".." in name:
            raise ShardError(f"manifest in {self.dir} names shard file {name!r}, which is not a plain file name in "
                             f"that folder (refused)")
        path = os.path.join(self.dir, name)
        meta = self.manifest["files"].get(name)
        if meta is None:
            raise ShardError(f"{name} is not listed in the manifest's files")
        if not os.path.exists(path):
            raise ShardError(f"shard file missing: {path}")
        if verify == "none":
            return
        size = os.path.getsize(path)
        if size != int(meta["bytes"]):
            raise ShardError(f"{name}: size {size} bytes, manifest says {meta['bytes']} (truncated or replaced?)")
        if verify == "full":
            got = _sha256(path)
            if got != meta["sha256"]:
                raise ShardError(f"{name}: sha256 {got[:12]}... does not match the manifest's "
                                 f"{str(meta['sha256'])[:12]}... (corrupted shard)")

    def _check_index(self, sh: dict, dt: np.dtype) -> None:
        idx = np.fromfile(os.path.join(self.dir, sh["idx"]), dtype="<u8")
        if len(idx) != int(sh["documents"]):
            raise ShardError(f"{sh['idx']}: {len(idx)} entries, manifest says {sh['documents']} documents")
        if len(idx) and (int(idx[-1]) != int(sh["tokens"]) or np.any(np.diff(idx.astype(np.int64)) <= 0)):
            raise ShardError(f"{sh['idx']}: document end offsets are not increasing up to {sh['tokens']}")
        if len(idx):
            # the token before every document end must be EOS; a mismatch means the dtype or layout is wrong
            data = np.memmap(os.path.join(self.dir, sh["bin"]), dtype=dt, mode="r")
            ends = data[idx.astype(np.int64) - 1]
            if np.any(ends != self.eos_id):
                raise ShardError(f"{sh['bin']}: documents do not end with eos_id {self.eos_id} at the offsets in "
                                 f"{sh['idx']} (wrong dtype or corrupted shard)")

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start+length) of the virtual concatenation, as int64."""
        out = np.empty(length, dtype=np.int64)
        pos, filled = start, 0
        i = int(np.searchsorted(self.offsets, start, side="right")) - 1
        while filled < length:
            lo = pos - int(self.offsets[i])
            take = min(length - filled, len(self.shards[i]) - lo)
            out[filled:filled + take] = self.shards[i][lo:lo + take]
            filled += take
            pos += take
            i += 1
        return out


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
