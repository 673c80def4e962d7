"""The logit lens, computed in one place for ``Trace.logit_lens`` and for every generation step.

Each block adds its result to the residual stream, and at the end the model's final norm
(``model.transformer.ln_f``) and unembedding (``model.lm_head``) turn the last stream into next-token logits.
Applying the same two modules to the stream after an earlier sublayer asks "what would the model predict if it
stopped here?". The modules are called as they are, whatever kind of norm the model has, so the lens reads every
model exactly the way its own output is read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from workbench.records import LogitLens, display_strs
from workbench.sampling import top_k

if TYPE_CHECKING:  # annotations only: the lens needs the model's modules, not the module that defines them
    from workbench.model import GPT
    from workbench.tokenizers import Tokenizer


def read_logits(model: GPT, resid_mid: torch.Tensor, resid_post: torch.Tensor) -> torch.Tensor:
    """Unembed every read of the residual stream: ``(L, ..., C)`` twice -> ``(2L, ..., vocab)`` float32 logits.

    Reads come in the order the stream flows (layer 0 after attention, layer 0 after the MLP, layer 1 ...), so the
    last one is the model's own next-token logits. All ``2L`` reads go through ``lm_head`` in one matmul, which reads
    the large unembedding matrix once.
    """
    reads = torch.stack((resid_mid, resid_post), dim=1).flatten(0, 1)  # (L, 2, ..., C) -> (2L, ..., C)
    return model.lm_head(model.transformer.ln_f(reads)).float()


def lens_from_logits(
    logits: torch.Tensor, positions: list[int], k: int | None = None, tok: Tokenizer | None = None
) -> LogitLens:
    """A :class:`LogitLens` from the reads' logits ``(R, B, P, vocab)``: the ``k`` most likely tokens of each read
    (every token, sorted, when ``k`` is None), with display strings from ``tok`` (``"[id]"`` without one), on the
    CPU."""
    if k is not None and k < 1:
        raise ValueError(f"the lens keeps k >= 1 tokens per read, got k={k}")
    probs = torch.softmax(logits, dim=-1)
    vocab = probs.shape[-1]
    if k is None or k >= vocab:
        kept, ids = probs.sort(dim=-1, descending=True)
    else:
        # sampling.top_k is torch.topk made fast on CPU rows as long as a vocabulary: this runs on every step.
        kept, ids = top_k(probs.reshape(-1, vocab), k)
        kept, ids = kept.reshape(*probs.shape[:-1], k), ids.reshape(*probs.shape[:-1], k)
    # A lens is read by views, lists and plots: its tensors live on the CPU, whatever device the model is on.
    kept, ids = kept.cpu(), ids.cpu()
    unique = sorted(set(ids.flatten().tolist()))
    return LogitLens(probs=kept, ids=ids, positions=positions, token_strs=dict(zip(unique, display_strs(tok, unique))))


def logit_lens(
    model: GPT,
    resid_mid: torch.Tensor,
    resid_post: torch.Tensor,
    positions: list[int],
    k: int | None = None,
    tok: Tokenizer | None = None,
) -> LogitLens:
    """The logit lens of residual streams ``(L, B, P, C)`` read at ``positions``; see :func:`lens_from_logits`."""
    return lens_from_logits(read_logits(model, resid_mid, resid_post), positions, k, tok)
