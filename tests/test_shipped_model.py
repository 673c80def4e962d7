"""The default model in assets/models/shakespeare: shape, size, model card, and its held-out numbers recomputed."""

import json
import re
from pathlib import Path

import pytest
import torch

from workbench import load_model
from workbench.checkpoint import SHIPPED_DIR, shipped_models
from workbench.data import HELD_OUT_PLAYS, load_shakespeare
from workbench.train import heldout_loss

MODEL_DIR = SHIPPED_DIR / "shakespeare"


@pytest.fixture(scope="module")
def shipped():
    assert "shakespeare" in shipped_models(), "assets/models/shakespeare is missing: run `make train-default`"
    return load_model("shakespeare", device="cpu")


def test_shape_and_size_are_as_documented(shipped):
    model, tok = shipped
    c = model.config
    assert c.n_layer == 6 and c.n_head in (6, 7, 8) and c.block_size == 256
    assert 3_000_000 <= model.num_params() <= 8_000_000
    assert (MODEL_DIR / "model.safetensors").stat().st_size <= 30 * 2**20
    assert tok.vocab_size == c.vocab_size
    assert tok.decode(tok.encode("ROMEO:\nBut soft! 我 爱 吃 饭")) == "ROMEO:\nBut soft! 我 爱 吃 饭"


def test_held_out_loss_matches_the_model_card(shipped):
    model, tok = shipped
    config = json.loads((MODEL_DIR / "config.json").read_text())
    assert config["heldout_plays"] == list(HELD_OUT_PLAYS)
    val_text = load_shakespeare("val")
    ids = torch.tensor(tok.encode(val_text))
    per_token, per_char = heldout_loss(model, ids, len(val_text), model.config.block_size)
    assert per_token == pytest.approx(config["heldout_nats_per_token"], abs=1e-3)
    assert per_char == pytest.approx(config["heldout_nats_per_char"], abs=1e-3)
    card = (MODEL_DIR / "README.md").read_text()
    assert f"{per_char:.4f} nats per character" in card


def test_model_card_has_command_curve_and_samples():
    card = (MODEL_DIR / "README.md").read_text()
    assert "python -m workbench train --preset default" in card
    assert re.search(r"\| wall time \| [\d.]+ minutes", card)
    assert card.count("\n| ") >= 10  # the loss-curve table has rows
    assert card.count("**Prompt**") >= 3
