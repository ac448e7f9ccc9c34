"""Constants and formats shared by the tokenizer loader (udfs/tokenize.py) and the BPE trainer (udfs/bpe.py):
pre-tokenisation regexes, the end-of-text token, the .tiktoken rank serialisation and the tokenizer error.
A leaf module, so that the two can depend on it instead of on each other.
"""
from __future__ import annotations

import base64

ENDOFTEXT = "<|endoftext|>"

# The GPT-2 pre-tokenisation regex, as tiktoken spells it (tiktoken_ext/openai_public.py).
R50K_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
CL100K_PAT = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|"""
              r"""\s*[\r\n]|\s+(?!\S)|\s""")
O200K_PAT = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])


class TokenizerError(FileNotFoundError):
    """A tokenizer cannot be loaded; the message says what to do (a FileNotFoundError, so jobs exit 2)."""


def serialize_ranks(ranks: dict[bytes, int]) -> bytes:
    """The .tiktoken text form (`base64 rank` per line, by rank); its sha256 is a tokenizer's identity."""
    return b"".join(base64.b64encode(tok) + b" " + str(r).encode() + b"\n"
                    for tok, r in sorted(ranks.items(), key=lambda kv: kv[1]))
