"""Lessons: every check passes the reference and names planted mistakes; every notebook runs.

Part 1 tests ``workbench.checks`` directly: a correct implementation gets ✓, a stub gets "not implemented yet",
and each planted mistake gets its own hint (the checks of Lessons II are tested the same way in
``tests/test_checks_*.py``). Part 2 executes each notebook in ``lessons/`` once, under nbmake (solutions: every
check ✓; student versions: every check "not implemented yet", no error), checks that the student versions are in
sync with the solutions, and that no notebook carries outputs.
"""

from __future__ import annotations

import errno
import math
import re
import time
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
import os
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench import checks
from workbench.model import MLP, Attention, Block

from verdicts import correct_implementation_test, planted_mistake_test, stub_of, stub_test, verdict

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"
SOLUTIONS = sorted(LESSONS.glob("[0-9][0-9]_*.ipynb"))
EXERCISES = sorted((LESSONS / "exercises").glob("[0-9][0-9]_*.ipynb"))
ZH_SOLUTIONS = sorted((LESSONS / "zh").glob("[0-9][0-9]_*.ipynb"))
ZH_EXERCISES = sorted((LESSONS / "zh" / "exercises").glob("[0-9][0-9]_*.ipynb"))
RUNNERS = 2  # notebooks run two at a time, one per core: a kernel spends much of a lesson waiting on one thread
# A lesson's budget is 2 minutes on 2 CPU cores (issue 6). Times are printed, not asserted: they are noisy on
# shared machines; a cell gets this long before nbclient gives up on it.
CELL_TIMEOUT_S = 180  # a cell's budget: the longest (a QUICK training run) takes under a minute on an idle machine,
# and two notebooks run at once here; a cell waiting for an unreachable hub (minutes of retries) runs out of it
# nbmake runs under tests/nbmake_run.py, which fixes nbclient's stall after ipywidgets cells (jupyter/nbclient#312:
# a kernel's reply left unread in the client's socket until the cell's timeout) and fails a run whose client reads a
# reply late. A notebook runs once: no retry, so a hang fails the test.
NBMAKE_RUN = Path(__file__).resolve().parent / "nbmake_run.py"


# ------------------------------------------------------------------------- correct implementations


def count_pairs(ids):
    return dict(Counter(zip(ids, ids[1:])))


def merge(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if ids[i : i + 2] == list(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def embed(idx, wte, wpe):
    return wte[idx] + wpe[: idx.shape[1]]


def softmax(x):
    e = torch.exp(x - x.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def causal_mask(T):
    return torch.tril(torch.ones(T, T, dtype=torch.bool))


def attention(q, k, v, mask, scale=None, softmax_dim=-1, fill=float("-inf")):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale
    return torch.softmax(scores.masked_fill(~mask, fill), dim=softmax_dim) @ v


def split_heads(x, n_head):
    B, T, C = x.shape
    return x.view(B, T, n_head, C // n_head).transpose(1, 2)


def merge_heads(y):
    B, nh, T, hs = y.shape
    return y.transpose(1, 2).reshape(B, T, nh * hs)


class MultiHead(nn.Module):
    """Correct by default; each switch plants one mistake."""

    def __init__(self, config, causal=True, scaled=True, merge=merge_heads, project=True, scale_by="head_size",
                 fill=float("-inf"), hide_where_true=False):
        super().__init__()
        self.n_head, self.causal, self.scaled, self.merge, self.project = config.n_head, causal, scaled, merge, project
        self.scale_by, self.fill, self.hide_where_true = scale_by, fill, hide_where_true
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (split_heads(t, self.n_head) for t in self.c_attn(x).split(C, dim=2))
        mask = causal_mask(T) if self.causal else torch.ones(T, T, dtype=torch.bool)
        if self.hide_where_true:
            mask = ~mask  # what masked_fill(mask, -inf) does: the allowed keys are hidden
        scale = {"head_size": None, "n_embd": 1 / math.sqrt(C), "T": 1 / math.sqrt(T)}[self.scale_by]
        y = self.merge(attention(q, k, v, mask, scale=scale if self.scaled else 1.0, fill=self.fill))
        return self.c_proj(y) if self.project else y


def gelu(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def layer_norm(x, weight, bias, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


class FeedForward(nn.Module):
    def __init__(self, config, act=gelu):
        super().__init__()
        self.act = act
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x):
        return self.c_proj(self.act(self.c_fc(x)))


class PreLNBlock(nn.Module):
    def __init__(self, config, post_ln=False):
        super().__init__()
        self.post_ln = post_ln
        self.ln_1, self.ln_2 = nn.LayerNorm(config.n_embd), nn.LayerNorm(config.n_embd)
        self.attn, self.mlp = Attention(config), MLP(config)

    def forward(self, x):
        if self.post_ln:
            x = self.ln_1(x + self.attn(x))
            return self.ln_2(x + self.mlp(x))
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TinyGPT(nn.Module):
    def __init__(self, config, final_ln=True):
        super().__init__()
        self.final_ln = final_ln
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.n_embd),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight

    def forward(self, idx):
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(idx.shape[1]))
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x) if self.final_ln else x)


def count_params(L, C, V, P):
    per_block = 2 * 2 * C + (C * 3 * C + 3 * C) + (C * C + C) + (C * 4 * C + 4 * C) + (4 * C * C + C)
    return V * C + P * C + L * per_block + 2 * C


# --------------------------------------------------------------------------- part 1: the checks

CORRECT = [
    (checks.check_count_pairs, count_pairs),
    (checks.check_merge, merge),
    (checks.check_embed, embed),
    (checks.check_softmax, softmax),
    (checks.check_causal_mask, causal_mask),
    (checks.check_attention, attention),
    (checks.check_split_heads, split_heads),
    (checks.check_merge_heads, merge_heads),
    (checks.check_multihead, MultiHead),
    (checks.check_gelu, gelu),
    (checks.check_layer_norm, layer_norm),
    (checks.check_mlp, FeedForward),
    (checks.check_block, PreLNBlock),
    (checks.check_gpt, TinyGPT),
    (checks.check_count_params, count_params),
]


test_check_passes_a_correct_implementation = correct_implementation_test(CORRECT)
test_check_on_a_stub_says_not_implemented = stub_test([(check, stub_of(student)) for check, student in CORRECT])


def test_multihead_attention_matches_workbench_bit_exactly(capsys):
    ok, out = verdict(capsys, checks.check_multihead, MultiHead)
    assert ok and "bit-exact" in out, out


# ---------------------------------------------------------------------------- planted mistakes


def attention_times_mask(q, k, v, mask):
    """Masks by multiplying -inf-filled scores by the 0/1 mask: -inf * 0 is NaN."""
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    return torch.softmax(scores.masked_fill(~mask, float("-inf")) * mask, dim=-1) @ v


def merge_first_only(ids, pair, new_id):
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == pair:
            return ids[:i] + [new_id] + ids[i + 2 :]
    return list(ids)


def merge_overlapping(ids, pair, new_id):
    """Merges at every position where the pair starts, overlaps included: [7, 7, 7] becomes [new, new]."""
    starts = {i for i in range(len(ids) - 1) if (ids[i], ids[i + 1]) == pair}
    return [new_id if i in starts else x for i, x in enumerate(ids) if i in starts or i - 1 not in starts]


class NoResidualBlock(PreLNBlock):
    def forward(self, x):
        return self.mlp(self.ln_2(self.attn(self.ln_1(x))))


class NoPositionsGPT(TinyGPT):
    def forward(self, idx):
        x = self.transformer.wte(idx)
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))


def doubled(x):
    return x * 2  # wrong in a way no known mistake explains


def stable_exp(x):
    return torch.exp(x - x.amax(dim=-1, keepdim=True))


def softmax_row_max_without_keepdim(x):
    e = torch.exp(x - x.max(dim=-1).values)  # (..., T) broadcast against (..., T, T): row j's max leaves column j
    return e / e.sum(dim=-1, keepdim=True)


def softmax_global_max(x):
    e = torch.exp(x - x.max())  # the rows far below the tensor's maximum underflow to 0: 0/0
    return e / e.sum(dim=-1, keepdim=True)


def attention_masked_with_zero(q, k, v, mask):
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    return torch.softmax(scores.masked_fill(~mask, 0.0), dim=-1) @ v


def attention_scores_times_mask(q, k, v, mask):
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    return torch.softmax(scores * mask, dim=-1) @ v


def attention_hiding_where_true(q, k, v, mask):
    """nn.MultiheadAttention's convention (True = blocked), where the course's is True = may attend."""
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    return torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1) @ v


def merge_heads_by_view(y):
    B, nh, T, hs = y.shape
    return y.transpose(1, 2).view(B, T, nh * hs)  # a transposed tensor is not contiguous: view raises


def gelu_without_half(x):
    return x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


class SameNormTwiceBlock(PreLNBlock):
    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_1(x))


PLANTED = [
    # (check, wrong implementation, words the hint must contain)
    (checks.check_count_pairs, lambda ids: count_pairs(ids + ids[:1]), "wraps around"),
    (checks.check_count_pairs, lambda ids: count_pairs(ids[:-1]), "last pair is missing"),
    (checks.check_count_pairs, lambda ids: dict.fromkeys(zip(ids, ids[1:]), 1), "each pair was counted once"),
    (checks.check_merge, lambda ids, p, n: merge(ids, p, n)[:-1], "last id went missing"),
    (checks.check_merge, merge_first_only, "only the first occurrence"),
    (checks.check_merge, merge_overlapping, "overlapping pairs were both merged"),
    (checks.check_merge, lambda ids, p, n: ids.clear() or [], "changed its input `ids` in place"),
    (checks.check_merge, lambda ids, p, n: None, "returned None"),
    (checks.check_embed, lambda idx, wte, wpe: wte[idx], "position embeddings are missing"),
    (checks.check_embed, lambda idx, wte, wpe: wte[idx] + wpe[idx], "looked up by token id"),
    (checks.check_embed, lambda idx, wte, wpe: wte[idx] + wpe[1 : idx.shape[1] + 1], "off by one"),
    (checks.check_softmax, lambda x: torch.exp(x) / torch.exp(x).sum(-1, keepdim=True), "overflows"),
    (checks.check_softmax, lambda x: torch.softmax(x, dim=-2), "wrong axis"),
    (checks.check_softmax, lambda x: x.sub_(x.amax(-1, keepdim=True)).exp() / x.exp().sum(-1, keepdim=True),
     "in place"),
    (checks.check_softmax, lambda x: stable_exp(x) / stable_exp(x).mean(), "mean of the whole tensor"),
    (checks.check_softmax, lambda x: stable_exp(x) / stable_exp(x).mean(dim=-1, keepdim=True), "its mean, not its sum"),
    (checks.check_softmax, lambda x: stable_exp(x) / stable_exp(x).sum(), "sum of the whole tensor"),
    (checks.check_softmax, lambda x: stable_exp(x) / stable_exp(x).sum(dim=0, keepdim=True),
     "sum ran over the wrong axis"),
    (checks.check_softmax, softmax_row_max_without_keepdim, "maximum was taken without keepdim=True"),
    (checks.check_softmax, softmax_global_max, "maximum of the whole tensor"),
    (checks.check_causal_mask, lambda T: torch.triu(torch.ones(T, T, dtype=torch.bool)), "wrong way"),
    (checks.check_causal_mask, lambda T: torch.tril(torch.ones(T, T, dtype=torch.bool), -1), "diagonal"),
    (checks.check_causal_mask, lambda T: torch.tril(torch.ones(T, T)), "bool"),
    (checks.check_causal_mask, lambda T: torch.triu(torch.ones(T, T), diagonal=1).bool(), "the mask is inverted"),
    (checks.check_attention, lambda q, k, v, m: attention(q, k, v, m, scale=1.0), "1/sqrt(d_k) scale is missing"),
    (checks.check_attention, lambda q, k, v, m: attention(q, k, v, m.T), "mask points the wrong way"),
    (checks.check_attention, lambda q, k, v, m: attention(q, k, v, m, softmax_dim=-2), "wrong axis"),
    (checks.check_attention, lambda q, k, v, m: attention(q, k, v, m, scale=1 / q.shape[-1]), "divided by d_k"),
    (checks.check_attention, attention_times_mask, "NaN"),
    (checks.check_attention, lambda q, k, v, m: attention(q.div_(1.0001), k, v, m), "changed its input `q` in place"),
    (checks.check_attention, lambda q, k, v, m: attention(q, k, v, m)[..., :1, :], "one row per query"),
    (checks.check_attention, attention_masked_with_zero, "masked scores were set to 0"),
    (checks.check_attention, attention_scores_times_mask, "masked scores were set to 0"),
    (checks.check_attention, attention_hiding_where_true, "the mask was used the wrong way round"),
    (checks.check_attention, lambda q, k, v, m: attention(q, k, v, m, scale=1 / math.sqrt(q.shape[-2])),
     "divided by sqrt(T)"),
    (checks.check_attention, lambda q, k, v, m: attention(q, k, v, m, scale=math.sqrt(q.shape[-1])),
     "multiplied by sqrt(d_k)"),
    (checks.check_split_heads, lambda x, nh: x.reshape(x.shape[0], nh, x.shape[1], -1), "mixes positions"),
    (checks.check_split_heads, lambda x, nh: x.view(x.shape[0], x.shape[1], nh, -1), "not swapped"),
    (checks.check_merge_heads, lambda y: y.reshape(y.shape[0], y.shape[2], -1), "without moving T back"),
    (checks.check_merge_heads, lambda y: y.transpose(1, 2), "output shape"),
    (checks.check_merge_heads, merge_heads_by_view, "not contiguous in memory"),
    (checks.check_multihead, lambda c: MultiHead(c, causal=False), "causal mask is missing"),
    (checks.check_multihead, lambda c: MultiHead(c, project=False), "c_proj is missing"),
    (checks.check_multihead, lambda c: MultiHead(c, scaled=False), "not scaled"),
    (checks.check_multihead, lambda c: MultiHead(c, merge=lambda y: y.reshape(y.shape[0], y.shape[2], -1)),
     "merged without transposing back"),
    (checks.check_multihead, lambda c: nn.Linear(c.n_embd, c.n_embd), "no parameters named"),
    (checks.check_multihead, lambda c: MultiHead(c, scale_by="n_embd"), "scaled by 1/sqrt(n_embd)"),
    (checks.check_multihead, lambda c: MultiHead(c, scale_by="T"), "scaled by 1/sqrt(T)"),
    (checks.check_multihead, lambda c: MultiHead(c, fill=0.0), "masked scores were set to 0"),
    (checks.check_multihead, lambda c: MultiHead(c, hide_where_true=True), "the mask was used the wrong way round"),
    (checks.check_multihead, lambda c: MultiHead(c, merge=merge_heads_by_view), "not contiguous in memory"),
    (checks.check_gelu, torch.relu, "ReLU"),
    (checks.check_gelu, F.gelu, "exact GELU"),
    (checks.check_gelu, gelu_without_half, "factor 0.5"),
    (checks.check_layer_norm, lambda x, w, b, eps=1e-5: (x - x.mean(-1, keepdim=True)) / torch.sqrt(
        x.var(-1, keepdim=True) + eps) * w + b, "unbiased"),
    (checks.check_layer_norm, lambda x, w, b, eps=1e-5: (x - x.mean(-1, keepdim=True)) / (
        x.var(-1, keepdim=True, unbiased=False).sqrt() + eps) * w + b, "outside the square root"),
    (checks.check_layer_norm, lambda x, w, b, eps=1e-5: layer_norm(x, w, b, eps) / w - b / w, "weight and bias"),
    (checks.check_mlp, lambda c: FeedForward(c, act=torch.relu), "ReLU instead of GELU"),
    (checks.check_mlp, lambda c: FeedForward(c, act=lambda h: h), "activation is missing"),
    (checks.check_block, lambda c: PreLNBlock(c, post_ln=True), "post-LN"),
    (checks.check_block, NoResidualBlock, "residual connections"),
    (checks.check_block, SameNormTwiceBlock, "ln_1 was used before the MLP too"),
    (checks.check_gpt, lambda c: TinyGPT(c, final_ln=False), "final LayerNorm"),
    (checks.check_gpt, NoPositionsGPT, "position embeddings"),
    (checks.check_count_params, lambda L, C, V, P: count_params(L, C, V, P) + V * C, "counted separately"),
    (checks.check_count_params, lambda L, C, V, P: count_params(L, C, V, P) - P * C, "position embeddings"),
    (checks.check_count_params, lambda L, C, V, P: count_params(L, C, V, P) - 2 * C, "final LayerNorm ln_f"),
    (checks.check_count_params, lambda L, C, V, P: float(count_params(L, C, V, P)), "return an int"),
    (checks.check_gelu, doubled, "no known mistake matches"),
    (checks.check_gelu, lambda x: 1 / 0, "ZeroDivisionError"),
]


test_check_names_the_planted_mistake = planted_mistake_test(PLANTED)


# ------------------------------------------------------------------------- part 2: the notebooks


SPAWN_TRIES = 3


def run_spawned(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run``, started again when starting the process itself failed with EFAULT ("Bad address"), which
    the 2-core CI machine gave twice in many runs, from a spawn on a background thread while other tests ran: the
    command had not started, so nothing it would have done is skipped. Any other failure is raised as it is."""
    attempt = 1
    while True:
        try:
            return subprocess.run(cmd, **kwargs)
        except OSError as err:
            if err.errno != errno.EFAULT or attempt == SPAWN_TRIES:
                raise
            print(f"starting {cmd[1]} failed with EFAULT; starting it again", file=sys.stderr)
        attempt += 1
        time.sleep(1)


def test_a_spawn_that_fails_with_efault_is_started_again_and_other_failures_are_not(monkeypatch):
    calls = []

    def flaky_run(cmd, **kwargs):
        calls.append(cmd)
        if len(calls) == 1:
            raise OSError(errno.EFAULT, "Bad address")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, "run", flaky_run)
    monkeypatch.setattr(time, "sleep", lambda s: None)
    assert run_spawned(["python", "x.py"]).returncode == 0 and len(calls) == 2

    def missing(cmd, **kwargs):
        calls.append(cmd)
        raise FileNotFoundError(errno.ENOENT, "No such file")

    calls.clear()
    monkeypatch.setattr(subprocess, "run", missing)
    with pytest.raises(FileNotFoundError):
        run_spawned(["python", "x.py"])
    assert len(calls) == 1


def execute(path: Path) -> tuple[nbformat.NotebookNode, float]:
    """Run a notebook top to bottom in a fresh kernel under nbmake (as CI asks), keeping its outputs; return it with
    the seconds from the first cell's start to the last cell's end (kernel start-up not included).

    nbmake fails on any cell error. It runs a copy next to the original (same working directory, so relative paths
    behave as for a student) with ``--overwrite``, which is how the outputs come back for the checks' verdicts. The
    run happens in its own process (other tests leave servers and event loops in this one), as pytest under
    ``tests/nbmake_run.py``, which keeps nbclient from stalling after ipywidgets cells.
    """
    copy = path.with_name(f".run-{os.getpid()}-{path.name}")
    copy.write_bytes(path.read_bytes())
    cmd = [sys.executable, str(NBMAKE_RUN), "--nbmake", "--overwrite", f"--nbmake-timeout={CELL_TIMEOUT_S}", "-q",
           "-p", "no:cacheprovider", "--no-cov", str(copy)]
    try:
        result = run_spawned(cmd, capture_output=True, text=True, cwd=path.parent, timeout=900)
        assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout[-3000:]
        notebook = nbformat.read(copy, as_version=4)
    finally:
        copy.unlink(missing_ok=True)
    times = [c.metadata["execution"] for c in notebook.cells if c.cell_type == "code"]
    start = datetime.fromisoformat(times[0]["iopub.execute_input"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(times[-1]["shell.execute_reply"].replace("Z", "+00:00"))
    return notebook, (end - start).total_seconds()


def check_cells(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in notebook.cells if c.cell_type == "code" and "check" in c.metadata.get("tags", [])]


def printed(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def chinese(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


@pytest.fixture(scope="module", autouse=True)
def student_environment():
    """The environment the notebooks' kernels inherit, for the whole module (the runs start on threads ahead of
    their tests). Lessons that train take fewer steps on the same code path; otherwise the kernel runs as a
    student's does: without the suite's Hugging Face offline switches, so a cell that waits for the hub on a
    machine without internet runs out of its time budget and fails."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_QUICK", "1")
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            mp.delenv(name, raising=False)
        yield


@pytest.fixture(scope="module")
def runs(request, student_environment):
    """The runs of every notebook the selected tests of this module need, started ``RUNNERS`` at a time in the
    order the tests ask for them: ``runs[path]`` is a future of ``execute(path)``."""
    wanted = []
    for item in request.session.items:
        path = getattr(item, "callspec", None) and item.callspec.params.get("notebook")
        if isinstance(path, Path) and path not in wanted:
            wanted.append(path)
    pool = ThreadPoolExecutor(RUNNERS)
    futures = {path: pool.submit(execute, path) for path in wanted}
    yield futures
    pool.shutdown(cancel_futures=True)


def test_every_lesson_has_a_student_version_and_a_chinese_edition():
    assert len(SOLUTIONS) >= 4
    assert [p.name for p in EXERCISES] == [p.name for p in SOLUTIONS]
    assert [p.name for p in ZH_SOLUTIONS] == [p.name for p in SOLUTIONS]
    assert [p.name for p in ZH_EXERCISES] == [p.name for p in SOLUTIONS]


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_every_solution_is_checked_before_the_next_exercise(path):
    unchecked = None  # the solution cell still waiting for its check
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        if "### BEGIN SOLUTION" in cell.source:
            assert unchecked is None, f"no check after:\n{unchecked}"
            unchecked = cell.source
        if "check" in cell.metadata.get("tags", []):
            assert cell.source.startswith("checks.check_") and unchecked is not None, cell.source
            unchecked = None
    assert unchecked is None, f"no check after:\n{unchecked}"


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_every_markdown_cell_carries_its_chinese_text(path):
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "markdown":
            assert chinese(cell.metadata.get("zh", "")), f"no Chinese for:\n{cell.source[:300]}"


@pytest.mark.parametrize("notebook", SOLUTIONS + ZH_SOLUTIONS,
                         ids=[p.stem for p in SOLUTIONS] + [f"zh-{p.stem}" for p in ZH_SOLUTIONS])
def test_solution_notebook_runs_with_every_check_passing(notebook, runs):
    ran, seconds = runs[notebook].result()
    in_chinese = notebook.parent.name == "zh"
    for cell in check_cells(ran):
        assert printed(cell).startswith("✓"), f"{cell.source}: {printed(cell)}"
        assert chinese(printed(cell)) == in_chinese, printed(cell)
    print(f"\n{notebook.relative_to(LESSONS)} (solution): {seconds:.1f} s")


@pytest.mark.parametrize("notebook", EXERCISES + ZH_EXERCISES,
                         ids=[p.stem for p in EXERCISES] + [f"zh-{p.stem}" for p in ZH_EXERCISES])
def test_student_notebook_runs_with_every_check_not_implemented(notebook, runs):
    ran, seconds = runs[notebook].result()
    assert "raise NotImplementedError  # your code here" in "".join(c.source for c in ran.cells)
    todo = "尚未实现" if notebook.parent.parent.name == "zh" else "not implemented yet"
    for cell in check_cells(ran):
        assert todo in printed(cell) and printed(cell).startswith("○"), printed(cell)
    print(f"\n{notebook.relative_to(LESSONS)} (student): {seconds:.1f} s")


def test_generated_editions_are_in_sync_with_the_solutions(tmp_path):
    subprocess.run([sys.executable, str(LESSONS / "make_exercises.py"), "--root", str(tmp_path)], check=True,
                   capture_output=True)
    for folder, committed in (("exercises", EXERCISES), ("zh", ZH_SOLUTIONS), ("zh/exercises", ZH_EXERCISES)):
        regenerated = sorted((tmp_path / folder).glob("*.ipynb"))
        assert [p.name for p in regenerated] == [p.name for p in committed], folder
        for fresh, old in zip(regenerated, committed):
            assert fresh.read_bytes() == old.read_bytes(), f"{old} is stale: run `make exercises`"


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_both_editions_run_the_same_code(path):
    """The Chinese edition's code cells are the English edition's, after one cell that sets the checks' language:
    so the English runs prove its code, and its own runs prove its words."""
    def code(p: Path) -> list[str]:
        return [c.source for c in nbformat.read(p, as_version=4).cells if c.cell_type == "code"]

    for english, zh in ((path, LESSONS / "zh" / path.name),
                        (LESSONS / "exercises" / path.name, LESSONS / "zh" / "exercises" / path.name)):
        zh_code = code(zh)
        assert 'checks.use_language("zh")' in zh_code[0]
        assert zh_code[1:] == code(english)


def markdown(name: str) -> str:
    return "\n".join(c.source for c in nbformat.read(LESSONS / name, as_version=4).cells if c.cell_type == "markdown")


def code(name: str) -> str:
    return "\n".join(c.source for c in nbformat.read(LESSONS / name, as_version=4).cells if c.cell_type == "code")


@pytest.mark.parametrize("name", ["07_training.ipynb", "09_looking_inside.ipynb", "10_encoder_decoder.ipynb",
                                  "12_using_a_gpt.ipynb", "14_since_gpt2.ipynb",
                                  "15_assistant.ipynb"])
def test_lessons_that_train_use_one_thread(name):
    # Two torch threads on a busy 2-core machine make a small model's training step several times slower.
    assert "torch.set_num_threads(1)" in code(name)


def test_lesson_00_states_no_model_size_it_does_not_print():
    # It once said 8 heads of a model that has 6: sizes come from model.config, printed by the code.
    assert not re.search(r"\b\d+\s+(attention\s+)?heads\b", markdown("00_welcome.ipynb"))
    assert "model.config" in code("00_welcome.ipynb")


def test_lesson_06_does_not_call_a_right_round_number_an_error():
    box = next(part for part in markdown("06_assemble_gpt.ipynb").split("> **The article says**") if "100倍" in part)
    assert "**In fact**: about right" in box and "112" in box


def test_stub_replaces_each_solution_block_at_its_indentation():
    sys.path.insert(0, str(LESSONS))
    try:
        from make_exercises import strip_solutions
    finally:
        sys.path.remove(str(LESSONS))
    source = "def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n\nf"
    assert strip_solutions(source) == "def f(x):\n    raise NotImplementedError  # your code here\n\nf"
    for broken in ("### BEGIN SOLUTION\nx", "x\n### END SOLUTION", "### BEGIN SOLUTION\n### BEGIN SOLUTION"):
        with pytest.raises(ValueError):
            strip_solutions(broken)


def test_notebooks_carry_no_outputs():
    nbstripout = Path(sys.executable).parent / "nbstripout"
    notebooks = [str(p) for p in SOLUTIONS + EXERCISES]
    result = subprocess.run([str(nbstripout), "--verify", *notebooks], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
