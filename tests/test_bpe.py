"""The byte-level BPE trained on the corpus: exact round trips, determinism, file format, the Spark job."""
import json
import os
import random

import pytest

from udfs import bpe
from udfs.tokenize import TokenizerError, load_encoding

CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "def tokenize(text):\n    return [t for t in text.split() if t]\n" * 2,
    "Grüße aus Köln — naïve café, déjà vu, Ærøskøbing.",
    "日本語のテキストと中文文本混合。한국어 문장도 있습니다.",
    "emoji 👩‍👩‍👧‍👦 family 🇩🇪🇯🇵 👍🏽 🤖 and more emoji 🤖🤖",
    "numbers 1234567890 3.14159 and 2026-11-25T13:00:00Z",
    "the the the then there their they them these those",
]

HARD = [
    "👩‍👩‍👧‍👦🏳️‍🌈🇺🇳 👍🏿",                              # ZWJ sequences, flags, skin tones (4-byte UTF-8)
    "漢字かなカナ한글中文𠜎𠜱𠝹",                           # CJK incl. supplementary-plane ideographs
    "e\u0301 a\u0308\u0323 Z\u0351\u0352\u0357\u035b \u0915\u094d\u0937",  # combining marks, Devanagari virama
    "ctrl \x00\x01\x07\x08\x0b\x0c\x1b[0m\x7f\x85\u200b\u200e\u2028\ufeff end",
    "\r\n\r\n\t \u00a0\u3000 mixed whitespace \n",
    "<|endoftext|> as plain text",
    "\ufffd replacement char and \U0010ffff last code point",
    "",
]


@pytest.fixture(scope="module")
def trained():
    return bpe.train_bpe(CORPUS * 5, vocab_size=500, name="test_bpe")


def test_round_trips_arbitrary_unicode(trained):
    enc = bpe.encoding(trained)
    rng = random.Random(0)
    fuzz = ["".join(chr(rng.choice([rng.randrange(0x20, 0x7f), rng.randrange(0xa0, 0xd7ff),
                                    rng.randrange(0xe000, 0x10ffff)])) for _ in range(rng.randrange(1, 60)))
            for _ in range(200)]
    for text in HARD + CORPUS + fuzz:
        toks = enc.encode_ordinary(text)
        assert enc.decode(toks, errors="strict") == text
        assert enc.decode_bytes(toks) == text.encode("utf-8")
        assert b"".join(enc.decode_tokens_bytes(toks)) == text.encode("utf-8")
        assert all(0 <= t < enc.n_vocab - 1 for t in toks)


def test_round_trips_invalid_utf8_bytes(trained):
    """Lone surrogates cannot be a Python str in UTF-8, so byte-level inputs go through bytes."""
    enc = bpe.encoding(trained)
    with pytest.raises(UnicodeEncodeError):
        "\ud800".encode("utf-8")
    samples = [b"\xff\xfe\xfd", b"ok \xc3( broken", b"\xed\xa0\x80 CESU lone surrogate", b"\xe2\x82",
               "🤖".encode()[:3] + b" cut emoji", bytes(range(256)), "日本".encode("utf-16-le"),
               "mixed é".encode("latin-1")]
    for raw in samples:
        toks = enc._encode_bytes(raw)
        assert enc.decode_bytes(toks) == raw
    # token boundaries may split a multi-byte character: decode_bytes is exact where decode() must replace
    emoji = "🤖".encode()
    single = [enc.encode_single_token(bytes([b])) for b in emoji]
    assert enc.decode_bytes(single) == emoji and enc.decode(single[:2]) == "\ufffd"
    with pytest.raises(UnicodeDecodeError):
        enc.decode(single[:2], errors="strict")


def test_training_properties(trained):
    assert trained["vocab_size"] == 500 and len(trained["ranks"]) == 499
    assert trained["special_tokens"] == {"<|endoftext|>": 499}
    ranks = trained["ranks"]
    assert all(ranks[bytes([b])] == b for b in range(256))
    assert sorted(ranks.values()) == list(range(499))
    counts = bpe.count_pretokens(CORPUS * 5)
    # the first merge is the most frequent adjacent byte pair over all pre-tokens
    pairs = {}
    for w, n in counts.items():
        for p in zip(w, w[1:]):
            pairs[bytes(p)] = pairs.get(bytes(p), 0) + n
    best = max(pairs.values())
    first = min(k for k, v in pairs.items() if v == best)
    assert ranks[first] == 256
    enc = bpe.encoding(trained)
    text = " ".join(CORPUS)
    assert len(enc.encode_ordinary(text)) < 0.5 * len(text.encode())
    # deterministic: input order and a rerun do not matter
    shuffled = CORPUS * 5
    random.Random(1).shuffle(shuffled)
    again = bpe.train_bpe(shuffled, vocab_size=500, name="test_bpe")
    assert again["ranks"] == ranks and again["ranks_sha256"] == trained["ranks_sha256"]


def test_small_corpus_stops_early():
    out = bpe.train_bpe(["ab ab ab"], vocab_size=5000)
    assert out["vocab_size"] < 5000 and out["special_tokens"]["<|endoftext|>"] == out["vocab_size"] - 1
    with pytest.raises(ValueError):
        bpe.train_bpe(["x"], vocab_size=100)


def test_save_load_and_load_encoding(trained, tmp_path):
    path = str(tmp_path / "bpe.json")
    bpe.save_bpe(trained, path)
    enc = load_encoding(path)
    assert enc.n_vocab == 500 and enc.eot_token == 499 and enc.name == "test_bpe"
    for text in HARD:
        assert enc.decode(enc.encode_ordinary(text)) == text
    doc = json.load(open(path))
    doc["ranks"][300], doc["ranks"][301] = doc["ranks"][301], doc["ranks"][300]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(TokenizerError, match="corrupt"):
        load_encoding(str(bad))


def test_train_tokenizer_job_and_pack_with_it(spark, lake, lake_dir):
    from jobs import train_tokenizer
    from jobs.pack import pack, read_documents
    from jobs.schema import document_row, documents_df
    from udfs.tokenize import encoding_from_manifest

    rows = [document_row(f"t{i}", CORPUS[i % len(CORPUS)] + HARD[i % len(HARD)], domain="web") for i in range(30)]
    lake.write(documents_df(spark, rows), "deduped")
    # --out an existing folder: the tokenizer goes to <folder>/tokenizer.json, and the folder works as a spec;
    # the vocabulary size comes from the config (--set), which the command line would override
    out = os.path.join(lake_dir, "bpe")
    os.makedirs(out)
    assert train_tokenizer.main(["--lake", lake_dir, "--input-table", "deduped", "--out", out,
                                 "--set", "train_tokenizer.vocab_size=400"]) == 0
    assert os.path.isfile(os.path.join(out, "tokenizer.json"))
    enc = load_encoding(out)
    assert enc.n_vocab == 400 and enc.name == "bpe"
    expected = bpe.train_bpe([r["text"] for r in rows], vocab_size=400, name="bpe")
    assert enc._mergeable_ranks == expected["ranks"]  # Spark counting == local counting
    packed = os.path.join(lake_dir, "packed")
    m = pack(spark, lake.read("deduped"), packed, tokenizer=out, val_fraction=0.1, seed=5, shard_tokens=1000)
    assert m["tokenizer"]["file"] == "tokenizer.json" and m["dtype"] == "uint16"
    enc2 = encoding_from_manifest(m, packed)
    texts = sorted(enc2.decode_bytes(t[:-1].tolist()).decode() for s in ("train", "val")
                   for t in read_documents(packed, s))
    assert texts == sorted(r["text"] for r in rows)


def test_train_tokenizer_config_and_out_path(tmp_path, capsys):
    from jobs import train_tokenizer as tt
    from jobs.cli import run_main
    from jobs.config import load_config

    def cfg(*argv, sets=()):
        args = tt.build_parser().parse_args(["--out", "x.json", *argv])
        return tt.resolve_config(args, load_config(None, list(sets)))

    assert cfg() == tt.DEFAULTS
    assert cfg(sets=["train_tokenizer.vocab_size=1000", "train_tokenizer.pattern=gpt2"])["vocab_size"] == 1000
    assert cfg("--vocab-size", "300", sets=["train_tokenizer.vocab_size=1000"])["vocab_size"] == 300  # CLI wins
    assert tt.output_path(str(tmp_path)) == str(tmp_path / "tokenizer.json")
    assert tt.output_path(str(tmp_path / "new") + "/") == str(tmp_path / "new" / "tokenizer.json")
    assert tt.output_path(str(tmp_path / "bpe8k.json")) == str(tmp_path / "bpe8k.json")
    # bad values are one-line errors (exit 2) before Spark starts
    for sets, msg in ((["train_tokenizer.vocab_sise=1000"], "unknown config key 'train_tokenizer.vocab_sise' (did "
                                                            "you mean 'train_tokenizer.vocab_size'?)"),
                      (["train_tokenizer.vocab_size=big"], "config key 'train_tokenizer.vocab_size' must be an "
                                                           "integer, got 'big'"),
                      (["train_tokenizer.vocab_size=100"], "--vocab-size must be at least 257")):
        argv = ["--lake", str(tmp_path / "lake"), "--out", str(tmp_path / "t.json")]
        for s in sets:
            argv += ["--set", s]
        assert run_main("train_tokenizer", tt.main, argv) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and "\n" not in err, err
