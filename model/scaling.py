"""Back-of-the-envelope training compute: FLOPs, compute-optimal size, wall-clock.

    python model/scaling.py flops --params 175e9 --tokens 300e9
    python model/scaling.py optimal --flops 5.9e23 [--tokens-per-param 20]
    python model/scaling.py time --params 175e9 --tokens 300e9 --devices 1024 --peak-flops 312e12 --mfu 0.45
    python model/scaling.py time --tokens 1e9 --tokens-per-s 50000

Training compute C = 6ND (forward 2ND + backward 4ND; Kaplan et al. 2020), 8ND with full activation
recomputation (one extra forward; Narayanan et al. 2021). Compute-optimal allocation after Hoffmann et al. 2022
(Chinchilla): D = r * N with r ~ 20 tokens per parameter, so N = sqrt(C / (6 r)).
"""
from __future__ import annotations

import argparse
import json
import math
import sys

SECONDS_PER_DAY = 86400.0


def train_flops(params: float, tokens: float, recompute: bool = False) -> float:
    """C = 6ND (8ND when activations are recomputed in the backward pass)."""
    return (8.0 if recompute else 6.0) * params * tokens


def compute_optimal(flops: float, tokens_per_param: float = 20.0) -> tuple[float, float]:
    """(N, D) spending `flops` = 6ND with D = tokens_per_param * N."""
    n = math.sqrt(flops / (6.0 * tokens_per_param))
    return n, tokens_per_param * n


def wall_clock_seconds(flops: float, devices: int, peak_flops: float, mfu: float) -> float:
    """Seconds to spend `flops` on `devices` each reaching `mfu` of `peak_flops`."""
    if not (0 < mfu <= 1):
        raise ValueError(f"mfu must be in (0, 1], got {mfu}")
    return flops / (devices * peak_flops * mfu)


def mfu_from_throughput(params: float, tokens_per_s: float, devices: int, peak_flops: float) -> float:
    """Model FLOPs utilisation of a measured throughput: 6N * tokens/s over the aggregate peak."""
    return 6.0 * params * tokens_per_s / (devices * peak_flops)


def _fmt_duration(s: float) -> str:
    if s >= SECONDS_PER_DAY:
        return f"{s / SECONDS_PER_DAY:.1f} days"
    if s >= 3600:
        return f"{s / 3600:.1f} hours"
    return f"{s:.0f} s"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="scaling", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("flops", help="training FLOPs for N parameters and D tokens")
    f.add_argument("--params", type=float, required=True)
    f.add_argument("--tokens", type=float, required=True)
    f.add_argument("--recompute", action="store_true", help="8ND: full activation recomputation")
    o = sub.add_parser("optimal", help="compute-optimal N and D for a FLOP budget")
    o.add_argument("--flops", type=float, required=True)
    o.add_argument("--tokens-per-param", type=float, default=20.0, help="D/N (Chinchilla: ~20)")
    t = sub.add_parser("time", help="wall-clock for a run")
    t.add_argument("--flops", type=float, help="budget; or give --params and --tokens")
    t.add_argument("--params", type=float)
    t.add_argument("--tokens", type=float)
    t.add_argument("--recompute", action="store_true")
    t.add_argument("--devices", type=int, default=1)
    t.add_argument("--peak-flops", type=float, default=989e12, help="per device (default H100 bf16 dense)")
    t.add_argument("--mfu", type=float, default=0.4)
    t.add_argument("--tokens-per-s", type=float, help="measured aggregate throughput instead of peak x MFU")
    a = p.parse_args(argv)

    if a.cmd == "flops":
        c = train_flops(a.params, a.tokens, a.recompute)
        out = {"params": a.params, "tokens": a.tokens, "flops": c, "tokens_per_param": a.tokens / a.params}
        print(f"C = {'8' if a.recompute else '6'} x {a.params:.3g} x {a.tokens:.3g} = {c:.3g} FLOPs")
    elif a.cmd == "optimal":
        n, d = compute_optimal(a.flops, a.tokens_per_param)
        out = {"flops": a.flops, "params": n, "tokens": d, "tokens_per_param": a.tokens_per_param}
        print(f"C = {a.flops:.3g} FLOPs -> N = {n:.3g} params, D = {d:.3g} tokens (D/N = {a.tokens_per_param:g})")
    else:
        if a.tokens_per_s:
            if not a.tokens:
                p.error("--tokens-per-s needs --tokens")
            secs = a.tokens / a.tokens_per_s
            out = {"tokens": a.tokens, "tokens_per_s": a.tokens_per_s, "seconds": secs}
            if a.params:
                out["mfu"] = mfu_from_throughput(a.params, a.tokens_per_s, a.devices, a.peak_flops)
        else:
            if a.flops is None:
                if not (a.params and a.tokens):
                    p.error("time needs --flops, or --params and --tokens")
                a.flops = train_flops(a.params, a.tokens, a.recompute)
            secs = wall_clock_seconds(a.flops, a.devices, a.peak_flops, a.mfu)
            out = {"flops": a.flops, "devices": a.devices, "peak_flops": a.peak_flops, "mfu": a.mfu,
                   "seconds": secs}
        out["days"] = secs / SECONDS_PER_DAY
        print(f"wall-clock: {_fmt_duration(secs)}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
