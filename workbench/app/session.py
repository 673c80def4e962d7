"""A session's generation as the page receives it: settings read from raw input, and steps as compact data.

The server sends the page, per frame, only what is new: each new step's token, probabilities, top candidates,
pipeline stages, logit-lens row and attention row (every layer and head, cut to the last ``VIEW`` keys, as 16-bit
integers in base64). The page keeps the run and draws every view from it (``static/viewer.js``); nothing that grows
with the run crosses the wire per token. When the page misses frames (two updates applied at once), it asks for
the steps it lacks with :func:`frame` through a server function.

No gradio here: :mod:`workbench.app.ui` turns :class:`InputError` into the page's error message.
"""

from __future__ import annotations

import base64
import math
import os
import secrets
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from workbench.generate import SamplingConfig, prompt_ids
from workbench.model import GPT
from workbench.records import Candidate, LogitLens, Step
from workbench.tokenizers import Tokenizer

# The app's defaults (the CLI shows and takes them from here, without importing the page's web framework).
APP_MAX_NEW_TOKENS_CAP = 512  # the most tokens one request to the app may ask for (under MAX_NEW_TOKENS_LIMIT)
APP_CONCURRENCY = 32  # generations the app decodes at once, in batches (a class); more requests wait in its queue
VIEW = 16  # keys of each attention row the page receives: the attention views show at most this many positions
LENS_TOP = 3  # tokens per layer in the lens row the page receives
SHOWN_CHARS = 40  # a bad value longer than this is shortened in the error message

_RUNS: weakref.WeakValueDictionary[str, "Run"] = weakref.WeakValueDictionary()  # alive while a session holds it


class InputError(ValueError):
    """Bad input, told in words: a key of :mod:`workbench.app.strings` and its placeholders."""

    def __init__(self, key: str, **params: Any) -> None:
        super().__init__(key)
        self.key, self.params = key, params


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS - 8]}… ({len(text)} characters)"


def _bad(name: str, value: Any, **allowed: Any) -> InputError:
    return InputError("err_field", field=name, allowed=("allowed_" + name, allowed), value=_shown(value))


def _integer(value: Any) -> int | None:
    """An int from an int, an integral float (JSON clients send 40.0) or a short string of digits; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and 0 < len(value.strip()) <= 20 and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def read_settings(max_new_tokens: Any, temperature: Any, top_k: Any, top_p: Any, seed: Any, cap: int) -> SamplingConfig:
    """The sampling settings from raw input (the page, or a JSON client); :class:`InputError` names a bad field."""
    n = _integer(max_new_tokens)
    if n is None or not 1 <= n <= cap:
        raise _bad("max_new_tokens", max_new_tokens, cap=cap)
    t = _number(temperature)
    if t is None or t < 0:
        raise _bad("temperature", temperature)
    k = _integer(top_k)
    if k is None or k < 0:
        raise _bad("top_k", top_k)
    p = _number(top_p)
    if p is None or not 0 < p <= 1:
        raise _bad("top_p", top_p)
    if seed is None or (isinstance(seed, str) and not seed.strip()):
        s = None
    else:
        s = _integer(seed)
        if s is None or not 0 <= s < 2**63:
            raise _bad("seed", seed)
    return SamplingConfig(max_new_tokens=n, temperature=t, top_k=k, top_p=p, seed=s, max_new_tokens_cap=cap)


def read_prompt(model: GPT, tok: Tokenizer, prompt: Any) -> tuple[list[int], list[dict]]:
    """The prompt's token ids (fitted to the context) and the notes that say what was done to it."""
    if prompt is None:
        prompt = ""
    if not isinstance(prompt, str):
        raise _bad("prompt", prompt)
    for pos, ch in enumerate(prompt):
        if 0xD800 <= ord(ch) <= 0xDFFF:
            raise InputError("err_surrogate", code=f"{ord(ch):04X}", pos=pos)
    try:
        ids, _ = prompt_ids(model, tok, prompt)
        n = len(tok.encode(prompt))
    except ValueError as err:  # characters the tokenizer cannot encode: the message ends with them
        raise InputError("err_chars", chars=str(err).rsplit(": ", 1)[-1]) from None
    notes = []
    block = model.config.block_size
    if n == 0:
        notes.append({"key": "note_empty_prompt", "token": repr(tok.token_strs(ids)[0])})
    elif n > block:
        notes.append({"key": "note_long_prompt", "n": n, "block": block})
    return ids, notes


def _attention(row: torch.Tensor) -> str:
    """An attention row (L, H, n), cut to its last VIEW keys, as base64 of little-endian uint16 (weight x 65535)."""
    cut = row[..., -VIEW:].float().clamp(0, 1).cpu().numpy()
    return base64.b64encode(np.rint(cut * 65535).astype("<u2").tobytes()).decode("ascii")


def _lens(lens: LogitLens) -> list[list[list]]:
    """Each read's ``LENS_TOP`` most likely tokens as ``[text, probability]``. Rounded as whole tensors, in float64
    so that each number prints short: this runs on every step, beside the model."""
    ids = lens.ids[:, 0, 0, :LENS_TOP].tolist()
    probs = (torch.round(lens.probs[:, 0, 0, :LENS_TOP].double() * 1e4) / 1e4).tolist()
    return [[[lens.token_strs[i], p] for i, p in zip(row_ids, row_probs)] for row_ids, row_probs in zip(ids, probs)]


def _candidates(cands: list[Candidate]) -> list[list]:
    return [[c.token_str, round(c.prob, 5), c.token_id] for c in cands]


def step_data(step: Step) -> dict:
    """One step as the page receives it. ``a`` holds the attention row of the position that produced the token,
    over its last ``n`` keys (which end at that position). On a run's first step, ``rows`` holds the attention rows
    of the prompt's other positions (the server keeps them for the run's head and takes them out of the step).

    The app asks for it as the view of every step (``BatchedPool.stream(..., view=step_data)``): made by the server
    for a sequence alone in its batch, by its worker otherwise (see :mod:`workbench.batch_server`)."""
    att = step.attention
    data = {
        "id": step.token_id,
        "t": step.token_str,
        "p": round(step.prob, 5),
        "sp": round(step.sampled_prob, 5),
        "top": _candidates(step.top),
        "stages": [[s.name, s.kept, _candidates(s.candidates[:6])] for s in step.stages],
        "ws": step.window_start,
    }
    if att is not None:
        data["a"] = _attention(att)
        data["n"] = min(att.shape[-1], VIEW)
    if step.lens is not None:
        data["lens"] = _lens(step.lens)
    if step.prompt_attention is not None:  # the first step: rows of every prompt position but the last
        pattern = step.prompt_attention  # (L, H, P, P)
        data["rows"] = [{"a": _attention(pattern[:, :, q, : q + 1]), "n": min(q + 1, VIEW)}
                        for q in range(pattern.shape[-1] - 1)]
    return data


@dataclass(eq=False)
class Run:
    """A session's last generation: what the page has been sent (to resend what it missed) and what ablation needs."""

    cfg: SamplingConfig
    prompt_ids: list[int]
    prompt_tokens: list[str]
    shape: tuple[int, int]  # (layers, heads)
    block: int  # the model's context
    notes: list[dict] = field(default_factory=list)
    id: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    token_ids: list[int] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)
    prompt_rows: list[dict] = field(default_factory=list)  # attention of prompt positions before the last
    text: str = ""  # the generated text, decoded
    sent_text: str = ""  # the text as the page last received it
    state: str = "generating"  # then "done", "stopped" or "error"
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0
    last_step_at: float = 0.0  # wall clock (time.time()) when the server received the newest step

    def __post_init__(self) -> None:
        _RUNS[self.id] = self

    def add(self, data: dict) -> None:
        """Record a step, as :func:`step_data` gave it, and the notes it brings (a slide of the window, once per
        run)."""
        rows = data.pop("rows", None)
        if rows is not None:
            self.prompt_rows = rows
        if self.steps and data["ws"] != self.steps[-1]["ws"] and not any(
                n["key"] == "note_slid" for n in self.notes):
            self.notes.append({"key": "note_slid", "block": self.block,
                               "keep": len(self.prompt_ids) + len(self.steps) - data["ws"]})
        self.token_ids.append(data["id"])
        self.steps.append(data)
        self.seconds = time.perf_counter() - self.started
        self.last_step_at = time.time()

    def frame(self, start: int, seq: int) -> dict:
        """What the page needs from step ``start`` on: the steps, the status, the notes, and with ``start == 0``
        the run's head (prompt tokens and their attention, shape, seed). The text goes as ``tx = [k, tail]``: the
        page keeps its first ``k`` characters and appends ``tail`` (a multi-byte character split between tokens
        can change the end of the decoded text, so the tail starts where the two texts part)."""
        k = 0
        if seq >= 0:  # a frame of the stream; a resend (seq < 0) carries the whole text
            if start > 0:
                k = len(os.path.commonprefix([self.text, self.sent_text]))
            self.sent_text = self.text
        out = {
            "run": self.id,
            "seq": seq,
            "from": start,
            "steps": self.steps[start:],
            "state": self.state,
            "status": {"prompt": len(self.prompt_ids), "new": len(self.steps), "seconds": round(self.seconds, 3),
                       "seed": str(self.cfg.seed)},
            "t_last": round(self.last_step_at * 1000, 1),  # ms since the epoch: the page's lag is measured from it
            "notes": self.notes,
            "tx": [k, self.text[k:]],
        }
        if start == 0:
            out["head"] = {"prompt": self.prompt_tokens, "rows": self.prompt_rows, "shape": list(self.shape)}
        return out


def find_run(run_id: Any) -> Run | None:
    """The run with this id while some session still holds it."""
    return _RUNS.get(run_id) if isinstance(run_id, str) else None
