"""Checks for lessons 11-13: real GPT-2 weights, using a GPT, the app.

* ``convert_hf_weights``: the mapping from a ``transformers`` ``GPT2LMHeadModel`` state_dict to lesson 11's
  ``TextbookGPT`` names (:func:`textbook_from_hf`, documented there), on random HF checkpoints built offline;
* ``last_token_states``: ``hidden[arange(B), lengths - 1]``;
* ``ban_tokens``: the ``penalties`` stage of :func:`workbench.generate.sampling_pipeline`;
* ``token_probs``: a teacher-forced forward pass of :class:`workbench.model.GPT` with ``ablate=``, the computation
  behind the app's ablation view (``workbench.app.token_probs``, which this module does not import: only app.py
  may import gradio).
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Sequence

import torch

from workbench.checks.core import (
    Hint,
    _call_keeping_inputs,
    _compare_tensors,
    _fresh_generator,
    _randomize,
    run_check,
)
from workbench.generate import SamplingConfig, sampling_pipeline
from workbench.model import GPT, GPTConfig

# ---------------------------------------------------------------------------------------------- 11 real GPT-2

_CONV1D_HINT = (
    "Hugging Face's Conv1D stores [in, out] and nn.Linear stores [out, in]: transpose the weights that come from "
    "attn.c_attn, attn.c_proj, mlp.c_fc and mlp.c_proj"
)
_TEXTBOOK_NAMES = (
    "tok_emb, pos_emb, blocks.{i}.norm1, blocks.{i}.attn.q/k/v/out, blocks.{i}.norm2, blocks.{i}.mlp.up/down, norm_f"
)


def textbook_from_hf(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Lesson 11's mapping: a ``GPT2LMHeadModel`` state_dict -> ``TextbookGPT``'s state_dict.

    ``tok_emb``/``pos_emb``/``norm_f`` are ``wte``/``wpe``/``ln_f``; per layer ``i``: ``norm1``/``norm2`` are
    ``ln_1``/``ln_2``; ``attn.q``/``k``/``v`` are the three ``[C, C]`` column blocks of ``c_attn``'s ``[C, 3C]`` weight,
    each transposed, and the three thirds of its bias; ``attn.out``, ``mlp.up``, ``mlp.down`` are ``attn.c_proj``,
    ``mlp.c_fc``, ``mlp.c_proj`` with the weights transposed. ``lm_head.weight`` (tied) and the causal-mask buffers
    ``attn.bias``/``attn.masked_bias`` of older checkpoints have no counterpart.
    """
    C = hf_state["transformer.wte.weight"].shape[1]
    n_layer = 1 + max(int(name.split(".")[2]) for name in hf_state if name.startswith("transformer.h."))
    out = {
        "tok_emb.weight": hf_state["transformer.wte.weight"],
        "pos_emb.weight": hf_state["transformer.wpe.weight"],
        "norm_f.weight": hf_state["transformer.ln_f.weight"],
        "norm_f.bias": hf_state["transformer.ln_f.bias"],
    }
    for i in range(n_layer):
        src, dst = f"transformer.h.{i}.", f"blocks.{i}."
        for ours, theirs in (("norm1", "ln_1"), ("norm2", "ln_2")):
            out[f"{dst}{ours}.weight"] = hf_state[f"{src}{theirs}.weight"]
            out[f"{dst}{ours}.bias"] = hf_state[f"{src}{theirs}.bias"]
        w = hf_state[f"{src}attn.c_attn.weight"].t()  # (3C, C): rows are the outputs, [q | k | v]
        b = hf_state[f"{src}attn.c_attn.bias"]
        for j, name in enumerate("qkv"):
            out[f"{dst}attn.{name}.weight"] = w[j * C : (j + 1) * C]
            out[f"{dst}attn.{name}.bias"] = b[j * C : (j + 1) * C]
        for ours, theirs in (("attn.out", "attn.c_proj"), ("mlp.up", "mlp.c_fc"), ("mlp.down", "mlp.c_proj")):
            out[f"{dst}{ours}.weight"] = hf_state[f"{src}{theirs}.weight"].t()
            out[f"{dst}{ours}.bias"] = hf_state[f"{src}{theirs}.bias"]
    return out


def _random_hf_state(
    g: torch.Generator, vocab: int, ctx: int, n_embd: int, n_layer: int, n_head: int, old_buffers: bool
) -> dict[str, torch.Tensor]:
    """The state_dict of a random ``GPT2LMHeadModel`` (every parameter distinct), built offline.

    ``old_buffers`` adds the causal-mask buffers that checkpoints from older ``transformers`` versions carry.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=vocab, n_positions=ctx, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                        bos_token_id=0, eos_token_id=0)
    state = dict(_randomize(GPT2LMHeadModel(config), g).state_dict())
    if old_buffers:
        for i in range(n_layer):
            causal = torch.tril(torch.ones(ctx, ctx, dtype=torch.bool))
            state[f"transformer.h.{i}.attn.bias"] = causal.view(1, 1, ctx, ctx)
            state[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    return state


_LAYER_KEY = re.compile(r"^blocks\.(\d+)\.")


def _extra_key_hint(extra: list[str], n_layer: int) -> str:
    """The hint for keys the student's dict has and TextbookGPT does not."""
    buffers = [k for k in extra if k.endswith((".attn.bias", ".attn.masked_bias"))]
    if buffers:
        return (f"{buffers[0]!r} comes from a causal-mask buffer that older checkpoints carry (attn.bias, "
                "attn.masked_bias), not from a weight: skip those entries")
    hf_names = [k for k in extra if k.startswith("transformer.")]
    if hf_names:
        return (f"your dict still has Hugging Face's names ({hf_names[0]!r}, ...): every key must be one of "
                f"TextbookGPT's: {_TEXTBOOK_NAMES}")
    if any(k.endswith("lm_head.weight") for k in extra):
        return ("lm_head.weight has no place in TextbookGPT: the unembedding is tied to the token table, so it is "
                "tok_emb.weight already; skip it")
    beyond = [k for k in extra if (m := _LAYER_KEY.match(k)) and int(m.group(1)) >= n_layer]
    if beyond:
        return (f"{beyond[0]!r}: this checkpoint has layers 0..{n_layer - 1}; layers are numbered from 0, and "
                "transformer.h.{i} goes to blocks.{i}")
    return f"unexpected key {extra[0]!r}: TextbookGPT's names are {_TEXTBOOK_NAMES}"


def _shape_hint(key: str, got: torch.Tensor, want: torch.Tensor) -> str:
    """The hint for a tensor of the wrong shape."""
    g, w = tuple(got.shape), tuple(want.shape)
    if re.search(r"\.attn\.[qkv]\.", key) and g != w[::-1]:
        return (f"{key} has shape {g}, expected {w}: c_attn's [C, 3C] weight holds q, k and v side by side along "
                "its output axis (dim 1); split it into three [C, C] blocks along dim 1 and transpose each (and "
                "split the [3C] bias the same way)")
    if len(w) == 2 and g == w[::-1]:
        if key.startswith(("tok_emb", "pos_emb")):
            return (f"{key} was transposed: only the Conv1D weights are stored [in, out]; embeddings (one row per "
                    "token or position) and LayerNorms are copied as they are")
        return f"{key} has shape {g}, expected {w}: {_CONV1D_HINT}"
    return f"{key} has shape {g}, expected {w}"


def _value_hint(key: str, got: torch.Tensor, want: dict[str, torch.Tensor]) -> str:
    """The hint for a tensor of the right shape with the wrong values."""
    target = want[key]
    if got.dim() == 2 and got.shape == target.shape[::-1] and torch.equal(got, target.t()):
        return (f"{key} is the transpose of what it should be. {_CONV1D_HINT}; square matrices load either way, so "
                "this mistake shows no shape error")
    for other, tensor in want.items():
        if other == key or tensor.shape != got.shape or not torch.equal(got, tensor):
            continue
        same_role = _LAYER_KEY.sub("", key) == _LAYER_KEY.sub("", other)
        if same_role:
            return (f"{key} holds the weights of {other}: layer i of Hugging Face's checkpoint "
                    "(transformer.h.{i}) goes to blocks.{i}")
        roles = {re.sub(r"\.attn\.[qkv]\.", ".attn.*.", k) for k in (key, other)}
        if len(roles) == 1:
            return (f"{key} holds what belongs in {other}: q, k and v are in the wrong order; c_attn's outputs are "
                    "q first (columns 0..C-1 of Hugging Face's weight), then k, then v")
        if {re.sub(r"norm[12]", "norm*", k) for k in (key, other)} == {re.sub(r"norm[12]", "norm*", key)}:
            return (f"{key} holds what belongs in {other}: ln_1 (before attention) goes to norm1, ln_2 (before "
                    "the MLP) to norm2")
        return f"{key} holds the values that belong in {other}"
    return f"the values of {key} differ from the checkpoint's; no known mistake matches"


def check_convert_hf_weights(
    convert_hf_weights: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
) -> bool:
    """``convert_hf_weights(hf_state)``: a ``GPT2LMHeadModel`` state_dict renamed for lesson 11's ``TextbookGPT``.

    Run on two random GPT-2 checkpoints built offline (the second with the causal-mask buffers of older
    checkpoints); every tensor must equal :func:`textbook_from_hf`'s exactly, and ``hf_state`` must be left as it was.
    """

    def body() -> str:
        g = _fresh_generator()
        cases = ((50, 16, 12, 2, 3, False), (40, 8, 8, 3, 2, True))  # (vocab, ctx, n_embd, n_layer, n_head, old)
        n_keys = 0
        for vocab, ctx, C, L, H, old_buffers in cases:
            hf_state = _random_hf_state(g, vocab, ctx, C, L, H, old_buffers)
            before = {k: v.clone() for k, v in hf_state.items()}
            got = convert_hf_weights(hf_state)
            if set(hf_state) != set(before) or any(not torch.equal(hf_state[k], v) for k, v in before.items()):
                raise Hint("your code changed its input `hf_state` in place (an in-place op such as `.t_()`, a "
                           "`pop`, or an assignment into it); leave it as it is and build a new dict")
            if got is None:
                raise Hint("convert_hf_weights returned None: return the new dict")
            if not isinstance(got, dict):
                raise Hint(f"return a dict from TextbookGPT's names to tensors, got {type(got).__name__}")
            want = textbook_from_hf(hf_state)
            extra, missing = sorted(set(got) - set(want)), sorted(set(want) - set(got))
            if extra:
                raise Hint(_extra_key_hint(extra, L))
            if missing:
                raise Hint(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} "
                           f"({len(missing)} of {len(want)} names): TextbookGPT needs {_TEXTBOOK_NAMES}, for every "
                           f"layer 0..{L - 1}")
            for key in sorted(want):
                if not isinstance(got[key], torch.Tensor):
                    raise Hint(f"{key} is a {type(got[key]).__name__}, not a torch.Tensor")
                if got[key].shape != want[key].shape:
                    raise Hint(_shape_hint(key, got[key], want[key]))
            for key in sorted(want):
                if not torch.equal(got[key].to(want[key].dtype), want[key]):
                    raise Hint(_value_hint(key, got[key], want))
            n_keys = len(want)
        return (f"every tensor in place for {len(cases)} random GPT-2 checkpoints ({n_keys} names in the last), "
                "old-format mask buffers skipped")

    return run_check("convert_hf_weights", body)


# ---------------------------------------------------------------------------------------------- 12 using a GPT


def _masked_mean(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    real = (torch.arange(hidden.shape[1]) < lengths[:, None]).float()  # (B, T)
    return (hidden * real[..., None]).sum(1) / lengths[:, None]


def check_last_token_states(last_token_states: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> bool:
    """``last_token_states(hidden, lengths)``: ``hidden`` ``(B, T, C)`` of right-padded lines, ``lengths`` ``(B,)``
    -> ``(B, C)``, row ``b`` being ``hidden[b, lengths[b] - 1]``."""

    def body() -> str:
        g = _fresh_generator()
        # (B, T, C, one line fills the batch). The first case has every line shorter than T, so that the
        # off-by-one mistake runs (and is named) there instead of indexing past the end.
        cases = ((4, 7, 5, False), (3, 6, 8, True), (1, 1, 4, True), (5, 9, 3, True))
        for B, T, C, full in cases:
            hidden = torch.randn(B, T, C, generator=g)
            lengths = torch.randint(2, T, (B,), generator=g) if T > 2 else torch.full((B,), T)
            if full:
                lengths[int(torch.randint(B, (1,), generator=g))] = T
            try:
                got = _call_keeping_inputs(last_token_states, ["hidden", "lengths"], hidden, lengths)
            except IndexError as err:
                raise Hint(f"an index ran past the end ({err}): a line of n tokens ends at position n - 1, since "
                           "positions start at 0") from None
            rows = torch.arange(B)
            want = hidden[rows, lengths - 1]
            mistakes = {
                "this is the last column of the padded batch, which is padding for every shorter line: take "
                "position lengths[b] - 1 of row b": lambda: hidden[:, -1],
                "one position too far: a line of n tokens ends at position n - 1 (positions start at 0), and "
                "position n is padding": lambda: hidden[rows, lengths],
                "this is the first position: in a causal model it has seen only the first token, while the last "
                "real token has read the whole line": lambda: hidden[:, 0],
                "this is the mean over all T positions, padding included: take the state at the last real "
                "position": lambda: hidden.mean(1),
                "this is the mean over each line's real positions: a fine pooling too, but the exercise takes the "
                "last real position, the only one that has read the whole line": lambda: _masked_mean(hidden, lengths),
            }
            shape_hint = ("One vector per line: (B, C). Index the batch and position axes together: "
                          "hidden[torch.arange(B), lengths - 1].")
            _compare_tensors(got, want, mistakes, atol=1e-6, rtol=1e-6, shape_hint=shape_hint)
        return f"picks each line's last real token on {len(cases)} random padded batches"

    return run_check("last_token_states", body)


def _ban_variant(
    logits: torch.Tensor,
    context: Sequence[int],
    banned: Sequence[Sequence[int]],
    *,
    use_context: bool = True,
    whole: bool = False,
    which: str = "last",
    fill: float = -math.inf,
    single: bool = True,
    multi: bool = True,
) -> torch.Tensor:
    """Banned-token logits with switches to plant one mistake at a time (the defaults are correct)."""
    out = logits.clone()
    for seq in banned:
        seq = list(seq)
        if (len(seq) == 1 and not single) or (len(seq) > 1 and not multi):
            continue
        need = seq if whole else seq[:-1]
        if use_context and need and list(context[len(context) - len(need) :]) != need:
            continue
        targets = {"last": seq[-1:], "first": seq[:1], "all": seq}[which]
        out[targets] = fill
    return out


def _penalties_stage(logits: torch.Tensor, context: list[int], banned: list[list[int]]) -> torch.Tensor:
    """The workbench pipeline's distribution after bans (the raw one when nothing is banned)."""
    if not banned:
        return torch.softmax(logits, dim=-1)
    # temperature 0: greedy, so the pipeline draws nothing and needs no generator
    _, dists = sampling_pipeline(logits, SamplingConfig(temperature=0), context=context, banned=banned)
    return dict(dists)["penalties"]


def check_ban_tokens(ban_tokens: Callable[[torch.Tensor, list[int], list[list[int]]], torch.Tensor]) -> bool:
    """``ban_tokens(logits, context, banned)``: logits ``(vocab,)`` with ``-inf`` at every token that would complete
    a banned sequence: ``[t]`` bans ``t`` always, ``[a, ..., y, z]`` bans ``z`` when ``context`` ends with
    ``[a, ..., y]``.

    Compared as distributions (softmax of the result) with the ``penalties`` stage of
    :func:`workbench.generate.sampling_pipeline`, so any very negative fill value passes.
    """

    def body() -> str:
        g = _fresh_generator()
        n_cases = 0
        for vocab, kind in ((24, "structured"), (30, "nothing banned"), (20, "no context"), (100, "random")):
            logits = torch.randn(vocab, generator=g) * 2
            perm = torch.randperm(vocab, generator=g).tolist()
            a, b, c, d, e = perm[:5]
            if kind == "structured":  # every mistake below gives a different result here
                context = [perm[5 + int(i)] for i in torch.randint(vocab - 5, (8,), generator=g)]
                banned = [[a], [context[-1], b], [context[-2], context[-1], c], [d, e], context[-2:]]
            elif kind == "nothing banned":
                context, banned = perm[5:12], []
            elif kind == "no context":
                context, banned = [], [[a], [b, c]]
            else:
                context = torch.randint(vocab, (12,), generator=g).tolist()
                banned = [[t] for t in perm[:3]]
                banned += [context[-2:] + [perm[3]], [perm[4], perm[5]], context[-1:] + [perm[6]]]
            got = _call_keeping_inputs(ban_tokens, ["logits", "context", "banned"], logits, context, banned)
            if not isinstance(got, torch.Tensor):
                raise Hint(f"return the logits as a torch.Tensor of shape ({vocab},), got {type(got).__name__}")
            if got.shape != logits.shape:
                raise Hint(f"output shape {tuple(got.shape)}, expected ({vocab},): the same logits, with -inf at "
                           "the banned tokens")
            want = _penalties_stage(logits, context, banned)

            def as_probs(variant: torch.Tensor) -> torch.Tensor:
                return torch.softmax(variant.float(), dim=-1)

            mistakes = {
                "a multi-token word's last token was banned whatever came before it: ban it only when the context "
                "ends with the word's other tokens (seq[:-1])": lambda: as_probs(
                    _ban_variant(logits, context, banned, use_context=False)),
                "every token of each word was banned: that also blocks every word that shares a piece with it; "
                "ban only the token that would complete the word": lambda: as_probs(
                    _ban_variant(logits, context, banned, use_context=False, which="all")),
                "the first token of each word was banned: ban the token that would complete it (seq[-1]), when the "
                "context ends with the rest (seq[:-1])": lambda: as_probs(
                    _ban_variant(logits, context, banned, use_context=False, which="first")),
                "the context was compared with the whole banned sequence: compare it with all but its last token, "
                "which is the one to ban": lambda: as_probs(_ban_variant(logits, context, banned, whole=True)),
                "banned logits were set to 0, which leaves them probability (e^0 = 1, like any other logit of 0): "
                "set them to float('-inf')": lambda: as_probs(_ban_variant(logits, context, banned, fill=0.0)),
                "only single-token entries were banned: a word of several tokens is banned at its last token, when "
                "the context ends with the rest": lambda: as_probs(_ban_variant(logits, context, banned, multi=False)),
                "single-token entries were not banned: a sequence [t] bans t always (careful: context[-0:] is the "
                "whole context, not an empty list)": lambda: as_probs(
                    _ban_variant(logits, context, banned, single=False)),
                "these are probabilities, not logits: return the logits with -inf at the banned tokens (the "
                "sampling pipeline takes the softmax afterwards)": lambda: as_probs(
                    torch.softmax(_ban_variant(logits, context, banned), dim=-1)),
            }
            nan_hint = ("NaN in the output: usually every logit was set to -inf (then softmax divides 0 by 0), or "
                        "-inf was multiplied by 0; write -inf only at the banned tokens")
            _compare_tensors(as_probs(got), want, mistakes, atol=1e-6, rtol=1e-5, nan_hint=nan_hint)
            n_cases += 1
        return f"bans exactly what the workbench's sampling pipeline bans, on {n_cases} random cases"

    return run_check("ban_tokens", body)


# ----------------------------------------------------------------------------------------------- 13 the app


def check_token_probs(token_probs: Callable[..., Any]) -> bool:
    """``token_probs(model, ids, ablate=())``: ``len(ids) - 1`` probabilities, entry ``t`` being
    ``p(ids[t + 1] | ids[: t + 1])`` with the ``(layer, head)`` pairs in ``ablate`` switched off.

    The reference is one teacher-forced forward pass of a random :class:`workbench.model.GPT` with ``ablate=``.
    A list or a tensor is accepted.
    """

    def body() -> str:
        g = _fresh_generator()
        config = GPTConfig(vocab_size=24, block_size=16, n_layer=2, n_head=4, n_embd=16)
        model = _randomize(GPT(config), g)
        cases = ((10, []), (16, [(0, 1), (1, 3)]), (2, [(1, 0)]), (7, [(0, 0), (0, 2), (1, 1)]))
        for T, heads in cases:
            ids = torch.randint(config.vocab_size, (T,), generator=g).tolist()
            idx = torch.tensor([ids])
            with torch.no_grad():
                logits = model(idx, ablate=heads)[0]  # (T, vocab)
                plain = model(idx)[0]
            nxt = idx[0, 1:, None]  # the token that came next, (T - 1, 1)
            want = torch.softmax(logits[:-1], dim=-1).gather(1, nxt)[:, 0]
            got = _call_keeping_inputs(token_probs, ["model", "ids", "ablate"], model, ids, heads)
            if isinstance(got, (list, tuple)):
                got = torch.tensor([float(p) for p in got])
            if isinstance(got, torch.Tensor):
                got = got.detach().float().cpu()
            mistakes = {
                "each position's distribution is for the next token: pair logits[t] with ids[t + 1], not ids[t]": (
                    lambda: torch.softmax(logits[:-1], dim=-1).gather(1, idx[0, :-1, None])[:, 0]
                ),
                "shifted the wrong way: position t predicts token t + 1, so pair logits[t] with ids[t + 1] for "
                "t = 0 .. T - 2": lambda: torch.softmax(logits[1:], dim=-1).gather(1, nxt)[:, 0],
                "the heads were not switched off: pass them to the model, model(idx, ablate=ablate)": lambda: (
                    torch.softmax(plain[:-1], dim=-1).gather(1, nxt)[:, 0]
                ),
                "these are log-probabilities: return probabilities (softmax, not log_softmax)": lambda: (
                    torch.log_softmax(logits[:-1], dim=-1).gather(1, nxt)[:, 0]
                ),
                "these are logits: turn each position's logits into probabilities with a softmax over the "
                "vocabulary first": lambda: logits[:-1].gather(1, nxt)[:, 0],
                "the softmax ran over the positions: normalise over the vocabulary, the last axis": lambda: (
                    torch.softmax(logits[:-1], dim=0).gather(1, nxt)[:, 0]
                ),
            }
            shape_hint = ("One probability per token after the first: (len(ids) - 1,). The first token has nothing "
                          "before it, and the last position predicts a token that is not in ids.")
            _compare_tensors(got, want, mistakes, atol=1e-5, rtol=1e-4, shape_hint=shape_hint)
        return f"matches a teacher-forced forward pass with heads ablated on {len(cases)} random texts"

    return run_check("token_probs", body)


__all__ = [name for name in dir() if name.startswith("check_")]
