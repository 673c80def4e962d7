"""The logit lens: every read of the residual stream through the model's own final norm and unembedding."""

import pytest
import torch
from torch import nn

from workbench import GPT, GPTConfig, LogitLens
from workbench.tokenizers import CharTokenizer

CONFIG = GPTConfig(vocab_size=23, block_size=16, n_layer=3, n_head=2, n_embd=12)


@pytest.fixture(scope="module")
def traced():
    torch.manual_seed(0)
    model = GPT(CONFIG).eval()
    idx = torch.randint(0, CONFIG.vocab_size, (2, 8))
    with torch.no_grad():
        logits, trace = model.run_with_trace(idx)
    return model, logits, trace


def by_hand(model: GPT, resid: torch.Tensor) -> torch.Tensor:
    return torch.softmax(model.lm_head(model.transformer.ln_f(resid)), dim=-1)


def test_reads_follow_the_stream_and_the_last_is_the_model_output(traced):
    model, logits, trace = traced
    with torch.no_grad():
        lens = trace.logit_lens(model)
    assert lens.probs.shape == lens.ids.shape == (2 * CONFIG.n_layer, 2, 8, CONFIG.vocab_size)
    assert lens.read_names == ["L0 attn", "L0 mlp", "L1 attn", "L1 mlp", "L2 attn", "L2 mlp"]
    assert (lens.probs[..., :-1] >= lens.probs[..., 1:]).all()  # most likely first
    # Read 2 is layer 1 after its attention, read 3 after its MLP: each is ln_f then lm_head of that stream.
    for read, resid in ((2, trace.resid_mid[1]), (3, trace.resid_post[1])):
        expected = by_hand(model, resid[1, 5])
        torch.testing.assert_close(lens.probs[read, 1, 5], expected[lens.ids[read, 1, 5]])
    output = torch.softmax(logits, dim=-1).sort(dim=-1, descending=True).values
    torch.testing.assert_close(lens.probs[-1], output, atol=1e-6, rtol=0)


def test_positions_and_k_pick_what_is_kept(traced):
    model, _, trace = traced
    with torch.no_grad():
        full = trace.logit_lens(model)
        last = trace.logit_lens(model, positions=-1, k=4)
    assert last.positions == [7] and last.probs.shape == (2 * CONFIG.n_layer, 2, 1, 4)
    assert torch.equal(last.ids, full.ids[:, :, 7:, :4])
    torch.testing.assert_close(last.probs, full.probs[:, :, 7:, :4])
    with pytest.raises(ValueError, match="outside the 8 traced positions"):
        trace.logit_lens(model, positions=[3, 8])
    with pytest.raises(ValueError, match="k >= 1"):
        trace.logit_lens(model, k=0)


def test_the_lens_reads_through_whatever_final_norm_the_model_has(traced):
    """No LayerNorm special case: swap the final norm for another module and the lens follows it."""
    model, _, trace = traced

    class Halve(nn.Module):  # not a norm at all: any module the model's own output would go through
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x / 2

    original = model.transformer.ln_f
    try:
        model.transformer.ln_f = Halve()
        with torch.no_grad():
            lens = trace.logit_lens(model, positions=2, k=3)
            expected = torch.softmax(model.lm_head(trace.resid_post[0, 0, 2] / 2), dim=-1).topk(3)
    finally:
        model.transformer.ln_f = original
    assert lens.ids[1, 0, 0].tolist() == expected.indices.tolist()
    torch.testing.assert_close(lens.probs[1, 0, 0], expected.values)


def test_candidates_carry_the_display_strings_and_concat_joins_positions(traced):
    model, _, trace = traced
    tok = CharTokenizer.from_text("abcdefghijklmnopqrstuvw")  # 23 characters: one per token id
    with torch.no_grad():
        first = trace.logit_lens(model, positions=1, k=3, tok=tok)
        second = trace.logit_lens(model, positions=4, k=3)  # no tokenizer: "[id]"
    rows = first.candidates(batch=1, k=2)
    assert len(rows) == 2 * CONFIG.n_layer and all(len(row) == 2 for row in rows)
    top = rows[-1][0]
    assert top.token_id == first.ids[-1, 1, 0, 0].item() and top.token_str == tok.token_strs([top.token_id])[0]
    assert second.candidates()[0][0].token_str == f"[{second.ids[0, 0, 0, 0].item()}]"
    both = LogitLens.concat([first, second])
    assert both.positions == [1, 4] and both.probs.shape == (2 * CONFIG.n_layer, 2, 2, 3)
    assert both.candidates(position_index=1) == second.candidates()
    with pytest.raises(ValueError, match="at least one lens"):
        LogitLens.concat([])
    with torch.no_grad():
        other_k = trace.logit_lens(model, positions=5, k=2)
    with pytest.raises(ValueError, match="cannot be joined"):
        LogitLens.concat([first, other_k])
