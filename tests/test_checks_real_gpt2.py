"""Checks of lessons 11-13 (real GPT-2, using a GPT, the app): each passes a correct implementation, says "not
implemented yet" for a stub and names every planted mistake; and the claims the lessons rest on hold."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench import checks
from workbench.checks.real_gpt2 import ban_variant, textbook_from_hf
from workbench.model import GPT, GPTConfig

from verdicts import correct_implementation_test, not_implemented, planted_mistake_test, stub_test


# ------------------------------------------------------- correct implementations, with switches for mistakes


def convert_hf_weights(hf_state, *, transpose_rect=True, transpose_square=True, transpose_embeddings=False,
                       order="qkv", split_dim=1, layer_offset=0, swap_norms=False, keep_lm_head=False,
                       keep_buffers=False, qkv_biases=True):
    """Lesson 11's solution by default; each switch plants one mistake."""
    C = hf_state["transformer.wte.weight"].shape[1]
    layers = sorted({int(k.split(".")[2]) for k in hf_state if k.startswith("transformer.h.")})

    def emb(t):
        return t.t() if transpose_embeddings else t

    out = {
        "tok_emb.weight": emb(hf_state["transformer.wte.weight"]),
        "pos_emb.weight": emb(hf_state["transformer.wpe.weight"]),
        "norm_f.weight": hf_state["transformer.ln_f.weight"],
        "norm_f.bias": hf_state["transformer.ln_f.bias"],
    }
    for i in layers:
        src, dst = f"transformer.h.{i}.", f"blocks.{i + layer_offset}."
        norms = (("norm1", "ln_2"), ("norm2", "ln_1")) if swap_norms else (("norm1", "ln_1"), ("norm2", "ln_2"))
        for ours, theirs in norms:
            out[f"{dst}{ours}.weight"] = hf_state[f"{src}{theirs}.weight"]
            out[f"{dst}{ours}.bias"] = hf_state[f"{src}{theirs}.bias"]
        w = hf_state[f"{src}attn.c_attn.weight"]  # (C, 3C)
        blocks = w.split(C, dim=1) if split_dim == 1 else w.chunk(3, dim=0)
        biases = hf_state[f"{src}attn.c_attn.bias"].split(C)
        for name, block, bias in zip(order, blocks, biases):
            out[f"{dst}attn.{name}.weight"] = block.t() if transpose_square else block
            if qkv_biases:
                out[f"{dst}attn.{name}.bias"] = bias
        proj = hf_state[f"{src}attn.c_proj.weight"]
        out[f"{dst}attn.out.weight"] = proj.t() if transpose_square else proj
        out[f"{dst}attn.out.bias"] = hf_state[f"{src}attn.c_proj.bias"]
        for ours, theirs in (("mlp.up", "mlp.c_fc"), ("mlp.down", "mlp.c_proj")):
            weight = hf_state[f"{src}{theirs}.weight"]
            out[f"{dst}{ours}.weight"] = weight.t() if transpose_rect else weight
            out[f"{dst}{ours}.bias"] = hf_state[f"{src}{theirs}.bias"]
        if keep_buffers:
            for suffix in ("attn.bias", "attn.masked_bias"):
                if src + suffix in hf_state:
                    out[dst + suffix] = hf_state[src + suffix]
    if keep_lm_head:
        out["lm_head.weight"] = hf_state["transformer.wte.weight"]
    return out


def convert_by_overwriting(hf_state):
    """Transposes by assigning into the caller's dict."""
    for name in list(hf_state):
        if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            hf_state[name] = hf_state[name].t()
    return convert_hf_weights(hf_state, transpose_rect=False, transpose_square=False)


def last_token_states(hidden, lengths):
    return hidden[torch.arange(hidden.shape[0]), lengths - 1]


def masked_mean(hidden, lengths):
    real = (torch.arange(hidden.shape[1]) < lengths[:, None]).float()
    return (hidden * real[..., None]).sum(1) / lengths[:, None]


def last_token_in_place(hidden, lengths):
    lengths.sub_(1)
    return hidden[torch.arange(hidden.shape[0]), lengths]


# Lesson 12's banned-words filter, correct by default and with the mistakes its check plants (use_context, whole,
# which, fill, single, multi): the checks module's own variant, so that they are defined once (checks/real_gpt2.py).
ban_tokens = ban_variant


def ban_with_negative_slice(logits, context, banned):
    """Compares the context's end with context[-len(seq[:-1]):]: context[-0:] is the whole context, so a one-token
    entry is never banned (a mistake the check meets without planting it)."""
    out = logits.clone()
    for seq in banned:
        need = list(seq[:-1])
        if list(context[-len(need):]) == need:
            out[seq[-1]] = -math.inf
    return out


def ban_in_place(logits, context, banned):
    for seq in banned:
        if len(seq) == 1 or list(context[len(context) - len(seq) + 1:]) == list(seq[:-1]):
            logits[seq[-1]] = -math.inf
    return logits


def token_probs(model, ids, ablate=(), *, align="next", use_ablate=True, output="probs", softmax_dim=-1,
                every_position=False, as_list=False):
    """Lesson 13's solution by default; each switch plants one mistake."""
    idx = torch.tensor([ids])
    with torch.no_grad():
        logits = model(idx, ablate=list(ablate) if use_ablate else [])[0]  # (T, vocab)
    if every_position:
        result = torch.softmax(logits, dim=-1).gather(1, idx[0, :, None])[:, 0]
    else:
        rows = logits[1:] if align == "wrong shift" else logits[:-1]
        targets = idx[0, :-1, None] if align == "same" else idx[0, 1:, None]
        if output == "probs":
            scores = torch.softmax(rows, dim=softmax_dim)
        elif output == "log":
            scores = torch.log_softmax(rows, dim=-1)
        else:
            scores = rows
        result = scores.gather(1, targets)[:, 0]
    return result.tolist() if as_list else result


# --------------------------------------------------------------------------------------------- the checks

CORRECT = [
    (checks.check_convert_hf_weights, convert_hf_weights),
    (checks.check_last_token_states, last_token_states),
    (checks.check_ban_tokens, ban_tokens),
    (checks.check_token_probs, token_probs),
    (checks.check_token_probs, functools.partial(token_probs, as_list=True)),  # a list is accepted too
]


test_check_passes_a_correct_implementation = correct_implementation_test(CORRECT)
test_check_on_a_stub_says_not_implemented = stub_test(
    [(check, not_implemented) for check in sorted({c for c, _ in CORRECT}, key=lambda c: c.__name__)])


P = functools.partial
PLANTED = [
    # (check, wrong implementation, words the hint must contain)
    (checks.check_convert_hf_weights, P(convert_hf_weights, transpose_rect=False, transpose_square=False),
     "Conv1D stores [in, out]"),
    (checks.check_convert_hf_weights, P(convert_hf_weights, transpose_square=False), "square matrices"),
    (checks.check_convert_hf_weights, P(convert_hf_weights, transpose_embeddings=True), "only the Conv1D weights"),
    (checks.check_convert_hf_weights, P(convert_hf_weights, order="kqv"), "wrong order"),
    (checks.check_convert_hf_weights, P(convert_hf_weights, order="vkq"), "wrong order"),
    (checks.check_convert_hf_weights, P(convert_hf_weights, split_dim=0), "along dim 1"),
    (checks.check_convert_hf_weights, P(convert_hf_weights, layer_offset=1), "numbered from 0"),
    (checks.check_convert_hf_weights, P(convert_hf_weights, swap_norms=True), "ln_1 (before attention)"),
    (checks.check_convert_hf_weights, P(convert_hf_weights, keep_lm_head=True), "tied"),
    (checks.check_convert_hf_weights, P(convert_hf_weights, keep_buffers=True), "causal-mask buffer"),
    (checks.check_convert_hf_weights, P(convert_hf_weights, qkv_biases=False), "missing"),
    (checks.check_convert_hf_weights, lambda s: dict(s), "Hugging Face's names"),
    (checks.check_convert_hf_weights, convert_by_overwriting, "changed its input `hf_state` in place"),
    (checks.check_convert_hf_weights, lambda s: None, "returned None"),
    (checks.check_convert_hf_weights, lambda s: list(s.values()), "return a dict"),
    (checks.check_last_token_states, lambda h, n: h[:, -1], "last column"),
    (checks.check_last_token_states, lambda h, n: h[torch.arange(h.shape[0]), n], "one position too far"),
    (checks.check_last_token_states, lambda h, n: h[torch.arange(h.shape[0]), n + h.shape[1]], "ran past the end"),
    (checks.check_last_token_states, lambda h, n: h[:, 0], "first position"),
    (checks.check_last_token_states, lambda h, n: h.mean(1), "padding included"),
    (checks.check_last_token_states, masked_mean, "each line's real positions"),
    (checks.check_last_token_states, lambda h, n: h[:, n - 1], "One vector per line"),
    (checks.check_last_token_states, last_token_in_place, "changed its input `lengths` in place"),
    (checks.check_ban_tokens, P(ban_tokens, use_context=False), "whatever came before it"),
    (checks.check_ban_tokens, P(ban_tokens, use_context=False, which="all"), "every token of each word"),
    (checks.check_ban_tokens, P(ban_tokens, use_context=False, which="first"), "first token of each word"),
    (checks.check_ban_tokens, P(ban_tokens, whole=True), "whole banned sequence"),
    (checks.check_ban_tokens, P(ban_tokens, fill=0.0), "set to 0"),
    (checks.check_ban_tokens, P(ban_tokens, multi=False), "only single-token entries"),
    (checks.check_ban_tokens, P(ban_tokens, single=False), "single-token entries were not banned"),
    (checks.check_ban_tokens, ban_with_negative_slice, "context[-0:]"),
    (checks.check_ban_tokens, lambda *a: torch.softmax(ban_tokens(*a), dim=-1), "probabilities, not logits"),
    (checks.check_ban_tokens, ban_in_place, "changed its input `logits` in place"),
    (checks.check_ban_tokens, lambda logits, context, banned: logits.tolist(), "torch.Tensor"),
    (checks.check_token_probs, P(token_probs, align="same"), "for the next token"),
    (checks.check_token_probs, P(token_probs, align="wrong shift"), "shifted the wrong way"),
    (checks.check_token_probs, P(token_probs, use_ablate=False), "not switched off"),
    (checks.check_token_probs, P(token_probs, output="log"), "log-probabilities"),
    (checks.check_token_probs, P(token_probs, output="logits"), "these are logits"),
    (checks.check_token_probs, P(token_probs, softmax_dim=0), "over the positions"),
    (checks.check_token_probs, P(token_probs, every_position=True), "One probability per token after the first"),
]


test_check_names_the_planted_mistake = planted_mistake_test(PLANTED)


# ------------------------------------------------------------------------ the claims the lessons rest on


class TextbookGPT(nn.Module):
    """Lesson 11's TextbookGPT, condensed (same names, same computation)."""

    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd):
        super().__init__()
        self.n_head = n_head
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.pos_emb = nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(dict(
                norm1=nn.LayerNorm(n_embd),
                attn=nn.ModuleDict({name: nn.Linear(n_embd, n_embd) for name in ("q", "k", "v", "out")}),
                norm2=nn.LayerNorm(n_embd),
                mlp=nn.ModuleDict(dict(up=nn.Linear(n_embd, 4 * n_embd), down=nn.Linear(4 * n_embd, n_embd))),
            ))
            for _ in range(n_layer)
        )
        self.norm_f = nn.LayerNorm(n_embd)

    def forward(self, idx):
        B, T = idx.shape
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(T))
        for block in self.blocks:
            h = block["norm1"](x)
            C = h.shape[-1]
            q, k, v = (block["attn"][n](h).view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for n in "qkv")
            scores = (q @ k.transpose(-2, -1) / math.sqrt(C // self.n_head)).masked_fill(
                ~torch.tril(torch.ones(T, T, dtype=torch.bool)), float("-inf"))
            y = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, T, C)
            x = x + block["attn"]["out"](y)
            x = x + block["mlp"]["down"](F.gelu(block["mlp"]["up"](block["norm2"](x)), approximate="tanh"))
        return self.norm_f(x) @ self.tok_emb.weight.T


def test_textbook_mapping_reproduces_hf_logits():
    """Lesson 11's claim: TextbookGPT with converted weights gives transformers' logits to 1e-4."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=101, n_positions=32, n_embd=48, n_layer=3, n_head=4, bos_token_id=0,
                        eos_token_id=0, attn_implementation="eager")
    hf = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if ".ln_" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    mine = TextbookGPT(101, 32, 3, 4, 48).eval()
    mine.load_state_dict(textbook_from_hf(hf.state_dict()), strict=True)
    idx = torch.randint(101, (2, 32))
    with torch.no_grad():
        assert torch.allclose(mine(idx), hf(idx).logits, atol=1e-4, rtol=1e-4)
    # and the lesson's solution builds exactly the reference mapping
    reference, solution = textbook_from_hf(hf.state_dict()), convert_hf_weights(hf.state_dict())
    assert reference.keys() == solution.keys()
    assert all(torch.equal(reference[k], solution[k]) for k in reference)


def test_right_padding_leaves_the_last_real_state_unchanged():
    """Lesson 12's claim: in a causal model, padding after a line does not change the line's last real state."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()
    long_line, short_line = torch.randint(40, (12,)).tolist(), torch.randint(40, (4,)).tolist()
    ids = torch.tensor([long_line, short_line + [0] * 8])
    with torch.no_grad():
        padded = model(ids, unembed=False)
        alone = model(torch.tensor([short_line]), unembed=False)[0, -1]
    assert torch.allclose(last_token_states(padded, torch.tensor([12, 4]))[1], alone, atol=1e-5)
    assert not torch.allclose(padded[1, -1], alone, atol=1e-3)


def test_ban_tokens_reference_is_what_generate_bans():
    """Lesson 12's claim: the pipeline's rule is what SamplingConfig(banned_words=...) applies during generation."""
    from workbench import SamplingConfig, generate
    from workbench.tokenizers import CharTokenizer

    tok = CharTokenizer.from_text("abcdefgh \n")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16)).eval()
    for seed in range(5):
        text = generate(model, tok, "a", SamplingConfig(max_new_tokens=40, seed=seed, banned_words=["bc", "d"]),
                        capture=False).text
        assert "bc" not in "a" + text and "d" not in text
