"""Tokenizers: exact round trips, readable token strings, save/load, and format detection.  No network."""

from __future__ import annotations

import json

import pytest
import torch

from workbench.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    Tokenizer,
    load_tokenizer,
)

SHAKESPEARE = """ROMEO:
But, soft! what light through yonder window breaks?
It is the east, and Juliet is the sun.
Arise, fair sun, and kill the envious moon,
Who is already sick and pale with grief,
That thou her maid art far more fair than she:
"""
ENGLISH = "Hello, world! The quick brown fox jumps over the lazy dog (twice): 1, 2."
TEXTS = [ENGLISH, SHAKESPEARE, "我 爱 吃 饭", "🤖👍🏽", "", "  \n\n\t  x"]
# Training text for the BPE kinds: English only, so Chinese and emoji must go through the byte fallback.
TRAIN_TEXT = (SHAKESPEARE + ENGLISH + "\n") * 20


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(TRAIN_TEXT, vocab_size=300)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory, bpe):
    """A GPT-2-format HF directory in the classic layout (vocab.json + merges.txt), built offline."""
    d = tmp_path_factory.mktemp("gpt2_classic")
    bpe._tk.model.save(str(d))
    return d


@pytest.fixture(scope="module")
def gpt2(gpt2_dir) -> GPT2Tokenizer:
    return GPT2Tokenizer.from_pretrained(gpt2_dir)


@pytest.fixture(scope="module")
def char() -> CharTokenizer:
    return CharTokenizer.from_text("".join(TEXTS))


@pytest.fixture(params=["char", "bpe", "gpt2"])
def tok(request) -> Tokenizer:
    return request.getfixturevalue(request.param)


# ------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("text", TEXTS, ids=["english", "shakespeare", "chinese", "emoji", "empty", "whitespace"])
def test_round_trip(tok, text):
    ids = tok.encode(text)
    assert all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


def test_protocol_and_start_id(tok):
    assert isinstance(tok, Tokenizer)
    assert 0 <= tok.start_id < tok.vocab_size
    assert isinstance(tok.token_strs([tok.start_id])[0], str)


def test_decode_accepts_tensor(tok):
    ids = tok.encode(ENGLISH)
    assert tok.decode(torch.tensor(ids)) == ENGLISH


# ------------------------------------------------------------------------------------------------- char


def test_char_vocab_sorted_and_start_id():
    t = CharTokenizer.from_text("hello\nworld")
    assert t.chars == sorted(set("hello\nworld"))
    assert t.vocab_size == 8
    assert t.start_id == t.chars.index("\n") == 0
    assert CharTokenizer.from_text("ba").start_id == 0  # no newline: falls back to 0
    assert CharTokenizer.from_text("\x00b\n").start_id == 1


def test_char_unknown_chars_named_once():
    t = CharTokenizer.from_text(SHAKESPEARE)
    with pytest.raises(ValueError) as e:
        t.encode("我 爱 a 我🤖 爱")
    msg = str(e.value)
    for c in ("我", "爱", "🤖"):
        assert msg.count(repr(c)) == 1, msg
    assert "'a'" not in msg and "' '" not in msg


def test_char_decode_out_of_range():
    with pytest.raises(ValueError, match="out of range"):
        CharTokenizer.from_text("ab").decode([0, 2])


def test_char_empty_vocab_rejected():
    with pytest.raises(ValueError):
        CharTokenizer.from_text("")


def test_char_save_format(tmp_path, char):
    char.save(tmp_path)
    data = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    assert data == {"type": "char", "chars": "".join(char.chars)}


# -------------------------------------------------------------------------------------------------- BPE


def test_bpe_vocab_size_and_alphabet(bpe):
    assert bpe.vocab_size == 300
    assert bpe.start_id == bpe._tk.token_to_id("<|endoftext|>")
    # Merges were learned: text like the training text takes clearly fewer tokens than bytes.
    assert len(bpe.encode(SHAKESPEARE)) < 0.7 * len(SHAKESPEARE.encode())


def test_bpe_too_small_vocab():
    with pytest.raises(ValueError, match="at least 257"):
        BPETokenizer.train("abc", vocab_size=200)


def test_bpe_train_from_iterator():
    t = BPETokenizer.train(iter([SHAKESPEARE] * 5), vocab_size=280)
    assert t.decode(t.encode(SHAKESPEARE)) == SHAKESPEARE
    assert 257 < t.vocab_size <= 280


@pytest.mark.parametrize("kind", ["bpe", "gpt2"])
def test_special_token_encodes_as_one_id(request, kind):
    tok = request.getfixturevalue(kind)
    ids = tok.encode("hi<|endoftext|>")
    assert ids[-1] == tok.start_id
    assert tok.token_strs(ids)[-1] == "<|endoftext|>"
    assert tok.decode(ids) == "hi<|endoftext|>"  # special tokens are kept when decoding


# ------------------------------------------------------------------------------------------- token_strs


def test_token_strs_readable(tok):
    text = "But, soft! what light\nthrough yonder window\tbreaks?"
    strs = tok.token_strs(tok.encode(text))
    assert not any(ch in s for s in strs for ch in "ĠĊĉ"), strs
    assert "".join(strs) == text  # spaces and newlines are shown as themselves


@pytest.mark.parametrize("kind", ["bpe", "gpt2"])
def test_token_strs_partial_bytes(request, kind):
    t = request.getfixturevalue(kind)
    # Never trained on Chinese: each UTF-8 byte of 我 (E6 88 91) is its own token.
    assert t.token_strs(t.encode("我")) == ["<0xE6>", "<0x88>", "<0x91>"]


def test_token_strs_merged_char():
    t = BPETokenizer.train("我 爱 吃 饭\n" * 50, vocab_size=270)
    ids = t.encode("我")
    assert len(ids) == 1
    assert t.token_strs(ids) == ["我"]
    # Glued to 爱 (never seen so), 爱's bytes split into pieces that are not whole characters.
    strs = t.token_strs(t.encode("我爱"))
    assert strs[0] == "我" and len(strs) > 2
    assert "".join(strs[1:]) == "<0xE7><0x88><0xB1>"


def test_token_strs_char(char):
    assert char.token_strs(char.encode("a\nb")) == ["a", "\n", "b"]


# ----------------------------------------------------------------------------------------- GPT-2 adapter


def test_gpt2_matches_hf(gpt2, bpe):
    from transformers import GPT2Tokenizer as HF

    hf = gpt2.hf
    assert isinstance(hf, HF)
    assert gpt2.vocab_size == len(hf) == bpe.vocab_size
    assert gpt2.start_id == hf.convert_tokens_to_ids("<|endoftext|>")
    for text in TEXTS:
        assert gpt2.encode(text) == hf(text)["input_ids"] == bpe.encode(text)


def test_gpt2_save_writes_hf_files(tmp_path, gpt2):
    gpt2.save(tmp_path)
    assert (tmp_path / "tokenizer_config.json").is_file()
    again = load_tokenizer(tmp_path)
    assert isinstance(again, GPT2Tokenizer)
    assert again.encode(SHAKESPEARE) == gpt2.encode(SHAKESPEARE)


def test_gpt2_missing_local_path(tmp_path):
    with pytest.raises(FileNotFoundError):
        GPT2Tokenizer.from_pretrained(tmp_path / "nope")


# ------------------------------------------------------------------------------------- save / load / detect


def test_save_load_round_trip(tmp_path, tok):
    tok.save(tmp_path / "t")
    again = load_tokenizer(tmp_path / "t")
    assert type(again) is type(tok)
    assert again.vocab_size == tok.vocab_size
    assert again.start_id == tok.start_id
    for text in TEXTS:
        assert again.encode(text) == tok.encode(text)


def test_bpe_saves_one_file(tmp_path, bpe):
    bpe.save(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]
    assert isinstance(load_tokenizer(tmp_path), BPETokenizer)


def test_load_classic_gpt2_layout(gpt2_dir):
    assert sorted(p.name for p in gpt2_dir.iterdir()) == ["merges.txt", "vocab.json"]
    assert isinstance(load_tokenizer(gpt2_dir), GPT2Tokenizer)


def test_load_missing_dir(tmp_path):
    missing = tmp_path / "no_such_dir"
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        load_tokenizer(missing)


@pytest.mark.parametrize("content", [None, "not json {", '{"type": "word"}', "[1, 2]"])
def test_load_unrecognised(tmp_path, content):
    if content is not None:
        (tmp_path / "tokenizer.json").write_text(content)
    with pytest.raises(ValueError, match=str(tmp_path.name)):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize("hub_id", ["gpt2", "gpt2-no-such-model"])
def test_gpt2_tokenizer_from_unreachable_hub_id_is_a_clear_error(hub_id):
    from workbench.tokenizers import GPT2Tokenizer

    with pytest.raises(FileNotFoundError, match="could not load a GPT-2 tokenizer"):
        GPT2Tokenizer.from_pretrained(hub_id)  # conftest puts HF offline
