"""Generation speed: our KV-cached, traced decoding against Hugging Face ``generate`` on the same weights.

Builds a GPT-2-small-shaped model (124M parameters, random weights, nothing downloaded) and the same weights in
``transformers.GPT2LMHeadModel``, then measures in one process, alternating the contenders, median of ``--runs``:

* prefill: one forward over a 1 x 128 prompt (ours vs HF);
* greedy decode of 64 new tokens after the 128-token prompt (prefill included):
  (a) ours without capture, (b) ours with full capture (attention rows + logit lens on every step),
  (c) HF ``generate``, (d) HF ``generate`` with ``output_attentions=True``;
* the bandwidth floor: decoding one token must read every weight once, so tokens/s cannot beat
  (measured copy bandwidth) / (weight bytes).

Usage: ``python benchmarks/generate.py`` (``--help`` for options). Ratios, not absolute times, are the result:
timings on shared machines are noisy, and the contenders run side by side.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from workbench import GPT, SamplingConfig, generate
from workbench.fast import accelerate
from workbench.native import native_status


def copy_bandwidth(n_bytes: int = 512 * 2**20, repeats: int = 5) -> float:
    """Bytes per second moved by a large tensor copy (read + write), best of ``repeats``."""
    src = torch.ones(n_bytes // 4)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return 2 * n_bytes / best


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median_ms(fn, repeats: int = 30) -> float:
    """Median wall time of ``fn()`` in milliseconds, after two warm-up calls."""
    fn(), fn()
    return 1e3 * statistics.median(timed(fn) for _ in range(repeats))


def fp32_matmul_flops(n: int = 2048) -> float:
    """FLOP/s of a large square float32 matmul: the machine's practical compute peak."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / (median_ms(lambda: a @ b, repeats=10) / 1e3)


def breakdown(ours: GPT, ids: list[int], hf_ms_per_token: float, a_ms_per_token: float) -> None:
    """Where one traced decoding step's time goes, and the best (b) that exact float32 arithmetic allows.

    Full capture differs from (a) in one big way: the logit lens unembeds 2 x n_layer residual reads instead of
    one row. Each extra row costs vocab x n_embd multiply-adds, so that matmul is bound by compute, not by reading
    the matrix; the other capture costs are small.
    """
    cfg = ours.config
    with torch.inference_mode():
        cache = ours.new_kv_cache(batch_size=1)
        ours(torch.tensor([ids]), kv_cache=cache)
        length, token = cache.length, torch.tensor([[ids[-1]]])

        def step(**kwargs) -> None:
            cache.length = length  # decode the same position again and again
            ours(token, kv_cache=cache, **kwargs)

        blocks = median_ms(lambda: step(unembed=False))
        blocks_traced = median_ms(lambda: step(unembed=False, capture={}))
        reads = torch.randn(2 * cfg.n_layer, cfg.n_embd)
        one_row = median_ms(lambda: ours.lm_head(reads[:1]))
        lens_rows = median_ms(lambda: ours.lm_head(reads))
    flops = fp32_matmul_flops()
    lens_flops = 2 * (2 * cfg.n_layer) * cfg.n_embd * cfg.vocab_size / (lens_rows / 1e3)
    best_b = a_ms_per_token + (lens_rows - one_row)
    print(f"\n| one decoding step at position {length} | ms |\n|---|---:|")
    print(f"| blocks, no capture | {blocks:.2f} |\n| blocks, capture | {blocks_traced:.2f} |")
    print(f"| unembedding, 1 row (a) | {one_row:.2f} |")
    print(f"| unembedding, {2 * cfg.n_layer} rows (b: lens + next-token logits) | {lens_rows:.2f} |")
    print(f"\nlens matmul: {lens_flops / 1e9:.0f} GFLOP/s; a 2048x2048 float32 matmul: {flops / 1e9:.0f} GFLOP/s")
    print(f"(a) takes {a_ms_per_token:.1f} ms/token and HF {hf_ms_per_token:.1f}; with every other capture cost at zero, "
          f"(b) >= (a) + the lens's extra rows = {best_b:.1f} ms/token -> at most {hf_ms_per_token / best_b:.2f}x HF")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per contender; the median is reported")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: %(default)s)")
    parser.add_argument("--prompt-len", type=int, default=128, help="prompt tokens (default: %(default)s)")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens to decode (default: %(default)s)")
    parser.add_argument("--layers", type=int, default=12, help="layers; 12 is GPT-2 small (default: %(default)s)")
    parser.add_argument("--width", type=int, default=768, help="n_embd; 768 is GPT-2 small (default: %(default)s)")
    parser.add_argument("--heads", type=int, default=12, help="attention heads (default: %(default)s)")
    parser.add_argument("--vocab", type=int, default=50257, help="vocabulary size (default: %(default)s)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time the parts of one decoding step and the bound they put on (b)")
    parser.add_argument("--native-ablation", action="store_true",
                        help="also time (a) and (b) with the native GEMV switched off (oneDNN for every row)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = GPT2Config(vocab_size=args.vocab, n_positions=1024, n_embd=args.width, n_layer=args.layers,
                        n_head=args.heads, bos_token_id=0, eos_token_id=0)
    hf = GPT2LMHeadModel(config).eval()  # HF's default attention (SDPA) for plain generate
    config_eager = GPT2Config(**{**config.to_dict(), "attn_implementation": "eager"})
    hf_eager = GPT2LMHeadModel(config_eager).eval()  # attention weights need the eager path
    hf_eager.load_state_dict(hf.state_dict())
    ours = accelerate(GPT.from_hf(hf).eval())
    n_params = ours.num_params()
    weight_bytes = n_params * 4

    prompt = torch.randint(0, args.vocab, (1, args.prompt_len))
    ids = prompt[0].tolist()
    mask = torch.ones_like(prompt)
    n = args.new_tokens
    greedy = SamplingConfig(max_new_tokens=n, temperature=0)
    hf_kwargs = dict(attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)

    contenders = {
        "prefill ours": lambda: ours(prompt),
        "prefill HF": lambda: hf(prompt),
        "(a) ours, no capture": lambda: generate(ours, None, ids, greedy, capture=False),
        "(b) ours, full capture": lambda: generate(ours, None, ids, greedy, capture=True),
        "(c) HF generate": lambda: hf.generate(prompt, **hf_kwargs),
        "(d) HF generate + attentions": lambda: hf_eager.generate(
            prompt, output_attentions=True, return_dict_in_generate=True, **hf_kwargs
        ),
    }
    if args.native_ablation:

        def without_native(fn):
            def run():
                accelerate(ours, native=False)
                try:
                    return fn()
                finally:
                    accelerate(ours, native=True)

            return run

        contenders["(a') ours, no capture, oneDNN GEMV"] = without_native(contenders["(a) ours, no capture"])
        contenders["(b') ours, full capture, oneDNN GEMV"] = without_native(contenders["(b) ours, full capture"])
    # Same output check before timing: greedy tokens must agree, or the comparison is meaningless.
    with torch.inference_mode():
        ref = hf.generate(prompt, **hf_kwargs)[0, args.prompt_len :].tolist()
        got = generate(ours, None, ids, greedy, capture=True).token_ids
    assert got == ref, "greedy outputs differ between ours and HF"

    times: dict[str, list[float]] = {name: [] for name in contenders}
    with torch.inference_mode():
        for fn in contenders.values():  # warm-up
            fn()
        for _ in range(args.runs):  # alternate, so drift in machine speed hits every contender alike
            for name, fn in contenders.items():
                times[name].append(timed(fn))
    med = {name: statistics.median(ts) for name, ts in times.items()}

    bandwidth = copy_bandwidth()
    floor_tok_s = bandwidth / weight_bytes
    print(f"model: {args.layers} layers x {args.heads} heads x {args.width} wide, vocab {args.vocab}, "
          f"{n_params / 1e6:.1f}M parameters, fp32, {args.threads} threads, median of {args.runs} runs")
    print(f"native GEMV: {native_status()}")
    print(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s; weights {weight_bytes / 1e6:.0f} MB per token "
          f"-> bandwidth floor {floor_tok_s:.1f} tok/s\n")
    print(f"| prefill 1x{args.prompt_len} | ms | vs HF |\n|---|---:|---:|")
    for name in ("prefill ours", "prefill HF"):
        print(f"| {name} | {med[name] * 1e3:.1f} | {med['prefill HF'] / med[name]:.2f}x |")
    print(f"\n| decode {n} tokens after {args.prompt_len} | tok/s | vs (c) HF generate | % of bandwidth floor |")
    print("|---|---:|---:|---:|")
    for name in [n for n in contenders if n.startswith("(")]:
        tok_s = n / med[name]
        print(f"| {name} | {tok_s:.1f} | {med['(c) HF generate'] / med[name]:.2f}x | {100 * tok_s / floor_tok_s:.0f}% |")
    if args.breakdown:
        per_token = {name: 1e3 * med[name] / n for name in med}
        breakdown(ours, ids, per_token["(c) HF generate"], per_token["(a) ours, no capture"])


if __name__ == "__main__":
    main()
