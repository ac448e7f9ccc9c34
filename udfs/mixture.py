"""Domain mixture weights and sampling plans (pure Python, no Spark).

Weights are token shares: a domain with weight w gets w * budget tokens of the mixture.

Strategies (counts are per domain: D documents, T tokens):
* `uniform_doc`: every domain contributes the same number of documents, so w_i ~ T_i / D_i (mean document length).
* `uniform_token`: every domain contributes the same number of tokens, w_i = 1 / K.
* `proportional`: the natural distribution, w_i = T_i / sum T.
* `temperature`: w_i ~ T_i ** alpha with alpha = 1/T (alpha 1 = proportional, 0 = uniform_token).
* `manual`: weights from a YAML/JSON file `{domain: weight}` (or under a `weights:` / `domain_weights:` key).
* `doremi`: weights from the JSON a DoReMi run writes, `{"domain_weights": {domain: weight}}`.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

STRATEGIES = ("uniform_doc", "uniform_token", "proportional", "manual", "temperature", "doremi")


class WeightError(ValueError):
    """Invalid weights or an infeasible plan; the message is one line for the user."""


def _positive_domains(tokens: dict) -> list[str]:
    return sorted(d for d, t in tokens.items() if t > 0)


def uniform_doc(docs: dict, tokens: dict) -> dict:
    mean_len = {d: tokens[d] / docs[d] for d in _positive_domains(tokens) if docs.get(d)}
    return normalize(mean_len)


def uniform_token(tokens: dict) -> dict:
    doms = _positive_domains(tokens)
    return {d: (1.0 / len(doms) if d in doms else 0.0) for d in sorted(tokens)} if doms else {}


def proportional(tokens: dict) -> dict:
    return normalize({d: float(t) for d, t in tokens.items()})


def temperature(tokens: dict, alpha: float) -> dict:
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
        raise WeightError(f"temperature alpha must be a finite number >= 0, got {alpha!r}")
    return normalize({d: (float(t) ** alpha if t > 0 else 0.0) for d, t in tokens.items()})


def normalize(weights: dict) -> dict:
    total = sum(weights.values())
    if total <= 0:
        raise WeightError("all domain weights are zero")
    return {d: w / total for d, w in sorted(weights.items())}


def validate_weights(weights: dict, domains, tol: float = 1e-6) -> tuple[dict, list[str]]:
    """Check weights against the known domains; return (weights on the simplex over all domains, warnings).

    Errors: a weight that is not a finite non-negative number, a domain not in the data, all weights zero.
    Warnings: weights that do not sum to 1 (normalised), domains without a weight (weight 0)."""
    domains = sorted(domains)
    if not isinstance(weights, dict) or not weights:
        raise WeightError("weights must be a non-empty mapping of domain -> weight")
    clean, warnings = {}, []
    for d, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise WeightError(f"weight of domain {d!r} is not a finite number: {w!r}")
        if w < 0:
            raise WeightError(f"weight of domain {d!r} is negative: {w}")
        clean[str(d)] = float(w)
    unknown = sorted(set(clean) - set(domains))
    if unknown:
        raise WeightError(f"unknown domain(s) in weights: {', '.join(unknown)} (data has: {', '.join(domains)})")
    missing = [d for d in domains if d not in clean]
    if missing:
        warnings.append(f"no weight for domain(s) {', '.join(missing)}: they get weight 0")
    total = sum(clean.values())
    if total <= 0:
        raise WeightError("all domain weights are zero")
    if abs(total - 1.0) > tol:
        warnings.append(f"weights sum to {total:.6g}, not 1: normalised")
    return {d: clean.get(d, 0.0) / total for d in domains}, warnings


def parse_weights_text(text: str, path: str = "weights", require_key: str | None = None) -> dict:
    """Weights from YAML or JSON text: `{domain: w}` or `{"weights"|"domain_weights": {domain: w}}`."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise WeightError(f"cannot parse weights file {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise WeightError(f"weights file {path} must hold a mapping of domain -> weight")
    if require_key is not None:
        if not isinstance(data.get(require_key), dict):
            raise WeightError(f"weights file {path} has no {require_key!r} mapping")
        return data[require_key]
    for key in ("domain_weights", "weights"):
        if isinstance(data.get(key), dict):
            return data[key]
    return data


def load_weights_file(path: str, require_key: str | None = None) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise WeightError(f"cannot read weights file {path}: {e.strerror}") from None
    return parse_weights_text(text, path, require_key)


def compute_weights(strategy: str, docs: dict, tokens: dict, alpha: float | None = None,
                    file_weights: dict | None = None) -> tuple[dict, list[str]]:
    """(weights over all domains in `tokens`, warnings) for a strategy."""
    if strategy not in STRATEGIES:
        raise WeightError(f"unknown strategy {strategy!r} (one of {', '.join(STRATEGIES)})")
    if not tokens:
        raise WeightError("no domains in the input (empty table)")
    if sum(tokens.values()) <= 0:
        raise WeightError("the input has no tokens (n_tokens_est sums to 0)")
    if strategy == "uniform_doc":
        w = uniform_doc(docs, tokens)
    elif strategy == "uniform_token":
        w = uniform_token(tokens)
    elif strategy == "proportional":
        w = proportional(tokens)
    elif strategy == "temperature":
        if alpha is None:
            raise WeightError("temperature needs --alpha")
        w = temperature(tokens, alpha)
    else:
        if file_weights is None:
            raise WeightError(f"strategy {strategy} needs --weights FILE")
        return validate_weights(file_weights, tokens.keys())
    return validate_weights(w, tokens.keys())


FIT = "fit"  # token budget: the largest, up to all tokens available, that no domain needs > max_epochs passes for


def parse_budget(value) -> int | str | None:
    """`10000`, `1e6`, `10M`, `1.5B` -> tokens; None/''/'all' -> None (natural size); 'fit' -> FIT (see
    `resolve_budget`)."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        n = value
    else:
        s = str(value).strip().lower().replace("_", "")
        if s in ("", "none", "null", "all"):
            return None
        if s == FIT:
            return FIT
        m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[0-9]+)?)([kmbt]?)", s)
        if not m:
            raise WeightError(f"cannot parse token budget {value!r} (e.g. 1000000, 1e6, 10M, 1.5B)")
        n = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[m.group(2)]
    if not math.isfinite(n) or n <= 0:
        raise WeightError(f"token budget must be positive, got {value!r}")
    return int(round(n))


@dataclass
class DomainPlan:
    domain: str
    weight: float
    docs: int             # documents available
    tokens: int           # tokens available
    target_tokens: int    # weight * budget
    full_epochs: int      # complete passes over the domain
    remainder: int        # tokens still to take from one more, partial pass (documents ranked by hash)

    @property
    def epochs(self) -> float:
        return self.target_tokens / self.tokens if self.tokens else 0.0


def max_feasible_budget(weights: dict, tokens: dict, max_epochs: float) -> int:
    caps = [max_epochs * tokens.get(d, 0) / w for d, w in weights.items() if w > 0]
    return int(math.floor(min(caps))) if caps else 0


def resolve_budget(budget, weights: dict, tokens: dict, max_epochs: int) -> int:
    """The token budget in tokens: None = all tokens available; FIT = all available, or less where a domain would
    otherwise need more than `max_epochs` passes (weights that favour a small domain, e.g. DoReMi's)."""
    total = sum(tokens.values())
    if budget is None:
        return total
    if budget == FIT:
        return min(total, max_feasible_budget(weights, tokens, max_epochs))
    return int(budget)


def plan(weights: dict, docs: dict, tokens: dict, budget: int | str | None, max_epochs: int = 4,
         force_epochs: bool = False) -> list[DomainPlan]:
    """Per-domain token targets for `budget` (None = all tokens available, FIT: see `resolve_budget`) and how to
    reach them: `full_epochs` whole copies of the domain plus a `remainder` from one more pass. Raises WeightError
    when a domain would need more than `max_epochs` passes (unless `force_epochs`) or has a weight but no tokens."""
    if max_epochs is None or max_epochs < 1:
        raise WeightError(f"--max-epochs must be >= 1, got {max_epochs}")
    budget = resolve_budget(budget, weights, tokens, max_epochs)
    if budget <= 0:
        raise WeightError("token budget must be positive")
    out, too_many = [], []
    for d in sorted(weights):
        w, t = weights[d], int(tokens.get(d, 0))
        target = int(round(w * budget))
        if target > 0 and t <= 0:
            raise WeightError(f"infeasible: domain {d!r} has weight {w:.4g} but no tokens")
        full, rem = (divmod(target, t) if t > 0 else (0, 0))
        p = DomainPlan(d, w, int(docs.get(d, 0)), t, target, int(full), int(rem))
        if p.epochs > max_epochs:
            too_many.append(p)
        out.append(p)
    if too_many and not force_epochs:
        worst = max(too_many, key=lambda p: p.epochs)
        cap = max_feasible_budget(weights, tokens, max_epochs)
        raise WeightError(
            f"infeasible token budget {budget}: domain {worst.domain!r} needs {worst.epochs:.2f} epochs "
            f"({worst.target_tokens} target tokens, {worst.tokens} available) > --max-epochs {max_epochs}; "
            f"use --token-budget <= {cap}, raise --max-epochs, or pass --force-epochs")
    return out


def format_table(rows: list[dict]) -> str:
    """The mixture report: one line per domain plus a total."""
    head = (f"{'domain':<20} {'target w':>9} {'achieved':>9} {'docs':>9} {'unique':>9} {'tokens':>12} "
            f"{'avail tok':>12} {'epochs':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['domain']:<20} {r['target_weight']:>9.4f} {r['achieved_share']:>9.4f} {r['docs']:>9} "
                     f"{r['unique_docs']:>9} {r['tokens']:>12} {r['tokens_available']:>12} {r['epochs']:>7.3f}")
    tot_docs = sum(r["docs"] for r in rows)
    tot_tok = sum(r["tokens"] for r in rows)
    lines.append(f"{'total':<20} {1.0:>9.4f} {1.0 if tot_tok else 0.0:>9.4f} {tot_docs:>9} "
                 f"{sum(r['unique_docs'] for r in rows):>9} {tot_tok:>12} "
                 f"{sum(r['tokens_available'] for r in rows):>12} {'':>7}")
    return "\n".join(lines)


def to_json(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
