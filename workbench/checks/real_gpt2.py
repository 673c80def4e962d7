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
    Say,
    Verdict,
    _call_keeping_inputs,
    _compare_tensors,
    _fresh_generator,
    randomize,
    run_check,
    say,
)
from workbench.generate import SamplingConfig, sampling_pipeline
from workbench.model import GPT, GPTConfig

# ---------------------------------------------------------------------------------------------- 11 real GPT-2

_CONV1D_HINT = say(
    "Hugging Face's Conv1D stores [in, out] and nn.Linear stores [out, in]: transpose the weights that come from "
    "attn.c_attn, attn.c_proj, mlp.c_fc and mlp.c_proj",
    "Hugging Face 的 Conv1D 按 [in, out] 存储，nn.Linear 按 [out, in] 存储：来自 attn.c_attn、attn.c_proj、"
    "mlp.c_fc 和 mlp.c_proj 的权重都要转置",
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
    state = dict(randomize(GPT2LMHeadModel(config), g).state_dict())
    if old_buffers:
        for i in range(n_layer):
            causal = torch.tril(torch.ones(ctx, ctx, dtype=torch.bool))
            state[f"transformer.h.{i}.attn.bias"] = causal.view(1, 1, ctx, ctx)
            state[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    return state


_LAYER_KEY = re.compile(r"^blocks\.(\d+)\.")


def _extra_key_hint(extra: list[str], n_layer: int) -> Say:
    """The hint for keys the student's dict has and TextbookGPT does not."""
    buffers = [k for k in extra if k.endswith((".attn.bias", ".attn.masked_bias"))]
    if buffers:
        return say(f"{buffers[0]!r} comes from a causal-mask buffer that older checkpoints carry (attn.bias, "
                   "attn.masked_bias), not from a weight: skip those entries",
                   f"{buffers[0]!r} 来自旧版检查点里的因果掩码缓冲区（attn.bias、attn.masked_bias），不是权重："
                   "跳过这些条目")
    hf_names = [k for k in extra if k.startswith("transformer.")]
    if hf_names:
        return say(f"your dict still has Hugging Face's names ({hf_names[0]!r}, ...): every key must be one of "
                   f"TextbookGPT's: {_TEXTBOOK_NAMES}",
                   f"你的 dict 里还是 Hugging Face 的名字（{hf_names[0]!r} 等）：每个键都必须是 TextbookGPT 的名字之一："
                   f"{_TEXTBOOK_NAMES}")
    if any(k.endswith("lm_head.weight") for k in extra):
        return say("lm_head.weight has no place in TextbookGPT: the unembedding is tied to the token table, so it is "
                   "tok_emb.weight already; skip it",
                   "TextbookGPT 里没有 lm_head.weight 的位置：反嵌入与词元嵌入表共享权重，它就是 tok_emb.weight；"
                   "跳过它")
    beyond = [k for k in extra if (m := _LAYER_KEY.match(k)) and int(m.group(1)) >= n_layer]
    if beyond:
        return say(f"{beyond[0]!r}: this checkpoint has layers 0..{n_layer - 1}; layers are numbered from 0, and "
                   "transformer.h.{i} goes to blocks.{i}",
                   f"{beyond[0]!r}：这个检查点的层是 0..{n_layer - 1}；层从 0 开始编号，transformer.h.{{i}} 对应 "
                   "blocks.{i}")
    return say(f"unexpected key {extra[0]!r}: TextbookGPT's names are {_TEXTBOOK_NAMES}",
               f"多出了键 {extra[0]!r}：TextbookGPT 的名字是 {_TEXTBOOK_NAMES}")


def _shape_hint(key: str, got: torch.Tensor, want: torch.Tensor) -> Say:
    """The hint for a tensor of the wrong shape."""
    g, w = tuple(got.shape), tuple(want.shape)
    if re.search(r"\.attn\.[qkv]\.", key) and g != w[::-1]:
        return say(f"{key} has shape {g}, expected {w}: c_attn's [C, 3C] weight holds q, k and v side by side along "
                   "its output axis (dim 1); split it into three [C, C] blocks along dim 1 and transpose each (and "
                   "split the [3C] bias the same way)",
                   f"{key} 的形状为 {g}，应为 {w}：c_attn 的 [C, 3C] 权重沿输出轴（dim 1）并排放着 q、k 和 v；沿 dim 1 "
                   "把它切成三个 [C, C] 块并分别转置（[3C] 的偏置也同样切开）")
    if len(w) == 2 and g == w[::-1]:
        if key.startswith(("tok_emb", "pos_emb")):
            return say(f"{key} was transposed: only the Conv1D weights are stored [in, out]; embeddings (one row per "
                       "token or position) and LayerNorms are copied as they are",
                       f"{key} 被转置了：只有 Conv1D 的权重是按 [in, out] 存储的；嵌入（每个词元或位置一行）和层归一化"
                       "原样复制")
        return say(f"{key} has shape {g}, expected {w}: {_CONV1D_HINT}",
                   f"{key} 的形状为 {g}，应为 {w}：{_CONV1D_HINT.zh}")
    return say(f"{key} has shape {g}, expected {w}", f"{key} 的形状为 {g}，应为 {w}")


def _value_hint(key: str, got: torch.Tensor, want: dict[str, torch.Tensor]) -> Say:
    """The hint for a tensor of the right shape with the wrong values."""
    target = want[key]
    if got.dim() == 2 and got.shape == target.shape[::-1] and torch.equal(got, target.t()):
        return say(f"{key} is the transpose of what it should be. {_CONV1D_HINT}; square matrices load either way, so "
                   "this mistake shows no shape error",
                   f"{key} 正好是它应有值的转置。{_CONV1D_HINT.zh}；方阵怎么放都能载入，所以这个错误不会报形状错误")
    for other, tensor in want.items():
        if other == key or tensor.shape != got.shape or not torch.equal(got, tensor):
            continue
        same_role = _LAYER_KEY.sub("", key) == _LAYER_KEY.sub("", other)
        if same_role:
            return say(f"{key} holds the weights of {other}: layer i of Hugging Face's checkpoint "
                       "(transformer.h.{i}) goes to blocks.{i}",
                       f"{key} 里放的是 {other} 的权重：Hugging Face 检查点的第 i 层（transformer.h.{{i}}）对应 "
                       "blocks.{i}")
        roles = {re.sub(r"\.attn\.[qkv]\.", ".attn.*.", k) for k in (key, other)}
        if len(roles) == 1:
            return say(f"{key} holds what belongs in {other}: q, k and v are in the wrong order; c_attn's outputs are "
                       "q first (columns 0..C-1 of Hugging Face's weight), then k, then v",
                       f"{key} 里放的是属于 {other} 的值：q、k、v 的顺序错了；c_attn 的输出先是 q（Hugging Face 权重的"
                       "第 0..C-1 列），然后是 k，再是 v")
        if {re.sub(r"norm[12]", "norm*", k) for k in (key, other)} == {re.sub(r"norm[12]", "norm*", key)}:
            return say(f"{key} holds what belongs in {other}: ln_1 (before attention) goes to norm1, ln_2 (before "
                       "the MLP) to norm2",
                       f"{key} 里放的是属于 {other} 的值：ln_1（注意力之前）对应 norm1，ln_2（MLP 之前）对应 norm2")
        return say(f"{key} holds the values that belong in {other}", f"{key} 里放的是属于 {other} 的值")
    return say(f"the values of {key} differ from the checkpoint's; no known mistake matches",
               f"{key} 的值与检查点里的不同；没有已知错误与之吻合")


def check_convert_hf_weights(
    convert_hf_weights: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
) -> Verdict:
    """``convert_hf_weights(hf_state)``: a ``GPT2LMHeadModel`` state_dict renamed for lesson 11's ``TextbookGPT``.

    Run on two random GPT-2 checkpoints built offline (the second with the causal-mask buffers of older
    checkpoints); every tensor must equal :func:`textbook_from_hf`'s exactly, and ``hf_state`` must be left as it was.
    """

    def body() -> Say:
        g = _fresh_generator()
        cases = ((50, 16, 12, 2, 3, False), (40, 8, 8, 3, 2, True))  # (vocab, ctx, n_embd, n_layer, n_head, old)
        n_keys = 0
        for vocab, ctx, C, L, H, old_buffers in cases:
            hf_state = _random_hf_state(g, vocab, ctx, C, L, H, old_buffers)
            before = {k: v.clone() for k, v in hf_state.items()}
            got = convert_hf_weights(hf_state)
            if set(hf_state) != set(before) or any(not torch.equal(hf_state[k], v) for k, v in before.items()):
                raise Hint(say("your code changed its input `hf_state` in place (an in-place op such as `.t_()`, a "
                               "`pop`, or an assignment into it); leave it as it is and build a new dict",
                               "你的代码原地修改了输入 `hf_state`（用了 `.t_()`、`pop` 或往里赋值之类的原地操作）；"
                               "不要改动它，另建一个新的 dict"))
            if got is None:
                raise Hint(say("convert_hf_weights returned None: return the new dict",
                               "convert_hf_weights 返回了 None：请返回新的 dict"))
            if not isinstance(got, dict):
                raise Hint(say(f"return a dict from TextbookGPT's names to tensors, got {type(got).__name__}",
                               f"请返回一个从 TextbookGPT 的名字映射到张量的 dict，你返回的是 {type(got).__name__}"))
            want = textbook_from_hf(hf_state)
            extra, missing = sorted(set(got) - set(want)), sorted(set(want) - set(got))
            if extra:
                raise Hint(_extra_key_hint(extra, L))
            if missing:
                listed = f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"
                raise Hint(say(f"missing {listed} ({len(missing)} of {len(want)} names): TextbookGPT needs "
                               f"{_TEXTBOOK_NAMES}, for every layer 0..{L - 1}",
                               f"缺少 {listed}（{len(want)} 个名字中缺了 {len(missing)} 个）：TextbookGPT 的每一层 "
                               f"0..{L - 1} 都需要 {_TEXTBOOK_NAMES}"))
            for key in sorted(want):
                if not isinstance(got[key], torch.Tensor):
                    raise Hint(say(f"{key} is a {type(got[key]).__name__}, not a torch.Tensor",
                                   f"{key} 是 {type(got[key]).__name__}，不是 torch.Tensor"))
                if got[key].shape != want[key].shape:
                    raise Hint(_shape_hint(key, got[key], want[key]))
            for key in sorted(want):
                if not torch.equal(got[key].to(want[key].dtype), want[key]):
                    raise Hint(_value_hint(key, got[key], want))
            n_keys = len(want)
        return say(f"every tensor in place for {len(cases)} random GPT-2 checkpoints ({n_keys} names in the last), "
                   "old-format mask buffers skipped",
                   f"{len(cases)} 个随机 GPT-2 检查点的每个张量都放对了位置（最后一个有 {n_keys} 个名字），"
                   "旧格式的掩码缓冲区已跳过")

    return run_check("convert_hf_weights", body)


# ---------------------------------------------------------------------------------------------- 12 using a GPT


def _masked_mean(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    real = (torch.arange(hidden.shape[1]) < lengths[:, None]).float()  # (B, T)
    return (hidden * real[..., None]).sum(1) / lengths[:, None]


def check_last_token_states(last_token_states: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Verdict:
    """``last_token_states(hidden, lengths)``: ``hidden`` ``(B, T, C)`` of right-padded lines, ``lengths`` ``(B,)``
    -> ``(B, C)``, row ``b`` being ``hidden[b, lengths[b] - 1]``."""

    def body() -> Say:
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
                raise Hint(say(f"an index ran past the end ({err}): a line of n tokens ends at position n - 1, since "
                               "positions start at 0",
                               f"下标越过了末尾（{err}）：位置从 0 开始，所以 n 个词元的一行结束于位置 n - 1")) from None
            rows = torch.arange(B)
            want = hidden[rows, lengths - 1]
            mistakes = {
                say("this is the last column of the padded batch, which is padding for every shorter line: take "
                    "position lengths[b] - 1 of row b",
                    "这是补齐后批次的最后一列，对每个较短的行来说那里是填充：应取第 b 行的位置 lengths[b] - 1"): lambda: (
                    hidden[:, -1]
                ),
                say("one position too far: a line of n tokens ends at position n - 1 (positions start at 0), and "
                    "position n is padding",
                    "多走了一个位置：n 个词元的一行结束于位置 n - 1（位置从 0 开始），位置 n 已经是填充"): lambda: (
                    hidden[rows, lengths]
                ),
                say("this is the first position: in a causal model it has seen only the first token, while the last "
                    "real token has read the whole line",
                    "这是第一个位置：在因果模型里它只看到了第一个词元，而最后一个真实词元读完了整行"): lambda: (
                    hidden[:, 0]
                ),
                say("this is the mean over all T positions, padding included: take the state at the last real "
                    "position",
                    "这是全部 T 个位置（包括填充）的平均：应取最后一个真实位置的状态"): lambda: hidden.mean(1),
                say("this is the mean over each line's real positions: a fine pooling too, but the exercise takes the "
                    "last real position, the only one that has read the whole line",
                    "这是每行真实位置上的平均：这也是一种不错的池化，但本练习取的是最后一个真实位置，只有它读完了整行"):
                    lambda: _masked_mean(hidden, lengths),
            }
            shape_hint = say("One vector per line: (B, C). Index the batch and position axes together: "
                             "hidden[torch.arange(B), lengths - 1].",
                             "每行一个向量：(B, C)。批次轴和位置轴要一起索引：hidden[torch.arange(B), lengths - 1]。")
            _compare_tensors(got, want, mistakes, atol=1e-6, rtol=1e-6, shape_hint=shape_hint)
        return say(f"picks each line's last real token on {len(cases)} random padded batches",
                   f"在 {len(cases)} 个补齐过的随机批次上都取到了每行最后一个真实词元")

    return run_check("last_token_states", body)


def ban_variant(
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


def check_ban_tokens(ban_tokens: Callable[[torch.Tensor, list[int], list[list[int]]], torch.Tensor]) -> Verdict:
    """``ban_tokens(logits, context, banned)``: logits ``(vocab,)`` with ``-inf`` at every token that would complete
    a banned sequence: ``[t]`` bans ``t`` always, ``[a, ..., y, z]`` bans ``z`` when ``context`` ends with
    ``[a, ..., y]``.

    Compared as distributions (softmax of the result) with the ``penalties`` stage of
    :func:`workbench.generate.sampling_pipeline`, so any very negative fill value passes.
    """

    def body() -> Say:
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
                raise Hint(say(f"return the logits as a torch.Tensor of shape ({vocab},), got {type(got).__name__}",
                               f"请把 logits 作为形状为 ({vocab},) 的 torch.Tensor 返回，你返回的是 {type(got).__name__}"))
            if got.shape != logits.shape:
                raise Hint(say(f"output shape {tuple(got.shape)}, expected ({vocab},): the same logits, with -inf at "
                               "the banned tokens",
                               f"输出形状为 {tuple(got.shape)}，应为 ({vocab},)：还是原来的 logits，只是被禁的词元处为 "
                               "-inf"))
            want = _penalties_stage(logits, context, banned)

            def as_probs(variant: torch.Tensor) -> torch.Tensor:
                return torch.softmax(variant.float(), dim=-1)

            mistakes = {
                say("a multi-token word's last token was banned whatever came before it: ban it only when the context "
                    "ends with the word's other tokens (seq[:-1])",
                    "多词元的词，不管前面是什么都禁了它的最后一个词元：只有上下文以这个词的其余词元（seq[:-1]）结尾时"
                    "才禁"): lambda: as_probs(ban_variant(logits, context, banned, use_context=False)),
                say("every token of each word was banned: that also blocks every word that shares a piece with it; "
                    "ban only the token that would complete the word",
                    "禁掉了每个词的所有词元：这样和它共用片段的词也全被挡住了；只禁那个会把这个词补全的词元"): lambda: (
                    as_probs(ban_variant(logits, context, banned, use_context=False, which="all"))
                ),
                say("the first token of each word was banned: ban the token that would complete it (seq[-1]), when "
                    "the context ends with the rest (seq[:-1])",
                    "禁掉的是每个词的第一个词元：应在上下文以其余部分（seq[:-1]）结尾时，禁掉会把它补全的词元"
                    "（seq[-1]）"): lambda: as_probs(
                    ban_variant(logits, context, banned, use_context=False, which="first")
                ),
                say("the context was compared with the whole banned sequence: compare it with all but its last token, "
                    "which is the one to ban",
                    "拿上下文和整个被禁序列比较了：应和去掉最后一个词元的部分比较，最后那个词元才是要禁的"): lambda: (
                    as_probs(ban_variant(logits, context, banned, whole=True))
                ),
                say("banned logits were set to 0, which leaves them probability (e^0 = 1, like any other logit of 0): "
                    "set them to float('-inf')",
                    "被禁的 logits 设成了 0，这样它们仍有概率（e^0 = 1，和其他等于 0 的 logit 一样）：请设为 "
                    "float('-inf')"): lambda: as_probs(ban_variant(logits, context, banned, fill=0.0)),
                say("only single-token entries were banned: a word of several tokens is banned at its last token, "
                    "when the context ends with the rest",
                    "只禁了单个词元的条目：多词元的词要在上下文以其余部分结尾时，禁掉它的最后一个词元"): lambda: (
                    as_probs(ban_variant(logits, context, banned, multi=False))
                ),
                say("single-token entries were not banned: a sequence [t] bans t always (careful: context[-0:] is the "
                    "whole context, not an empty list)",
                    "单个词元的条目没有被禁：序列 [t] 表示始终禁掉 t（注意：context[-0:] 是整个上下文，而不是空列表）"):
                    lambda: as_probs(ban_variant(logits, context, banned, single=False)),
                say("these are probabilities, not logits: return the logits with -inf at the banned tokens (the "
                    "sampling pipeline takes the softmax afterwards)",
                    "这是概率而不是 logits：请返回在被禁词元处为 -inf 的 logits（采样流程之后会做 softmax）"): lambda: (
                    as_probs(torch.softmax(ban_variant(logits, context, banned), dim=-1))
                ),
            }
            nan_hint = say("NaN in the output: usually every logit was set to -inf (then softmax divides 0 by 0), or "
                           "-inf was multiplied by 0; write -inf only at the banned tokens",
                           "输出里有 NaN：通常是所有 logit 都被设成了 -inf（softmax 就成了 0 除以 0），或者 -inf 乘了 0；"
                           "只在被禁的词元处写 -inf")
            _compare_tensors(as_probs(got), want, mistakes, atol=1e-6, rtol=1e-5, nan_hint=nan_hint)
            n_cases += 1
        return say(f"bans exactly what the workbench's sampling pipeline bans, on {n_cases} random cases",
                   f"在 {n_cases} 个随机情形中，禁掉的词元与 workbench 采样流程禁掉的完全相同")

    return run_check("ban_tokens", body)


# ----------------------------------------------------------------------------------------------- 13 the app


def check_token_probs(token_probs: Callable[..., Any]) -> Verdict:
    """``token_probs(model, ids, ablate=())``: ``len(ids) - 1`` probabilities, entry ``t`` being
    ``p(ids[t + 1] | ids[: t + 1])`` with the ``(layer, head)`` pairs in ``ablate`` switched off.

    The reference is one teacher-forced forward pass of a random :class:`workbench.model.GPT` with ``ablate=``.
    A list or a tensor is accepted.
    """

    def body() -> Say:
        g = _fresh_generator()
        config = GPTConfig(vocab_size=24, block_size=16, n_layer=2, n_head=4, n_embd=16)
        model = randomize(GPT(config), g)
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
                say("each position's distribution is for the next token: pair logits[t] with ids[t + 1], not ids[t]",
                    "每个位置的分布是对下一个词元的预测：logits[t] 要和 ids[t + 1] 配对，而不是 ids[t]"): lambda: (
                    torch.softmax(logits[:-1], dim=-1).gather(1, idx[0, :-1, None])[:, 0]
                ),
                say("shifted the wrong way: position t predicts token t + 1, so pair logits[t] with ids[t + 1] for "
                    "t = 0 .. T - 2",
                    "移位的方向反了：位置 t 预测词元 t + 1，所以对 t = 0 .. T - 2，logits[t] 和 ids[t + 1] 配对"): lambda: (
                    torch.softmax(logits[1:], dim=-1).gather(1, nxt)[:, 0]
                ),
                say("the heads were not switched off: pass them to the model, model(idx, ablate=ablate)",
                    "注意力头没有被关掉：请把它们传给模型，model(idx, ablate=ablate)"): lambda: (
                    torch.softmax(plain[:-1], dim=-1).gather(1, nxt)[:, 0]
                ),
                say("these are log-probabilities: return probabilities (softmax, not log_softmax)",
                    "这是对数概率：请返回概率（用 softmax，而不是 log_softmax）"): lambda: (
                    torch.log_softmax(logits[:-1], dim=-1).gather(1, nxt)[:, 0]
                ),
                say("these are logits: turn each position's logits into probabilities with a softmax over the "
                    "vocabulary first",
                    "这是 logits：要先在词表上做 softmax，把每个位置的 logits 变成概率"): lambda: (
                    logits[:-1].gather(1, nxt)[:, 0]
                ),
                say("the softmax ran over the positions: normalise over the vocabulary, the last axis",
                    "softmax 是沿位置做的：应在词表（最后一个轴）上归一化"): lambda: (
                    torch.softmax(logits[:-1], dim=0).gather(1, nxt)[:, 0]
                ),
            }
            shape_hint = say("One probability per token after the first: (len(ids) - 1,). The first token has nothing "
                             "before it, and the last position predicts a token that is not in ids.",
                             "第一个词元之后每个词元一个概率：(len(ids) - 1,)。第一个词元前面什么也没有，而最后一个位置"
                             "预测的词元不在 ids 里。")
            _compare_tensors(got, want, mistakes, atol=1e-5, rtol=1e-4, shape_hint=shape_hint)
        return say(f"matches a teacher-forced forward pass with heads ablated on {len(cases)} random texts",
                   f"在 {len(cases)} 段随机文本上与关掉注意力头的 teacher forcing 前向计算一致")

    return run_check("token_probs", body)


__all__ = [name for name in dir() if name.startswith("check_")]
