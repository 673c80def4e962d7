"""Checks for lessons 05 (MLP and LayerNorm) and 06 (assembling GPT-2): GELU, LayerNorm, the MLP, the pre-LN block,
the whole GPT against Hugging Face's, the parameter count."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench.checks.core import (
    Hint,
    Say,
    Verdict,
    _call_keeping_inputs,
    _compare_tensors,
    _fresh_generator,
    _load_student,
    _passed,
    randomize,
    run_check,
    say,
)
from workbench.model import GPT, MLP, Block, GPTConfig

# ------------------------------------------------------------------------------ 05 MLP and LayerNorm


def _gelu_reference() -> nn.Module:
    return MLP(GPTConfig(vocab_size=4, block_size=4, n_layer=1, n_head=1, n_embd=4)).act  # GPT-2's tanh GELU


def check_gelu(gelu: Callable[[torch.Tensor], torch.Tensor]) -> Verdict:
    """``gelu(x)``: GPT-2's tanh approximation of GELU."""

    def body() -> Say:
        g = _fresh_generator()
        worst = 0.0
        shapes = ((100,), (4, 25), (2, 3, 16))
        for shape in shapes:
            x = torch.randn(shape, generator=g) * 3
            got = _call_keeping_inputs(gelu, ["x"], x)
            want = _gelu_reference()(x)
            mistakes = {
                say("this is ReLU (the article's FFN); GPT-2 uses GELU, which is smooth and slightly negative below 0",
                    "这是 ReLU（文章里 FFN 用的）；GPT-2 用的是 GELU，它处处光滑，在 0 以下略微为负"): lambda: (
                    torch.relu(x)
                ),
                say("this is the exact GELU x·Φ(x) with erf; GPT-2 uses the tanh approximation "
                    "0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³)))",
                    "这是用 erf 算的精确 GELU x·Φ(x)；GPT-2 用的是 tanh 近似 "
                    "0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³)))"): lambda: F.gelu(x),
                say("this is the sigmoid approximation x·σ(1.702x); GPT-2 uses the tanh one",
                    "这是 sigmoid 近似 x·σ(1.702x)；GPT-2 用的是 tanh 近似"): lambda: x * torch.sigmoid(1.702 * x),
                say("the factor 0.5 in front is missing: 0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³)))",
                    "漏了前面的系数 0.5：0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³)))"): lambda: 2 * want,
            }
            worst = max(worst, _compare_tensors(got, want, mistakes))
        return _passed(len(shapes), worst)

    return run_check("gelu", body)


def check_layer_norm(layer_norm: Callable[..., torch.Tensor]) -> Verdict:
    """``layer_norm(x, weight, bias, eps=1e-5)`` over the last axis, as ``torch.nn.LayerNorm`` in every Block."""

    def body() -> Say:
        g = _fresh_generator()
        worst = 0.0
        cases = ((2, 5, 8, 1.0), (3, 16, 0.01), (4, 4, 6, 2.0))  # (*shape, scale of x)
        eps = 1e-5
        for *shape, scale in cases:
            x = torch.randn(*shape, generator=g) * scale + 0.5 * scale
            C = shape[-1]
            ln = Block(GPTConfig(vocab_size=4, block_size=4, n_layer=1, n_head=1, n_embd=C)).ln_1
            with torch.no_grad():
                ln.weight.copy_(1 + 0.3 * torch.randn(C, generator=g))
                ln.bias.copy_(0.3 * torch.randn(C, generator=g))
            w, b = ln.weight.detach(), ln.bias.detach()
            got = _call_keeping_inputs(layer_norm, ["x", "weight", "bias"], x, w.clone(), b.clone())
            mean = x.mean(-1, keepdim=True)
            var = x.var(-1, keepdim=True, unbiased=False)
            mistakes = {
                say("the variance is the unbiased one (divides by C-1): LayerNorm divides by C "
                    "(var(unbiased=False) or ((x - mean)**2).mean(-1))",
                    "用的是无偏方差（除以 C-1）：层归一化除以 C（var(unbiased=False) 或 ((x - mean)**2).mean(-1)）"):
                    lambda: (x - mean) / torch.sqrt(x.var(-1, keepdim=True, unbiased=True) + eps) * w + b,
                say("eps is added outside the square root: divide by sqrt(var + eps)",
                    "eps 加在了平方根外面：应除以 sqrt(var + eps)"): lambda: (x - mean) / (torch.sqrt(var) + eps) * w
                + b,
                say("the mean is not subtracted: center x first", "没有减去均值：先把 x 中心化"): lambda: (
                    x / torch.sqrt(var + eps) * w + b
                ),
                say("normalized over the wrong axis: LayerNorm works on each position's own vector, the last axis",
                    "归一化的轴错了：层归一化作用在每个位置自己的向量上，也就是最后一个轴"): lambda: (
                    F.layer_norm(x.transpose(-1, -2), (x.shape[-2],)).transpose(-1, -2) * w + b
                ),
                say("weight and bias are not applied: multiply by weight, then add bias",
                    "没有用上 weight 和 bias：先乘以 weight，再加上 bias"): lambda: (x - mean) / torch.sqrt(var + eps),
            }
            worst = max(worst, _compare_tensors(got, ln(x).detach(), mistakes, atol=1e-5, rtol=1e-4))
        return _passed(len(cases), worst)

    return run_check("layer_norm", body)


def check_mlp(student_cls: type[nn.Module]) -> Verdict:
    """GPT-2's MLP module, checked against :class:`workbench.model.MLP` with the same weights."""

    def body() -> Say:
        g = _fresh_generator()
        worst = 0.0
        cases = ((8, 2, 5), (16, 1, 3), (24, 3, 1))  # (n_embd, B, T)
        for C, B, T in cases:
            config = GPTConfig(vocab_size=4, block_size=8, n_layer=1, n_head=1, n_embd=C)
            reference = randomize(MLP(config), g)
            student = _load_student(student_cls, reference, config)
            x = torch.randn(B, T, C, generator=g)
            with torch.enable_grad():
                want = reference(x).detach()
                got = _call_keeping_inputs(student, ["x"], x)
                got = got.detach() if isinstance(got, torch.Tensor) else got
                hidden = reference.c_fc(x)
                mistakes = {
                    say("ReLU instead of GELU (the article's FFN); GPT-2 uses the tanh GELU",
                        "用了 ReLU 而不是 GELU（文章里 FFN 的做法）；GPT-2 用的是 tanh 近似的 GELU"): lambda: (
                        reference.c_proj(torch.relu(hidden))
                    ),
                    say("exact (erf) GELU; GPT-2 uses the tanh approximation (nn.GELU(approximate='tanh'))",
                        "用的是精确（erf）GELU；GPT-2 用的是 tanh 近似（nn.GELU(approximate='tanh')）"): lambda: (
                        reference.c_proj(F.gelu(hidden))
                    ),
                    say("the activation is missing: without it two Linear layers collapse into one",
                        "缺了激活函数：没有它，两个 Linear 层就合并成了一个"): lambda: reference.c_proj(hidden),
                }
                shape_hint = say("Expected (B, T, C).", "应为 (B, T, C)。")
                worst = max(worst, _compare_tensors(got, want, mistakes, shape_hint=shape_hint))
        return _passed(len(cases), worst)

    return run_check("MLP", body)


# ---------------------------------------------------------------------------------------- 06 assemble


def check_block(student_cls: type[nn.Module]) -> Verdict:
    """A pre-LN transformer block, checked against :class:`workbench.model.Block` with the same weights."""

    def body() -> Say:
        g = _fresh_generator()
        worst = 0.0
        cases = ((16, 4, 2, 6), (24, 3, 1, 10))  # (n_embd, n_head, B, T)
        for C, nh, B, T in cases:
            config = GPTConfig(vocab_size=4, block_size=16, n_layer=1, n_head=nh, n_embd=C)
            reference = randomize(Block(config), g)
            student = _load_student(student_cls, reference, config)
            x = torch.randn(B, T, C, generator=g)
            with torch.no_grad():
                want = reference(x)
                got = _call_keeping_inputs(student, ["x"], x)
                r = reference

                def post_ln() -> torch.Tensor:
                    h = r.ln_1(x + r.attn(x))
                    return r.ln_2(h + r.mlp(h))

                def residual_from_normalized() -> torch.Tensor:
                    h = r.ln_1(x)
                    h = h + r.attn(h)
                    h2 = r.ln_2(h)
                    return h2 + r.mlp(h2)

                def no_residual() -> torch.Tensor:
                    return r.mlp(r.ln_2(r.attn(r.ln_1(x))))

                def ln_1_twice() -> torch.Tensor:
                    h = x + r.attn(r.ln_1(x))
                    return h + r.mlp(r.ln_1(h))

                mistakes = {
                    say("this is post-LN (the original Transformer, and the article): GPT-2 is pre-LN, "
                        "x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))",
                        "这是 post-LN（原始 Transformer 和文章里的写法）：GPT-2 是 pre-LN，"
                        "x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))"): post_ln,
                    say("the residual carries ln_1(x) instead of x: add the sublayer's output to the un-normalized x",
                        "残差流里传的是 ln_1(x) 而不是 x：子层的输出要加到未归一化的 x 上"): residual_from_normalized,
                    say("the residual connections are missing: each sublayer's output is added to x",
                        "缺了残差连接：每个子层的输出都要加回 x"): no_residual,
                    say("ln_1 was used before the MLP too: each sublayer has its own LayerNorm, "
                        "x = x + mlp(ln_2(x))",
                        "MLP 之前也用了 ln_1：每个子层有自己的层归一化，x = x + mlp(ln_2(x))"): ln_1_twice,
                }
                worst = max(worst, _compare_tensors(got, want, mistakes, atol=1e-5, rtol=1e-4))
        return _passed(len(cases), worst)

    return run_check("Block", body)


def _random_hf_gpt2(g: torch.Generator) -> nn.Module:
    """A small ``transformers.GPT2LMHeadModel`` with random weights, built offline."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0,
        attn_implementation="eager",
    )
    return randomize(GPT2LMHeadModel(config), g, std=0.1)


def check_gpt(student_cls: type[nn.Module], hf_model: nn.Module | None = None) -> Verdict:
    """The student's GPT, given HF-format weights, must give the same logits as Hugging Face's GPT-2.

    ``hf_model`` is a ``transformers.GPT2LMHeadModel`` (the real "gpt2" when it is available); by default a small
    random one is built offline. Its weights reach the student's model through :func:`workbench.hf.from_hf` (which
    transposes HF's Conv1D matrices), so the student's parameter names must be GPT-2's.
    """

    def body() -> Say:
        g = _fresh_generator()
        hf = (hf_model if hf_model is not None else _random_hf_gpt2(g)).eval()
        reference = GPT.from_hf(hf).eval()
        student = _load_student(student_cls, reference, reference.config)
        worst = 0.0
        lengths = (1, 7, min(20, reference.config.block_size))
        for T in lengths:
            idx = torch.randint(reference.config.vocab_size, (2, T), generator=g)
            with torch.no_grad():
                want = hf(idx).logits
                got = _call_keeping_inputs(student, ["idx"], idx)
                t = reference.transformer

                def without_final_ln() -> torch.Tensor:
                    x = t.wte(idx) + t.wpe(torch.arange(T))
                    for block in t.h:
                        x = block(x)
                    return reference.lm_head(x)

                def without_positions() -> torch.Tensor:
                    x = t.wte(idx)
                    for block in t.h:
                        x = block(x)
                    return reference.lm_head(t.ln_f(x))

                mistakes = {
                    say("the final LayerNorm ln_f is missing: GPT-2 normalizes once more before the unembedding",
                        "缺了最后的层归一化 ln_f：GPT-2 在反嵌入之前还要再归一化一次"): without_final_ln,
                    say("the position embeddings are missing: x = wte(idx) + wpe(positions)",
                        "缺少位置嵌入：x = wte(idx) + wpe(positions)"): without_positions,
                }
                shape_hint = say("Expected logits (B, T, vocab_size).", "logits 应为 (B, T, vocab_size)。")
                worst = max(worst, _compare_tensors(got, want, mistakes, atol=1e-4, rtol=1e-4, shape_hint=shape_hint))
        return say(
            f"same logits as Hugging Face's GPT2LMHeadModel on {len(lengths)} inputs (max difference {worst:.1e})",
            f"在 {len(lengths)} 组输入上与 Hugging Face 的 GPT2LMHeadModel 给出相同的 logits（最大差值 {worst:.1e}）",
        )

    return run_check("GPT", body)


def check_count_params(count_params: Callable[[int, int, int, int], int]) -> Verdict:
    """``count_params(n_layer, n_embd, vocab_size, block_size)``: parameters of a GPT-2 (tied embeddings)."""

    def body() -> Say:
        configs = ((1, 8, 10, 4), (2, 16, 50, 12), (3, 12, 7, 5))
        for L, C, V, P in configs:
            got = count_params(L, C, V, P)
            want = GPT(GPTConfig(vocab_size=V, block_size=P, n_layer=L, n_head=2, n_embd=C)).num_params()
            if not isinstance(got, int) or isinstance(got, bool):
                raise Hint(say(f"return an int, got {type(got).__name__}",
                               f"请返回 int，你返回的是 {type(got).__name__}"))
            if got == want:
                continue
            linear_biases = L * (3 * C + C + 4 * C + C)  # c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj
            mistakes = {
                say("the output matrix was counted separately: GPT-2 ties lm_head to wte, so count it once",
                    "输出矩阵被单独算了一遍：GPT-2 的 lm_head 与 wte 共享权重，只算一次"): want + V * C,
                say("the position embeddings (block_size x n_embd) are missing",
                    "漏了位置嵌入（block_size x n_embd）"): want - P * C,
                say("the LayerNorms are missing: 2 per block and one final, each with a weight and a bias of size C",
                    "漏了层归一化：每个块 2 个，最后还有 1 个，各有大小为 C 的 weight 和 bias"): want - (2 * L + 1) * 2 * C,
                say("the final LayerNorm ln_f is missing: one more weight and bias of size C after the last block",
                    "漏了最后的层归一化 ln_f：最后一个块之后还有一组大小为 C 的 weight 和 bias"): want - 2 * C,
                say("the biases are missing: every Linear in GPT-2 has one",
                    "漏了偏置：GPT-2 的每个 Linear 都有偏置"): want - linear_biases,
            }
            hint = next((h for h, n in mistakes.items() if n == got), None)
            raise Hint(hint or say(
                f"count_params{(L, C, V, P)} = {got}, expected {want} (off by {got - want:+d})",
                f"count_params{(L, C, V, P)} = {got}，应为 {want}（相差 {got - want:+d}）",
            ))
        n = len(configs)
        return say(f"correct for {n} configurations", f"{n} 种配置全部正确")

    return run_check("count_params", body)


__all__ = [name for name in dir() if name.startswith("check_")]  # what `workbench.checks` re-exports
