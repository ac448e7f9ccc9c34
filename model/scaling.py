"""Back-of-the-envelope training compute: FLOPs, compute-optimal size, wall-clock.

    python model/scaling.py flops --params 175e9 --tokens 300e9
    python model/scaling.py optimal --flops 5.9e23 [--tokens-per-param 20]
    python model/scaling.py time --params 175e9 --tokens 300e9 --devices 1024 --peak-flops 312e12 --mfu 0.45
    python model/scaling.py time --tokens 1e9 --tokens-per-s 50000
    python model/scaling.py chinchilla --flops 1e21             # fitted law: optimal N, D and predicted loss
    python model/scaling.py loss --params 1e9 --tokens 100e9 [--unique-tokens 20e9]
    python model/scaling.py plan --lake ./lake --params 124e6 --tokens 10e9   # or --flops C

Training compute C = 6ND (forward 2ND + backward 4ND; Kaplan et al. 2020), 8ND with full activation
recomputation (one extra forward; Narayanan et al. 2021). Compute-optimal allocation after Hoffmann et al. 2022
(Chinchilla), two ways:
* the rule of thumb D = r * N with r ~ 20 tokens per parameter, so N = sqrt(C / (6 r)) (`optimal`);
* their approach 3, the parametric fit L(N, D) = E + A / N^alpha + B / D^beta with E 1.69, A 406.4, B 410.7,
  alpha 0.34, beta 0.28 (`chinchilla`, `loss`). Minimising L on C = 6ND gives
  N_opt = G (C/6)^(beta/(alpha+beta)), D_opt = (C/6)^(alpha/(alpha+beta)) / G, G = (alpha A / (beta B))^(1/(alpha+beta)).
Repeated data (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models"): D tokens drawn from U unique
ones are worth D' = U + U R* (1 - exp(-R / R*)) unique tokens, R = D/U - 1 repetitions and R* = 15.4 (their fit),
so up to ~4 epochs cost little and past ~16 more epochs add almost nothing; `loss --unique-tokens U` and `plan` use
D' in the fitted law. `plan --lake L` reads the real token count of every domain (reports/mixture.json, written by
jobs/mix.py) and says how many epochs of each domain a run of D tokens takes at the mixture's weights.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from udfs.common import UserError, run_main  # noqa: E402

SECONDS_PER_DAY = 86400.0


def train_flops(params: float, tokens: float, recompute: bool = False) -> float:
    """C = 6ND (8ND when activations are recomputed in the backward pass)."""
    return (8.0 if recompute else 6.0) * params * tokens


def compute_optimal(flops: float, tokens_per_param: float = 20.0) -> tuple[float, float]:
    """(N, D) spending `flops` = 6ND with D = tokens_per_param * N."""
    n = math.sqrt(flops / (6.0 * tokens_per_param))
    return n, tokens_per_param * n


# Hoffmann et al. 2022, approach 3 (their Table A3 / equation 10)
CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
# Muennighoff et al. 2023: the decay constant of the value of repeated tokens (their fitted R_D*)
REPEAT_DECAY = 15.4


def fitted_loss(params: float, tokens: float, law: dict = CHINCHILLA) -> float:
    """L(N, D) = E + A / N^alpha + B / D^beta (nats per token)."""
    return law["E"] + law["A"] / params ** law["alpha"] + law["B"] / tokens ** law["beta"]


def chinchilla_optimal(flops: float, law: dict = CHINCHILLA) -> tuple[float, float, float]:
    """(N_opt, D_opt, predicted loss) minimising the fitted L(N, D) on the compute line 6ND = flops."""
    a, b = law["alpha"], law["beta"]
    g = (a * law["A"] / (b * law["B"])) ** (1.0 / (a + b))
    n = g * (flops / 6.0) ** (b / (a + b))
    d = (flops / 6.0) ** (a / (a + b)) / g
    return n, d, fitted_loss(n, d, law)


def effective_tokens(tokens: float, unique_tokens: float, decay: float = REPEAT_DECAY) -> float:
    """What `tokens` drawn (repeatedly) from `unique_tokens` unique ones are worth: U + U R* (1 - exp(-R/R*)),
    R = tokens/U - 1 repetitions (Muennighoff et al. 2023); `tokens` itself when nothing repeats."""
    if unique_tokens <= 0:
        raise ValueError(f"unique_tokens must be > 0, got {unique_tokens}")
    if tokens <= unique_tokens:
        return float(tokens)
    r = tokens / unique_tokens - 1.0
    return unique_tokens + unique_tokens * decay * (1.0 - math.exp(-r / decay))


def data_constrained_loss(params: float, tokens: float, unique_tokens: float, law: dict = CHINCHILLA) -> float:
    """The fitted loss with the repeated tokens discounted to their effective number."""
    return fitted_loss(params, effective_tokens(tokens, unique_tokens), law)


def read_lake_tokens(lake: str) -> dict:
    """{domain: {"tokens": unique tokens available, "weight": target weight, "exact": bool}} from the mixture
    report that jobs/mix.py writes (token counts of the packing tokenizer unless the mix ran with estimates)."""
    path = os.path.join(lake, "reports", "mixture.json")
    try:
        with open(path) as f:
            rep = json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path} not found: run jobs/mix.py on the lake first (it counts every domain's tokens)") \
            from None
    except ValueError as e:
        raise UserError(f"{path} is not valid JSON: {e}") from None
    exact = rep.get("token_counts") == "exact"
    return {r["domain"]: {"tokens": int(r["tokens_available"]), "weight": float(r["target_weight"]), "exact": exact,
                          "tokenizer": rep.get("tokenizer")} for r in rep["domains"]}


def plan_lake(domains: dict, params: float, tokens: float, law: dict = CHINCHILLA) -> dict:
    """Per domain: tokens a run of `tokens` takes at the mixture's weights, the epochs that means, and the tokens
    those are worth after repetition; the predicted loss with all data unique vs with the lake's repetition."""
    rows, eff_total = [], 0.0
    for d, info in sorted(domains.items()):
        need = info["weight"] * tokens
        avail = info["tokens"]
        if need > 0 and avail <= 0:
            raise UserError(f"domain {d!r} has weight {info['weight']} but no tokens in the lake")
        eff = effective_tokens(need, avail) if need > 0 else 0.0
        eff_total += eff
        rows.append({"domain": d, "weight": info["weight"], "tokens_available": avail, "tokens_needed": need,
                     "epochs": need / avail if avail else 0.0, "effective_tokens": eff})
    return {"params": params, "tokens": tokens, "flops": train_flops(params, tokens), "domains": rows,
            "effective_tokens": eff_total, "loss_unique": fitted_loss(params, tokens, law),
            "loss_with_repeats": fitted_loss(params, max(eff_total, 1.0), law)}


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
    c = sub.add_parser("chinchilla", help="compute-optimal N, D and predicted loss from the fitted L(N, D)")
    c.add_argument("--flops", type=float, required=True)
    lo = sub.add_parser("loss", help="predicted loss L(N, D), optionally with D drawn from U unique tokens")
    lo.add_argument("--params", type=float, required=True)
    lo.add_argument("--tokens", type=float, required=True)
    lo.add_argument("--unique-tokens", type=float, help="unique tokens the D are drawn from (repetition)")
    pl = sub.add_parser("plan", help="epochs per domain of the lake's mixture for a model and a token budget")
    pl.add_argument("--lake", required=True)
    pl.add_argument("--params", type=float, help="model parameters N (with --tokens; or give --flops)")
    pl.add_argument("--tokens", type=float, help="training tokens D")
    pl.add_argument("--flops", type=float, help="compute budget: N and D from the Chinchilla fit")
    pl.add_argument("--max-epochs", type=float, default=4.0, help="warn above this many epochs of a domain")
    a = p.parse_args(argv)

    if a.cmd == "flops":
        c = train_flops(a.params, a.tokens, a.recompute)
        out = {"params": a.params, "tokens": a.tokens, "flops": c, "tokens_per_param": a.tokens / a.params}
        print(f"C = {'8' if a.recompute else '6'} x {a.params:.3g} x {a.tokens:.3g} = {c:.3g} FLOPs")
    elif a.cmd == "optimal":
        n, d = compute_optimal(a.flops, a.tokens_per_param)
        out = {"flops": a.flops, "params": n, "tokens": d, "tokens_per_param": a.tokens_per_param}
        print(f"C = {a.flops:.3g} FLOPs -> N = {n:.3g} params, D = {d:.3g} tokens (D/N = {a.tokens_per_param:g})")
    elif a.cmd == "chinchilla":
        n, d, loss = chinchilla_optimal(a.flops)
        out = {"flops": a.flops, "params": n, "tokens": d, "tokens_per_param": d / n, "loss": loss,
               "law": CHINCHILLA}
        print(f"C = {a.flops:.3g} FLOPs -> N_opt = {n:.4g} params, D_opt = {d:.4g} tokens (D/N = {d / n:.1f}), "
              f"predicted loss {loss:.4f} nats/token (Hoffmann et al. approach 3)")
    elif a.cmd == "loss":
        if a.unique_tokens:
            eff = effective_tokens(a.tokens, a.unique_tokens)
            loss = fitted_loss(a.params, eff)
            out = {"params": a.params, "tokens": a.tokens, "unique_tokens": a.unique_tokens,
                   "epochs": a.tokens / a.unique_tokens, "effective_tokens": eff, "loss": loss,
                   "loss_if_unique": fitted_loss(a.params, a.tokens)}
            print(f"L({a.params:.3g}, {a.tokens:.3g} tokens = {a.tokens / a.unique_tokens:.2f} epochs of "
                  f"{a.unique_tokens:.3g}) = {loss:.4f}; worth {eff:.4g} unique tokens "
                  f"(all unique: {out['loss_if_unique']:.4f})")
        else:
            loss = fitted_loss(a.params, a.tokens)
            out = {"params": a.params, "tokens": a.tokens, "loss": loss}
            print(f"L({a.params:.3g}, {a.tokens:.3g}) = {loss:.4f} nats/token")
    elif a.cmd == "plan":
        if a.flops:
            n, d, _ = chinchilla_optimal(a.flops)
        elif a.params and a.tokens:
            n, d = a.params, a.tokens
        else:
            p.error("plan needs --params and --tokens, or --flops")
        domains = read_lake_tokens(a.lake)
        out = plan_lake(domains, n, d)
        exact = all(v["exact"] for v in domains.values())
        print(f"plan: N = {n:.4g} params, D = {d:.4g} tokens, C = {out['flops']:.3g} FLOPs; lake {a.lake} "
              f"({'exact token counts' if exact else 'ESTIMATED token counts (bytes/4)'})")
        print(f"{'domain':<20} {'weight':>8} {'available':>14} {'needed':>14} {'epochs':>8} {'worth':>14}")
        for r in out["domains"]:
            flag = "  <- more than --max-epochs" if r["epochs"] > a.max_epochs else ""
            print(f"{r['domain']:<20} {r['weight']:>8.4f} {r['tokens_available']:>14,} "
                  f"{r['tokens_needed']:>14,.0f} {r['epochs']:>8.2f} {r['effective_tokens']:>14,.0f}{flag}")
        print(f"predicted loss: {out['loss_unique']:.4f} if every token were unique, "
              f"{out['loss_with_repeats']:.4f} with the lake's repetition (worth {out['effective_tokens']:.4g} "
              f"unique tokens)")
        out["exact_token_counts"] = exact
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
    sys.exit(run_main("scaling", main))
