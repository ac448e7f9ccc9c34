"""DoReMi domain weights (Xie et al. 2023, "DoReMi: Optimizing Data Mixtures Speeds Up Language Model Pretraining").

    python model/doremi.py --domain web=lake_web/packed --domain code=lake_code/packed --out doremi.json \
        [--config conf/model/tiny.yaml] [--set n_layer=2 ...] [--steps 200] [--eta 1.0] [--smoothing 1e-3]
    python model/doremi.py --packed-domains <lake>/packed_domains --out doremi.json    # jobs/pack.py --per-domain

One packed folder per domain, all made with the same tokenizer (`jobs/pack.py --per-domain` writes them and a
domains.json listing them; `jobs/doremi.py --lake L` runs pack, this and mix in one command). Steps:
1. reference model: trained `--steps` steps on batches with the reference weights (uniform: the same number of
   windows from every domain), or loaded with `--reference-ckpt` (a model/train.py checkpoint);
2. proxy model (same architecture, fresh init), trained `--steps` steps with Group DRO: at every step, per domain i
   the excess loss  lambda_i = mean over the domain's tokens of max(loss_proxy - loss_ref, 0);
   exponentiated-gradient update  alpha <- normalise(alpha * exp(eta * lambda)),
   smoothed  alpha <- (1 - c) alpha + c u;  the proxy minimises sum_i alpha_i * loss_i;
3. output: the average of alpha over the proxy's steps, as `{"domain_weights": {...}}` for
   `jobs/mix.py --strategy doremi --weights FILE`, with the trajectory of alpha (every step) and the validation
   loss of the reference and of the proxy on every domain's val split.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from udfs.common import UserError, run_main  # noqa: E402
from model.data import BatchLoader, PackedSplit, ShardError, load_manifest  # noqa: E402
from udfs.packed import domain_folders  # noqa: E402
from model.gpt import GPT, GPTConfig  # noqa: E402
from model.train import build_config, evaluate, get_lr  # noqa: E402


def exponentiated_gradient_step(alpha: torch.Tensor, excess: torch.Tensor, eta: float = 1.0,
                                smoothing: float = 1e-3) -> torch.Tensor:
    """alpha <- (1 - c) * normalise(alpha * exp(eta * excess)) + c * uniform (computed in log space)."""
    logits = torch.log(alpha) + eta * excess
    new = torch.softmax(logits, dim=0)
    return (1.0 - smoothing) * new + smoothing / alpha.numel()


def per_domain_token_losses(model: GPT, xs: list[torch.Tensor], ys: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per-token losses (B, T) for each domain's batch, in one forward pass."""
    x, y = torch.cat(xs), torch.cat(ys)
    logits, _ = model(x, y)
    tok = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), reduction="none")
    return list(tok.view(y.shape).split([len(b) for b in xs]))


def _domains(specs: list[str]) -> dict[str, str]:
    out = {}
    for s in specs:
        if "=" not in s:
            raise UserError(f"--domain expects NAME=PACKED_DIR, got {s!r}")
        name, path = s.split("=", 1)
        if name in out:
            raise UserError(f"domain {name!r} given twice")
        out[name] = path
    if len(out) < 2:
        raise UserError("DoReMi needs at least two --domain NAME=PACKED_DIR")
    return out


def _model(cfg: dict, vocab: int, eos: int) -> GPT:
    return GPT(GPTConfig(vocab_size=vocab, block_size=cfg["block_size"], n_layer=cfg["n_layer"],
                         n_head=cfg["n_head"], n_embd=cfg["n_embd"], dropout=0.0, bias=cfg["bias"],
                         vocab_pad_to=cfg["vocab_pad_to"], doc_mask=cfg["doc_mask"], eos_id=eos,
                         attention=cfg["attention"]))


def run_doremi(domains: dict[str, str], cfg: dict, steps: int, eta: float = 1.0, smoothing: float = 1e-3,
               reference_ckpt: str | None = None, log=print) -> dict:
    names = sorted(domains)
    if len(names) < 2:
        raise UserError(f"DoReMi needs at least two domains, got {len(names)}: {', '.join(names)}")
    splits, vals = {}, {}
    tok = None
    for d in names:
        m = load_manifest(domains[d])
        t = m["tokenizer"]
        key = (t.get("ranks_sha256"), t["vocab_size"], t["eos_id"])
        if tok is not None and key != tok:
            raise UserError(f"domain {d!r} ({domains[d]}) was packed with another tokenizer than {names[0]!r}")
        tok = key
        splits[d] = PackedSplit(domains[d], "train", m, verify=cfg["verify"])
        vals[d] = PackedSplit(domains[d], "val", m, verify=cfg["verify"])
    vocab, eos = tok[1], tok[2]
    T, B = cfg["block_size"], cfg["batch_size"]
    loaders = {}
    for i, d in enumerate(names):
        try:
            loaders[d] = BatchLoader(splits[d], T, B, seed=cfg["seed"] + i, mode="random")
        except ShardError as e:
            raise UserError(f"domain {d!r} ({domains[d]}): {e}") from None
    sched = dict(cfg, max_steps=steps, lr_decay_steps=None, warmup_steps=min(cfg["warmup_steps"], steps // 10))

    def batch():
        xs, ys = zip(*(loaders[d].next() for d in names))
        return list(xs), list(ys)

    # 1. reference model on the reference (uniform) mixture
    torch.manual_seed(cfg["seed"])
    if reference_ckpt:
        ck = torch.load(reference_ckpt, map_location="cpu", weights_only=True)
        ref = GPT(GPTConfig.from_dict(ck["model_args"]))
        ref.load_state_dict(ck["model"])
        if ref.config.vocab_size != vocab:
            raise UserError(f"reference checkpoint has vocab {ref.config.vocab_size}, the domains {vocab}")
    else:
        ref = _model(cfg, vocab, eos)
        opt = ref.configure_optimizer(cfg["weight_decay"], cfg["lr"], (cfg["beta1"], cfg["beta2"]), "cpu")
        for step in range(steps):
            for g in opt.param_groups:
                g["lr"] = get_lr(step, sched)
            xs, ys = batch()
            _, loss = ref(torch.cat(xs), torch.cat(ys))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(ref.parameters(), cfg["grad_clip"])
            opt.step()
            opt.zero_grad(set_to_none=True)
            if (step + 1) % max(1, steps // 5) == 0:
                log(f"reference step {step + 1}/{steps} | loss {loss.item():.4f}")
    ref.eval()

    # 2. proxy model with Group DRO over domains
    torch.manual_seed(cfg["seed"] + 1)
    proxy = _model(cfg, vocab, eos)
    opt = proxy.configure_optimizer(cfg["weight_decay"], cfg["lr"], (cfg["beta1"], cfg["beta2"]), "cpu")
    k = len(names)
    alpha = torch.full((k,), 1.0 / k, dtype=torch.float64)
    alpha_sum = torch.zeros(k, dtype=torch.float64)
    excess = torch.zeros(k, dtype=torch.float64)
    trajectory = []
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = get_lr(step, sched)
        xs, ys = batch()
        with torch.no_grad():
            ref_tok = per_domain_token_losses(ref, xs, ys)
        proxy_tok = per_domain_token_losses(proxy, xs, ys)
        excess = torch.stack([(p.detach() - r).clamp(min=0).mean() for p, r in zip(proxy_tok, ref_tok)]).double()
        alpha = exponentiated_gradient_step(alpha, excess, eta, smoothing)
        alpha_sum += alpha
        trajectory.append([round(float(a), 6) for a in alpha])
        loss = sum(float(a) * p.mean() for a, p in zip(alpha, proxy_tok))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(proxy.parameters(), cfg["grad_clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % max(1, steps // 5) == 0:
            log(f"proxy step {step + 1}/{steps} | excess " +
                " ".join(f"{d}={e:.3f}" for d, e in zip(names, excess.tolist())) + " | alpha " +
                " ".join(f"{d}={a:.3f}" for d, a in zip(names, alpha.tolist())))
    avg = (alpha_sum / steps).tolist()
    # the trainer's own evaluation (its fixed windows of each domain's val split), on this process's CPU
    cpu, no_autocast = torch.device("cpu"), contextlib.nullcontext()
    val_loss = {name: {d: round(evaluate(m, vals[d], cfg, 0, 1, cpu, no_autocast), 6) for d in names}
                for name, m in (("reference", ref), ("proxy", proxy))}
    log("val loss per domain: " + " ".join(
        f"{d}: reference {val_loss['reference'][d]:.4f} proxy {val_loss['proxy'][d]:.4f}" for d in names))
    return {
        "domain_weights": {d: round(w, 6) for d, w in zip(names, avg)},
        "final_weights": {d: round(w, 6) for d, w in zip(names, alpha.tolist())},
        "reference_weights": {d: round(1.0 / k, 6) for d in names},
        "last_excess_loss": {d: round(e, 6) for d, e in zip(names, excess.tolist())},
        "trajectory": {"domains": names, "alpha": trajectory},
        "val_loss": val_loss,
        "domains": {d: os.path.abspath(domains[d]) for d in names},
        "steps": steps, "eta": eta, "smoothing": smoothing,
        "model": {k2: cfg[k2] for k2 in ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "lr", "seed")},
        "reference_ckpt": reference_ckpt,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="doremi", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--domain", action="append", default=[], metavar="NAME=PACKED_DIR",
                   help="a domain and its packed folder (repeat for every domain)")
    p.add_argument("--packed-domains", default=None, metavar="DIR",
                   help="the output of jobs/pack.py --per-domain (its domains.json), instead of --domain")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--config", default=None, help="model config for reference and proxy (default tiny.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--steps", type=int, default=200, help="training steps of the reference and of the proxy")
    p.add_argument("--eta", type=float, default=1.0, help="step size of the exponentiated-gradient update")
    p.add_argument("--smoothing", type=float, default=1e-3, help="mix with uniform weights by this much")
    p.add_argument("--reference-ckpt", default=None, help="use this trained model as the reference")
    a = p.parse_args(argv)
    cfg = build_config(a.config, a.overrides)
    if cfg["num_threads"]:
        torch.set_num_threads(cfg["num_threads"])
    if bool(a.domain) == bool(a.packed_domains):
        raise UserError("give the domains either as --domain NAME=PACKED_DIR (two or more) or as --packed-domains DIR")
    domains = domain_folders(a.packed_domains) if a.packed_domains else _domains(a.domain)
    res = run_doremi(domains, cfg, a.steps, a.eta, a.smoothing, a.reference_ckpt)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res["domain_weights"]))
    return 0


if __name__ == "__main__":
    sys.exit(run_main("doremi", main))
