"""Generate text from a trained checkpoint with the tokenizer the training data was packed with.

    python model/sample.py --ckpt out/tiny [--prompt "The licence"] [--max-tokens 200] [--temperature 0.8]
                           [--top-k 50] [--num-samples 2] [--seed 1] [--tokenizer SPEC] [--data <lake>/packed]

The tokenizer comes from the packed manifest of the training data (`udfs.tokenize.encoding_from_manifest`), found
through the checkpoint's recorded data folder or `--data`; `--tokenizer SPEC` (gpt2, cl100k_base, a .tiktoken or a
trained-BPE file) overrides it.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from udfs.common import UserError, run_main  # noqa: E402
from model.gpt import GPT, GPTConfig  # noqa: E402


def load_model(ckpt_path: str, device: str = "cpu") -> tuple[GPT, dict]:
    if os.path.isdir(ckpt_path):
        ckpt_path = os.path.join(ckpt_path, "ckpt.pt")
    if not os.path.exists(ckpt_path):
        raise UserError(f"checkpoint not found: {ckpt_path}")
    ck = torch.load(ckpt_path, map_location=device, weights_only=True)
    model = GPT(GPTConfig.from_dict(ck["model_args"]))
    model.load_state_dict(ck["model"])
    return model.to(device).eval(), ck


def load_tokenizer(ck: dict, spec: str | None = None, data_dir: str | None = None):
    from udfs.tokenize import encoding_from_manifest, load_encoding

    if spec:
        return load_encoding(spec)
    from model.data import load_manifest

    data_dir = data_dir or ck.get("data_dir")
    if not data_dir or not os.path.exists(os.path.join(data_dir, "manifest.json")):
        raise UserError(f"cannot find the training data's manifest.json (looked in {data_dir}); pass --data "
                        f"<packed dir> or --tokenizer SPEC")
    return encoding_from_manifest(load_manifest(data_dir), data_dir)


def generate_text(model: GPT, enc, prompt: str = "", max_tokens: int = 200, temperature: float = 0.8,
                  top_k: int | None = 50, num_samples: int = 1, seed: int = 1, stop_at_eos: bool = True,
                  device: str = "cpu") -> list[str]:
    if enc.n_vocab != model.config.vocab_size:
        raise UserError(f"tokenizer has {enc.n_vocab} tokens, the model was trained with {model.config.vocab_size}")
    ids = enc.encode_ordinary(prompt) if prompt else [enc.eot_token]  # no prompt: start a fresh document
    x = torch.tensor([ids] * num_samples, dtype=torch.long, device=device)
    g = torch.Generator(device=device).manual_seed(seed)
    out = model.generate(x, max_tokens, temperature=temperature, top_k=top_k, generator=g)
    texts = []
    for row in out.tolist():
        new = row[len(ids):]
        if stop_at_eos and enc.eot_token in new:
            new = new[:new.index(enc.eot_token)]
        texts.append(prompt + enc.decode(new))
    return texts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="sample", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="checkpoint file or the training out_dir holding ckpt.pt")
    p.add_argument("--prompt", default="", help="text to continue (default: start of a new document)")
    p.add_argument("--max-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=50, help="sample from the k most likely tokens (0 = all)")
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-stop-at-eos", action="store_true", help="keep generating past <|endoftext|>")
    p.add_argument("--tokenizer", default=None, help="tokenizer spec overriding the manifest's")
    p.add_argument("--data", default=None, help="packed folder whose manifest names the tokenizer")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args(argv)
    model, ck = load_model(a.ckpt, a.device)
    enc = load_tokenizer(ck, a.tokenizer, a.data)
    texts = generate_text(model, enc, a.prompt, a.max_tokens, a.temperature, a.top_k or None, a.num_samples,
                          a.seed, not a.no_stop_at_eos, a.device)
    for i, t in enumerate(texts):
        if a.num_samples > 1:
            print(f"--- sample {i + 1} ---")
        print(t)
    return 0


if __name__ == "__main__":
    sys.exit(run_main("sample", main))
