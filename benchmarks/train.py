"""Training throughput: our training step against ``transformers.GPT2LMHeadModel`` with the same config, optimizer
(AdamW, decay on matrices) and batches, side by side in one process on the CPU.

For each config, both models start from the same weights and alternate one optimizer step each (forward, backward,
gradient clipping, AdamW); the median step time after a warm-up gives tokens/s. The default config is trained as
its preset trains it: dropout 0.1 on embeddings and residual branches, none on the attention weights, bfloat16
autocast where the CPU has bf16 instructions (both models under the same autocast).

``--recipes`` also times our step of the default config under the recipes it was trained with, alternating: the
previous one (fp32, dropout 0.1 everywhere) and the preset's (no attention dropout; bf16 autocast).

``--ablations`` times our default-config step without each of two speed-ups: torch's ``nn.Dropout`` instead of our
CPU :class:`workbench.fast.FastDropout` (alternating in this process), and glibc's default allocator instead of
:func:`workbench.memory.keep_freed_memory` (which is process-wide, so child processes with and without it take turns).
Like ``workbench.train``, this script keeps freed memory for both contenders.

Usage: ``python benchmarks/train.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from workbench import GPT, GPTConfig
from workbench.memory import keep_freed_memory
from workbench.fast import accelerate
from workbench.train import TrainConfig, bf16_autocast, make_optimizer

CONFIGS = {
    # name: (layers, heads, width, context, batch, dropout, attention dropout, bf16 autocast)
    "tiny (lessons)": (4, 4, 128, 64, 12, 0.0, 0.0, False),
    "default (shipped model)": (6, 6, 192, 256, 16, 0.1, 0.0, True),
}
VOCAB = {"tiny (lessons)": 96, "default (shipped model)": 4096}


def step_fn(model, optimizer, x, y, hf: bool, autocast):
    def step() -> None:
        with autocast:
            if hf:
                loss = model(input_ids=x, labels=y).loss
            else:
                _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def median_step_times(steps: dict, n_steps: int) -> dict[str, float]:
    """Median seconds per call of each step function, after two warm-up calls each, calls alternating so that drift
    in machine speed hits every contender alike."""
    times: dict[str, list[float]] = {k: [] for k in steps}
    for fn in steps.values():
        fn()
        fn()
    for _ in range(n_steps):
        for k, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(ts) for k, ts in times.items()}


def compare_recipes(n_steps: int) -> None:
    """Our default-config training step under each recipe, alternating, median step time."""
    recipes = {  # name: (attention dropout, bf16 autocast); dropout 0.1 on embeddings and residual branches
        "fp32, attention dropout 0.1 (previous)": (0.1, False),
        "fp32, no attention dropout": (0.0, False),
        "bf16 autocast, no attention dropout (preset)": (0.0, True),
    }
    steps = {}
    for name, (attn_dropout, bf16) in recipes.items():
        steps[name], tokens = default_step(attn_dropout=attn_dropout, bf16=bf16)
    medians = median_step_times(steps, n_steps)
    base = medians[next(iter(medians))]
    print(f"\n| default config, our step | ms | tok/s | speed-up |\n|---|---:|---:|---:|")
    for k, ms in medians.items():
        print(f"| {k} | {ms * 1e3:.0f} | {tokens / ms:,.0f} | {base / ms:.2f}x |")


def default_step(fast_dropout: bool = True, attn_dropout: float | None = None, bf16: bool | None = None):
    """Our training step of the default config and its token count: as its preset trains it (accelerated, as
    ``workbench.train`` does), unless told torch's dropout, another attention dropout or autocast."""
    layers, heads, width, ctx, batch, dropout, preset_attn_dropout, preset_bf16 = CONFIGS["default (shipped model)"]
    attn_dropout = preset_attn_dropout if attn_dropout is None else attn_dropout
    bf16 = preset_bf16 if bf16 is None else bf16
    vocab = VOCAB["default (shipped model)"]
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab, block_size=ctx, n_layer=layers, n_head=heads, n_embd=width,
                          dropout=dropout, attn_dropout=attn_dropout)).train()
    accelerate(model, dropout=fast_dropout)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab, (batch, ctx), generator=g)
    y = torch.randint(0, vocab, (batch, ctx), generator=g)
    autocast = bf16_autocast(torch.device("cpu")) if bf16 else nullcontext()
    return step_fn(model, make_optimizer(model, TrainConfig(lr=1e-3)), x, y, hf=False, autocast=autocast), batch * ctx


def ablations(n_steps: int, rounds: int = 3) -> None:
    """Our default-config step without each speed-up, against the step with both."""
    ours, tokens = default_step()
    medians = median_step_times({"ours": ours, "nn.Dropout": default_step(fast_dropout=False)[0]}, n_steps)
    print(f"\n| default config, our step | ms | tok/s | ours faster by |\n|---|---:|---:|---:|")
    print(f"| ours (our Dropout, freed memory kept) | {medians['ours'] * 1e3:.0f} | {tokens / medians['ours']:,.0f} | |")
    print(f"| torch's nn.Dropout | {medians['nn.Dropout'] * 1e3:.0f} | {tokens / medians['nn.Dropout']:,.0f} | "
          f"{medians['nn.Dropout'] / medians['ours']:.2f}x |")
    # keep_freed_memory() is process-wide: child processes with and without it, taking turns.
    child = [sys.executable, __file__, "--step-ms", "--steps", str(n_steps)]
    ms: dict[str, list[float]] = {"1": [], "0": []}
    for _ in range(rounds):
        for keep in ms:
            out = subprocess.run(child, env={**os.environ, "WORKBENCH_KEEP_FREED_MEMORY": keep}, check=True,
                                 capture_output=True, text=True).stdout
            ms[keep].append(float(out.split()[-1]))
    for keep, label in (("1", "ours, own process"), ("0", "glibc's default allocator, own process")):
        med = statistics.median(ms[keep])
        ratio = "" if keep == "1" else f"{med / statistics.median(ms['1']):.2f}x"
        print(f"| {label} (median of {rounds} processes: {', '.join(f'{m:.0f}' for m in ms[keep])}) | {med:.0f} | "
              f"{tokens / med * 1e3:,.0f} | {ratio} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model and config (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: %(default)s)")
    parser.add_argument("--only", choices=sorted(CONFIGS), default=None, help="run one config only")
    parser.add_argument("--recipes", action="store_true",
                        help="also time our default-config step under the previous and the preset's training recipe")
    parser.add_argument("--ablations", action="store_true",
                        help="also time our default-config step without our Dropout, and without keeping freed memory")
    parser.add_argument("--step-ms", action="store_true",
                        help="only print the median ms of our default-config step (what --ablations runs per process)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as workbench.train does (WORKBENCH_KEEP_FREED_MEMORY=0 turns it off)
    if args.step_ms:
        step, _ = default_step()
        print(f"{median_step_times({'ours': step}, args.steps)['ours'] * 1e3:.1f}")
        return

    print(f"| config | ours tok/s | HF tok/s | ours / HF |\n|---|---:|---:|---:|")
    for name, (layers, heads, width, ctx, batch, dropout, attn_dropout, bf16) in CONFIGS.items():
        if args.only and name != args.only:
            continue
        torch.manual_seed(0)
        hf_config = GPT2Config(vocab_size=VOCAB[name], n_positions=ctx, n_embd=width, n_layer=layers, n_head=heads,
                               resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=attn_dropout, bos_token_id=0,
                               eos_token_id=0)
        hf = GPT2LMHeadModel(hf_config).train()
        ours = accelerate(GPT.from_hf(hf).train())  # as workbench.train runs it
        for module in ours.modules():  # from_hf loads for inference (dropout 0); train with the same dropout
            if isinstance(module, torch.nn.Dropout):
                module.p = dropout
        for block in ours.transformer.h:
            block.attn.attn_dropout_p = block.attn.attn_dropout.p = attn_dropout
        autocast = bf16_autocast(torch.device("cpu")) if bf16 else nullcontext()
        opt_cfg = TrainConfig(lr=1e-3)
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, VOCAB[name], (batch, ctx), generator=g)
        y = torch.randint(0, VOCAB[name], (batch, ctx), generator=g)
        steps = {
            "ours": step_fn(ours, make_optimizer(ours, opt_cfg), x, y, hf=False, autocast=autocast),
            "hf": step_fn(hf, make_optimizer(hf, opt_cfg), x, y, hf=True, autocast=autocast),
        }
        medians = median_step_times(steps, args.steps)
        tok = batch * ctx
        ours_tps, hf_tps = tok / medians["ours"], tok / medians["hf"]
        precision = ", bf16 autocast" if isinstance(autocast, torch.autocast) else ""
        print(f"| {name}: {layers}x{heads}x{width}, ctx {ctx}, batch {batch}{precision} | {ours_tps:,.0f} | {hf_tps:,.0f} | "
              f"{ours_tps / hf_tps:.2f}x |")
    if args.recipes:
        compare_recipes(args.steps)
    if args.ablations:
        ablations(args.steps)


if __name__ == "__main__":
    main()
