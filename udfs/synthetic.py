"""Synthetic data kernels: task templates with computed ground truth, answer extraction, verifiers, pass@k
(pure Python, no Spark).

A template turns (seed, index) into a problem deterministically (`random.Random` seeded with a string, so the
problem never depends on the process, the platform or the order problems are made in):
* `arithmetic`: one-step word problems (add, take away, groups of), whole-number answers;
* `units`: unit conversions (km/m, kg/g, h/min, m/cm, l/ml) with a numeric answer;
* `functions`: small Python functions described in words, checked by the template's unit tests.

Every problem has a `prompt` (what the generator continues), the `answer` (numeric templates) or `tests`
(functions), the `verifier` that fits it, and `reference`: the prompt followed by a correct completion, the text a
model is trained on.

Verifiers return (verdict, score, detail): `numeric` (the first number of the completion's first line against
the answer, relative tolerance), `exact` (the first line, stripped, against the answer's text), `python` (the
candidate's code with the tests in udfs/sandbox.py's sandbox).
"""
from __future__ import annotations

import math
import random
import re

TEMPLATES = ("arithmetic", "units", "functions")
VERIFIERS = ("numeric", "exact", "python")
ACCEPTED = ("correct", "passed")

_NAMES = ["Ada", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea", "Mo", "Nia"]
_ITEMS = ["apples", "books", "coins", "pens", "shells", "stamps", "cards", "marbles"]
_UNITS = [("kilometres", "metres", 1000.0), ("kilograms", "grams", 1000.0), ("hours", "minutes", 60.0),
          ("metres", "centimetres", 100.0), ("litres", "millilitres", 1000.0)]
_FUNCS = [
    ("add_{k}", "returns its argument plus {k}", "def {name}(x):\n    return x + {k}\n",
     ["assert {name}({a}) == {a} + {k}", "assert {name}(-{b}) == -{b} + {k}"]),
    ("times_{k}", "returns its argument multiplied by {k}", "def {name}(x):\n    return x * {k}\n",
     ["assert {name}({a}) == {a} * {k}", "assert {name}(0) == 0"]),
    ("is_multiple_of_{k}", "returns True when its argument is a multiple of {k}, else False",
     "def {name}(x):\n    return x % {k} == 0\n",
     ["assert {name}({k} * {a}) is True", "assert {name}({k} * {a} + 1) is False"]),
    ("last_{k}", "returns the last {k} items of a list", "def {name}(xs):\n    return xs[-{k}:]\n",
     ["assert {name}(list(range({a} + {k}))) == list(range({a}, {a} + {k}))"]),
]


def _rng(template: str, seed: int, index: int) -> random.Random:
    return random.Random(f"lmr-synthetic:{template}:{seed}:{index}")


def make_problem(template: str, seed: int, index: int) -> dict:
    """Problem number `index` of `template` for `seed`."""
    r = _rng(template, seed, index)
    pid = f"{template}-{seed}-{index:06d}"
    if template == "arithmetic":
        name, item = r.choice(_NAMES), r.choice(_ITEMS)
        kind = r.choice(["add", "sub", "mul"])
        if kind == "add":
            a, b = r.randint(1, 20), r.randint(1, 20)
            q, ans = f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?", a + b
        elif kind == "sub":
            a = r.randint(2, 30)
            b = r.randint(1, a - 1)
            q, ans = f"{name} has {a} {item} and gives away {b}. How many {item} are left?", a - b
        else:
            a, b = r.randint(2, 9), r.randint(2, 9)
            q, ans = f"{name} has {a} bags with {b} {item} in each. How many {item} is that in all?", a * b
        prompt = f"Question: {q}\nAnswer:"
        return {"problem_id": pid, "template": template, "prompt": prompt, "answer": float(ans), "tests": None,
                "verifier": "numeric", "reference": f"{prompt} {ans}\n"}
    if template == "units":
        big, small, f = r.choice(_UNITS)
        x = r.choice([r.randint(1, 12), r.randint(1, 40) / 4])
        ans = x * f
        prompt = f"Question: How many {small} are in {_num(x)} {big}?\nAnswer:"
        return {"problem_id": pid, "template": template, "prompt": prompt, "answer": ans, "tests": None,
                "verifier": "numeric", "reference": f"{prompt} {_num(ans)}\n"}
    if template == "functions":
        fname, desc, body, tests = r.choice(_FUNCS)
        k, a, b = r.randint(2, 9), r.randint(1, 50), r.randint(1, 50)
        name = fname.format(k=k)
        fill = {"name": name, "k": k, "a": a, "b": b}
        prompt = f"# Write a Python function {name} that {desc.format(**fill)}.\n"
        return {"problem_id": pid, "template": template, "prompt": prompt, "answer": None,
                "tests": "\n".join(t.format(**fill) for t in tests) + "\n", "verifier": "python",
                "reference": prompt + body.format(**fill)}
    raise ValueError(f"unknown template {template!r} (one of {', '.join(TEMPLATES)})")


def make_problems(template: str, n: int, seed: int) -> list[dict]:
    return [make_problem(template, seed, i) for i in range(n)]


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def first_line(completion: str) -> str:
    for line in completion.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def extract_number(completion: str) -> float | None:
    """The first number on the completion's first non-empty line, or None."""
    m = _NUMBER.search(first_line(completion))
    return float(m.group(0)) if m else None


def extract_code(completion: str) -> str:
    """The candidate's code: the completion up to its first line after the first that is neither indented nor a
    def / comment / decorator / import (a model goes on past the function with more text)."""
    lines, out = completion.splitlines(), []
    for i, line in enumerate(lines):
        if i > 0 and line and not line[0].isspace() and not line.startswith(("def ", "#", "@", "import ", "from ")):
            break
        out.append(line)
    return "\n".join(out).rstrip() + "\n"


def verify(problem: dict, completion: str, verifier: str | None = None, tolerance: float = 1e-6,
           timeout_s: float = 5.0, memory_mb: int = 512) -> tuple[str, float, str]:
    """(verdict, score, detail) of one completion: verdict `correct` / `wrong` / `no_answer` for numeric and
    exact, the sandbox's verdict for python (`passed`, `failed`, `timeout`, `memory`, `refused:*`)."""
    v = verifier or problem["verifier"]
    if v == "numeric":
        got = extract_number(completion)
        if got is None:
            return "no_answer", 0.0, "no number on the first line"
        want = float(problem["answer"])
        ok = math.isfinite(got) and abs(got - want) <= tolerance * max(1.0, abs(want))
        return ("correct", 1.0, "") if ok else ("wrong", 0.0, f"got {_num(got)}, want {_num(want)}")
    if v == "exact":
        got, want = first_line(completion), _num(float(problem["answer"])) if problem["answer"] is not None else ""
        return ("correct", 1.0, "") if got == want else ("wrong", 0.0, f"got {got[:60]!r}, want {want!r}")
    if v == "python":
        if not problem.get("tests"):
            raise ValueError(f"problem {problem['problem_id']} has no tests for the python verifier")
        from udfs.sandbox import run_python

        res = run_python(extract_code(completion), problem["tests"], timeout_s, memory_mb)
        return res["verdict"], 1.0 if res["verdict"] == "passed" else 0.0, res["detail"]
    raise ValueError(f"unknown verifier {v!r} (one of {', '.join(VERIFIERS)})")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with c correct of n samples (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


# ---- self-instruct ----------------------------------------------------------------------------------------------
_GEN_TASK = re.compile(r"^\s*(?P<q>[^\n]{8,400}?)\s*\n\s*Answer:\s*(?P<a>[^\n]{1,60})", re.S)


def task_text(question: str, answer: str) -> str:
    return f"Question: {question}\nAnswer: {answer}\n"


def few_shot_prompt(pool: list[dict], seed: int, round_no: int, index: int, shots: int = 3) -> str:
    """`shots` tasks of the pool (chosen by a seeded generator) then "Question:" for the generator to continue
    with a new task."""
    r = random.Random(f"lmr-self-instruct:{seed}:{round_no}:{index}")
    picks = r.sample(range(len(pool)), min(shots, len(pool)))
    return "".join(task_text(pool[i]["question"], pool[i]["answer"]) + "\n" for i in picks) + "Question:"


def parse_generated_task(completion: str) -> tuple[str, str] | None:
    """(question, answer) from a completion of `few_shot_prompt`: the question up to the next "Answer:" line and
    that line's answer; None when it does not have that shape."""
    m = _GEN_TASK.match(completion)
    if not m:
        return None
    q, a = m.group("q").strip(), m.group("a").strip()
    if "Question:" in q or not q or not a:
        return None
    return q, a


def question_of(prompt: str) -> str:
    """The question of a "Question: ...\\nAnswer:" prompt (the prompt itself when it has another shape)."""
    if prompt.startswith("Question: ") and prompt.rstrip().endswith("Answer:"):
        return prompt[len("Question: "):].rsplit("\nAnswer:", 1)[0].strip()
    return prompt.strip()


def consistency_score(answer: str, samples: list[str], tolerance: float = 1e-6) -> float:
    """Share of the generator's own answers to the question that agree with the proposed answer (numbers within a
    relative tolerance, else the first line exactly): the self-consistency critic."""
    if not samples:
        return 0.0
    want = extract_number(answer)
    agree = 0
    for s in samples:
        if want is not None:
            got = extract_number(s)
            agree += got is not None and abs(got - want) <= tolerance * max(1.0, abs(want))
        else:
            agree += first_line(s) == answer.strip()
    return agree / len(samples)
