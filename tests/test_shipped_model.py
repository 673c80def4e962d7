"""The default model in assets/models/shakespeare: shape, size, model card, and its held-out numbers recomputed."""

import json
import math
import re

import pytest
import torch
from safetensors import safe_open
from tokenizers import Tokenizer

from workbench import load_model
from workbench.checkpoint import SHIPPED_DIR, shipped_models
from workbench.data import HELD_OUT_PLAYS, load_shakespeare
from workbench.train import heldout_loss

MODEL_DIR = SHIPPED_DIR / "shakespeare"


@pytest.fixture(scope="module")
def shipped():
    assert "shakespeare" in shipped_models(), "assets/models/shakespeare is missing: run `make train-default`"
    return load_model("shakespeare", device="cpu")


def weight_shapes() -> dict[str, tuple[int, ...]]:
    """The shape of every tensor in model.safetensors, read from the file itself (not through load_model)."""
    with safe_open(MODEL_DIR / "model.safetensors", "pt") as f:
        return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}


def test_shape_and_size_are_as_documented(shipped):
    """The shape the README documents (6 layers x 6 heads x 192, context 256, BPE 4096, 3.5M parameters), in the
    config file, in the weights themselves, and in the loaded model."""
    model, tok = shipped
    saved = json.loads((MODEL_DIR / "config.json").read_text())["model"]
    documented = dict(n_layer=6, n_head=6, n_embd=192, block_size=256, vocab_size=4096)
    assert {k: saved[k] for k in documented} == documented
    shapes = weight_shapes()
    layers = {int(name.split(".")[2]) for name in shapes if name.startswith("transformer.h.")}
    assert layers == set(range(6))
    assert shapes["transformer.wte.weight"] == (4096, 192)  # vocabulary x width; the unembedding is tied to it
    assert shapes["transformer.wpe.weight"] == (256, 192)  # context x width
    for i in range(6):
        assert shapes[f"transformer.h.{i}.attn.c_attn.weight"] == (3 * 192, 192)  # q, k, v
        assert shapes[f"transformer.h.{i}.mlp.c_fc.weight"] == (4 * 192, 192)
    # The head count is not in any weight's shape: the config says it, and the loaded model must use it.
    c = model.config
    assert (c.n_layer, c.n_head, c.n_embd, c.block_size, c.vocab_size) == (6, 6, 192, 256, 4096)
    n_params = sum(math.prod(shape) for shape in shapes.values())
    assert model.num_params() == n_params and round(n_params / 1e6, 1) == 3.5
    assert (MODEL_DIR / "model.safetensors").stat().st_size <= 30 * 2**20
    assert tok.vocab_size == c.vocab_size
    assert tok.decode(tok.encode("ROMEO:\nBut soft! 我 爱 吃 饭")) == "ROMEO:\nBut soft! 我 爱 吃 饭"


def held_out_nats(model, ids: list[int], block_size: int) -> float:
    """The model card's definition, written out here apart from workbench.train: the held-out text cut into
    consecutive windows of ``block_size`` predictions (the last one shorter), each read from a fresh context; the
    summed negative log-probability of every token after the first, each predicted once."""
    starts = range(0, len(ids) - 1, block_size)
    windows = [ids[s : s + block_size + 1] for s in starts]  # block_size inputs, and the token after each
    full = [w for w in windows if len(w) == block_size + 1]
    batches = [full[i : i + 32] for i in range(0, len(full), 32)] + [[w] for w in windows[len(full) :]]
    total = 0.0
    with torch.inference_mode():
        for batch in batches:
            tokens = torch.tensor(batch)  # (B, T + 1)
            log_probs = torch.log_softmax(model(tokens[:, :-1]).float(), dim=-1)  # (B, T, vocab)
            picked = log_probs.gather(-1, tokens[:, 1:, None])  # (B, T, 1): the log-prob of each next token
            total -= picked.double().sum().item()
    return total


@pytest.fixture(scope="module")
def held_out():
    """The held-out text and its token ids, tokenized by the `tokenizers` library from the shipped tokenizer.json."""
    text = load_shakespeare("val")
    return text, Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json")).encode(text).ids


def test_held_out_loss_in_the_model_card_is_the_models(shipped, held_out):
    """The card's numbers, recomputed from the weights by the definition above, not by the code that wrote them."""
    model, tok = shipped
    text, ids = held_out
    config = json.loads((MODEL_DIR / "config.json").read_text())
    assert config["heldout_plays"] == list(HELD_OUT_PLAYS)
    assert ids == tok.encode(text)  # the ids the model reads are the tokenizer file's
    nats = held_out_nats(model, ids, model.config.block_size)
    # The card keeps 4 decimals (5e-5); the rest is float32 summed in another order.
    assert nats / (len(ids) - 1) == pytest.approx(config["heldout_nats_per_token"], abs=1e-4)
    assert nats / len(text) == pytest.approx(config["heldout_nats_per_char"], abs=1e-4)
    card = (MODEL_DIR / "README.md").read_text()
    assert f"{config['heldout_nats_per_char']:.4f} nats per character" in card


def test_heldout_loss_computes_the_cards_definition(shipped, held_out):
    """workbench.train.heldout_loss, which writes every model card, against the definition on a part of the held-out
    text: ten full windows and a shorter last one."""
    model, _ = shipped
    _, ids = held_out
    T = model.config.block_size
    part = ids[: 10 * T + 1 + 57]  # 10 windows of T predictions, then a last window of 57
    want = held_out_nats(model, part, T)
    per_token, per_char = heldout_loss(model, torch.tensor(part), 1000, T)
    assert per_token == pytest.approx(want / (10 * T + 57), rel=1e-6)
    assert per_char == pytest.approx(want / 1000, rel=1e-6)


def test_model_card_has_command_curve_and_samples():
    card = (MODEL_DIR / "README.md").read_text()
    assert "python -m workbench train --preset default" in card
    assert re.search(r"\| wall time \| [\d.]+ minutes", card)
    assert card.count("\n| ") >= 10  # the loss-curve table has rows
    assert card.count("**Prompt**") >= 3
