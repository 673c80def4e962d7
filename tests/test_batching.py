"""Batched decoding: each sequence in a batch gets its solo run's answers, whoever else is in the batch, and the
pool that serves it keeps every request's stop, error and limits to that request.

Solo references come from ``workbench.stream`` on the same model; the tiny models have a 32-token context, so
runs of 40 tokens slide their window inside the batch.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench import GPT, GPTConfig, SamplingConfig, save_checkpoint, stream
from workbench.app.session import step_data
from workbench.batch_sampling import pick_rows
from workbench.batch_server import BatchedPool, PoolBusy, _widen
from workbench.batching import BatchedDecoder, RowCache
from workbench.fast import accelerate
from workbench.generate import N_CANDIDATES, _Decoder
from workbench.tokenizers import CharTokenizer

TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\nFirst Citizen: To be, or not to be.\n"
PROMPTS = ["ROMEO:", "But soft, what light", "F", "To be, or not to be. To be, or not"]  # 6, 20, 1 and 34 tokens
FAILSAFE = 60  # seconds a test waits for an event; never reached when the code under test works
TOLERANCE = 1e-5  # rows computed together equal a lone row to rounding
ROOT = Path(__file__).resolve().parent.parent


def tiny_model(tok: CharTokenizer, **switches) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=4, n_embd=32, **switches)
    # Accelerated, as load_model gives it to the app: the packed path's numbers do not depend on the thread count
    # (a worker runs on one thread, this process on two).
    return accelerate(GPT(config).eval())


@pytest.fixture(scope="module")
def tok():
    return CharTokenizer.from_text(TEXT)


@pytest.fixture(scope="module")
def model(tok):
    return tiny_model(tok)


def settings(seed: int, n: int = 40, **changes) -> SamplingConfig:
    return SamplingConfig(**{**dict(max_new_tokens=n, temperature=0.9, top_k=12, top_p=0.9, seed=seed), **changes})


def run_batched(decoder: BatchedDecoder, requests: dict, join_at: dict | None = None, leave_at: dict | None = None):
    """Decode ``requests`` (key -> (prompt, cfg, ablate)) in one batch: each joins before step ``join_at[key]``
    (default 0) and is removed before step ``leave_at[key]``; returns each key's steps (or its error)."""
    join_at, leave_at = join_at or {}, leave_at or {}
    steps: dict = {key: [] for key in requests}
    waiting = dict(requests)
    step = 0
    while waiting or len(decoder):
        for key in [k for k in waiting if join_at.get(k, 0) <= step]:
            prompt, cfg, ablate = waiting.pop(key)
            steps[key].append(decoder.add(key, prompt, cfg, ablate).step)
        for key in [k for k, at in leave_at.items() if at == step]:
            decoder.remove(key)
        for emitted in decoder.step():
            steps[emitted.key].append(emitted.error if emitted.error is not None else emitted.step)
        step += 1
        assert step < 1000, "the batch never emptied"
    return steps


def assert_same_steps(batched: list, solo: list) -> None:
    """Token for token the solo run's steps; attention rows, lens and every probability to float tolerance."""
    assert [s.token_id for s in batched] == [s.token_id for s in solo]
    for b, s in zip(batched, solo):
        assert (b.index, b.window_start, b.notes) == (s.index, s.window_start, s.notes)
        torch.testing.assert_close(b.attention, s.attention, rtol=0, atol=TOLERANCE)
        torch.testing.assert_close(b.lens.probs, s.lens.probs, rtol=0, atol=TOLERANCE)
        assert torch.equal(b.lens.ids, s.lens.ids) and b.lens.positions == s.lens.positions
        assert b.lens.token_strs == s.lens.token_strs
        if s.prompt_attention is not None:
            assert torch.equal(b.prompt_attention, s.prompt_attention)  # the prompt ran alone: bit for bit
        assert b.prob == pytest.approx(s.prob, abs=TOLERANCE)
        assert b.sampled_prob == pytest.approx(s.sampled_prob, abs=TOLERANCE)
        for bs, ss in zip([("top", b.top)] + [(x.name, x.candidates) for x in b.stages],
                          [("top", s.top)] + [(x.name, x.candidates) for x in s.stages]):
            assert bs[0] == ss[0] and [c.token_id for c in bs[1]] == [c.token_id for c in ss[1]]
            assert [c.token_str for c in bs[1]] == [c.token_str for c in ss[1]]
            assert [c.prob for c in bs[1]] == pytest.approx([c.prob for c in ss[1]], abs=TOLERANCE)
        assert [x.kept for x in b.stages] == [x.kept for x in s.stages]


def solo_steps(model, tok, prompt, cfg, ablate=()) -> list:
    return list(stream(model, tok, prompt, cfg, ablate=ablate))


def test_greedy_in_a_batch_is_the_solo_run(model, tok):
    requests = {i: (p, settings(0, temperature=0.0), ()) for i, p in enumerate(PROMPTS)}
    steps = run_batched(BatchedDecoder(model, tok), requests)
    for key, (prompt, cfg, _) in requests.items():
        assert_same_steps(steps[key], solo_steps(model, tok, prompt, cfg))
    assert any("slid the window" in n for s in steps[3] for n in s.notes)  # a window slid inside the batch


def test_seeded_sampling_in_a_batch_is_the_solo_run_whatever_each_sequences_settings(model, tok):
    cfgs = [
        settings(1),
        settings(2, temperature=1.3, top_k=0, top_p=1.0),  # no filter
        settings(3, top_k=3, top_p=1.0),
        settings(4, top_k=0, top_p=0.5),
        settings(5, temperature=0.0),  # greedy beside sampled rows
        settings(6, repetition_penalty=1.3, banned_words=["be"]),  # the solo pipeline, inside the batch
        settings(None),  # unseeded: only checked to finish
    ]
    requests = {i: (PROMPTS[i % len(PROMPTS)], cfg, ()) for i, cfg in enumerate(cfgs)}
    steps = run_batched(BatchedDecoder(model, tok), requests)
    for key, (prompt, cfg, _) in requests.items():
        if cfg.seed is None:
            assert len(steps[key]) == cfg.max_new_tokens
        else:
            assert_same_steps(steps[key], solo_steps(model, tok, prompt, cfg))


def test_pick_rows_gives_the_solo_pipelines_distributions_for_the_same_logits(model, tok):
    torch.manual_seed(1)
    logits = torch.randn(4, tok.vocab_size) * 3
    cfgs = [settings(0), settings(1, top_k=0, top_p=0.7), settings(2, temperature=0.0), settings(3, top_p=1.0)]
    generators = [torch.Generator().manual_seed(c.seed) for c in cfgs]
    picked = pick_rows(logits, cfgs, generators, tok, N_CANDIDATES)
    for row, cfg, got in zip(logits, cfgs, picked):
        solo = _Decoder(model, tok, "R", cfg, capture=False, ablate=(), bf16=False)
        assert got == solo._pick(row)  # the same logits: the same token and every stage, exactly


@pytest.mark.parametrize("switches", [
    dict(),
    dict(position="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=2, bias=False),  # a Llama-style model
], ids=["gpt2", "rope-gqa"])
def test_sequences_join_and_leave_between_steps(tok, switches):
    model = tiny_model(tok, **switches)
    requests = {i: (p, settings(10 + i), ()) for i, p in enumerate(PROMPTS)}
    requests["gone"] = ("ROMEO:", settings(99), ())
    steps = run_batched(BatchedDecoder(model, tok), requests, join_at={1: 3, 2: 3, 3: 17, "gone": 1},
                        leave_at={"gone": 5})
    for key, (prompt, cfg, _) in requests.items():
        if key != "gone":
            assert_same_steps(steps[key], solo_steps(model, tok, prompt, cfg))
    # Its first token when it joined (before step 1), one in each of steps 1-4; removed before step 5.
    assert len(steps["gone"]) == 5


def test_each_sequence_has_its_own_ablated_heads(model, tok):
    requests = {"none": ("ROMEO:", settings(1), ()), "a": ("ROMEO:", settings(1), [(0, 1)]),
                "b": ("ROMEO:", settings(1), [(1, 0), (0, 3)]), "a2": ("But soft", settings(2), [(0, 1)])}
    steps = run_batched(BatchedDecoder(model, tok), requests)
    for key, (prompt, cfg, ablate) in requests.items():
        assert_same_steps(steps[key], solo_steps(model, tok, prompt, cfg, ablate))


def test_a_stop_string_or_an_error_ends_only_its_own_sequence(model, tok, monkeypatch):
    decoder = BatchedDecoder(model, tok)
    solo = solo_steps(model, tok, "ROMEO:", settings(1))
    text = tok.decode([s.token_id for s in solo])
    stop = text[5:8]  # appears in the solo run's output, so that run stops there
    requests = {"stops": ("ROMEO:", settings(1, stop=[stop]), ()), "fails": ("ROMEO:", settings(2), ()),
                "goes on": ("But soft", settings(3), ())}
    for key, (prompt, cfg, ablate) in requests.items():
        decoder.add(key, prompt, cfg, ablate)
    fails = decoder._where["fails"][1].decoder
    calls = []

    def broken_pick(logits):  # this sequence's next pick fails, as a bug in its own settings would
        calls.append(1)
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(fails, "_pick", broken_pick)
    monkeypatch.setattr(fails.cfg, "repetition_penalty", 1.5)  # take the per-row pipeline, where the stand-in sits
    outcome: dict = {key: [] for key in requests}
    while len(decoder):
        for emitted in decoder.step():
            outcome[emitted.key].append(emitted)
    assert [e.step.token_id for e in outcome["stops"]] == [s.token_id for s in solo][1 : len(outcome["stops"]) + 1]
    assert stop in tok.decode([solo[0].token_id] + [e.step.token_id for e in outcome["stops"]])
    assert outcome["stops"][-1].last and len(outcome["stops"]) < 39
    assert len(outcome["fails"]) == 1 and isinstance(outcome["fails"][0].error, RuntimeError) and calls == [1]
    assert [e.step.token_id for e in outcome["goes on"]] == [
        s.token_id for s in solo_steps(model, tok, "But soft", settings(3))][1:]


def test_bad_settings_are_refused_before_joining(model, tok):
    decoder = BatchedDecoder(model, tok)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        decoder.add(1, [10_000], settings(0))
    with pytest.raises(ValueError, match="cannot ablate head"):
        decoder.add(2, "R", settings(0), ablate=[(5, 0)])
    decoder.add(3, "R", settings(0))
    with pytest.raises(ValueError, match="already decoding"):
        decoder.add(3, "R", settings(0))
    assert len(decoder) == 1


def test_uninitialized_memory_never_reaches_a_shorter_row(model, tok, monkeypatch):
    """A shorter row's attention reads the slots past its length with weight 0; were they NaN, 0 x NaN would be."""
    empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *args, **kwargs: empty(*args, **kwargs).fill_(float("nan")))
    requests = {i: (p, settings(40 + i), ()) for i, p in enumerate(PROMPTS)}  # 1 to 32 tokens: rows differ
    steps = run_batched(BatchedDecoder(model, tok), requests)
    monkeypatch.undo()
    for key, (prompt, cfg, _) in requests.items():
        assert_same_steps(steps[key], solo_steps(model, tok, prompt, cfg))


def test_row_cache_gives_each_row_its_positions_and_keys(model):
    solo = model.new_kv_cache(1)
    solo.length = 5  # only the bookkeeping matters here
    cache = RowCache(model.config, 1, "cpu", torch.float32)  # grows past one row
    for n in (5, 2, 7):
        solo.length = n
        cache.add_row(solo)
    assert cache.positions(1).flatten().tolist() == [5, 2, 7] and cache.length == 7
    mask = cache.key_mask(1)[:, 0, 0]  # (B, length + 1)
    assert mask.sum(-1).tolist() == [6, 3, 8] and mask[1, :3].all() and not mask[1, 3:].any()
    cache.remove_row(0)  # the last row moves into row 0
    assert cache.lengths == [7, 2]
    with pytest.raises(ValueError, match="one new token per row"):
        cache.positions(3)


# ---- the pool that serves it ------------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=[True, False], ids=["worker-process", "thread"])
def pool(request, model, tok):
    pool = BatchedPool(model, tok, max_batch=8, process=request.param)
    yield pool
    pool.close()


def test_pool_streams_are_the_solo_runs_with_or_without_a_view(pool, model, tok):
    results: dict = {}

    def session(i: int) -> None:
        cfg = settings(20 + i)
        results[i] = list(pool.stream(tok.encode(PROMPTS[i]), cfg, view=step_data if i % 2 else None))

    threads = [threading.Thread(target=session, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(FAILSAFE)
    for i, prompt in enumerate(PROMPTS):
        solo = solo_steps(model, tok, tok.encode(prompt), settings(20 + i))
        if i % 2:
            assert [d["id"] for d in results[i]] == [s.token_id for s in solo]
            assert [d["t"] for d in results[i]] == [s.token_str for s in solo]
            assert "rows" in results[i][0]
        else:
            assert_same_steps(results[i], solo)


def test_closing_a_stream_ends_only_it_and_frees_its_place(model, tok):
    pool = BatchedPool(model, tok, max_batch=1, max_waiting=1, process=False)
    try:
        first = pool.stream("ROMEO:", settings(1, n=400))
        next(first)
        waiting: list = []
        second = threading.Thread(target=lambda: waiting.extend(pool.stream("But soft", settings(2))))
        second.start()
        deadline = time.time() + FAILSAFE
        while not pool._waiting:  # the second request waits for the place the first holds
            assert time.time() < deadline, "the second request never waited"
            time.sleep(0.01)
        with pytest.raises(PoolBusy, match="busy: 1 requests are already waiting"):
            pool.stream("F", settings(3))  # refused at once: the queue holds one
        first.close()  # a Stop, or a client that went away
        second.join(FAILSAFE)
        assert [s.token_id for s in waiting] == [s.token_id for s in solo_steps(model, tok, "But soft", settings(2))]
    finally:
        pool.close()


def test_a_request_over_the_token_limit_is_refused_at_once(model, tok):
    pool = BatchedPool(model, tok, max_tokens=20, process=False)
    try:
        with pytest.raises(ValueError, match="needs 26 cache positions .* more than the 20 this server holds"):
            pool.stream("ROMEO:", settings(0, n=20))  # no iteration needed: the call itself refuses
        assert len(list(pool.stream("ROMEO:", settings(0, n=10)))) == 10
    finally:
        pool.close()


def test_an_error_or_a_failing_view_ends_only_its_request(pool, model, tok):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        pool.stream([10_000], settings(0))
    with pytest.raises(ValueError, match="every token is banned"):
        list(pool.stream("R", settings(0, banned_token_ids=list(range(tok.vocab_size)))))
    ok = pool.stream("ROMEO:", settings(5))
    got = [next(ok).token_id]
    with pytest.raises(ZeroDivisionError):
        list(pool.stream("But soft", settings(6), view=failing_view))
    got += [s.token_id for s in ok]
    assert got == [s.token_id for s in solo_steps(model, tok, "ROMEO:", settings(5))]


def test_a_view_is_the_same_made_by_the_server_or_by_the_worker_and_fails_alike(model, tok):
    """One loop: a lone sequence's view is made by the server, a sequence sharing the batch has it made in the
    worker; the page's data is the same either way, and a failing view ends its own request in both."""
    pool = BatchedPool(model, tok, loops=1, process=True)
    try:
        cfg = settings(7, n=30)
        alone = list(pool.stream("ROMEO:", cfg, view=step_data))
        other = pool.stream("But soft", settings(8, n=400))
        next(other)  # from here on the batch holds two sequences
        shared = list(pool.stream("ROMEO:", cfg, view=step_data))
        assert shared == alone == [step_data(s) for s in solo_steps(model, tok, "ROMEO:", cfg)]
        assert set(pool.stream("F", settings(9, n=5), view=process_id)) - {os.getpid()}  # made in the worker
        other.close()
        assert set(pool.stream("F", settings(9, n=5), view=process_id)) == {os.getpid()}  # alone: by the server
        other = pool.stream("But soft", settings(8, n=400))
        next(other)
        with pytest.raises(ZeroDivisionError):
            list(pool.stream("F", settings(6), view=failing_view))
        assert len(list(other)) == 399
    finally:
        pool.close()


def process_id(step):  # a view that tells which process made it
    return os.getpid()


def failing_view(step):  # module level, so that it pickles by name into the worker
    if step.index == 3:
        raise ZeroDivisionError("a view that fails on its fourth step")
    return step.token_id


def test_a_dead_worker_fails_its_requests_and_is_replaced(model, tok):
    pool = BatchedPool(model, tok)
    try:
        steps = pool.stream("ROMEO:", settings(1, n=400))
        next(steps)
        pool._loops[0].worker.kill()
        with pytest.raises(RuntimeError, match="worker stopped unexpectedly"):
            list(steps)
        assert [s.token_id for s in pool.stream("F", settings(2))] == [
            s.token_id for s in solo_steps(model, tok, "F", settings(2))]
    finally:
        pool.close()


@pytest.mark.skipif(sys.platform == "win32", reason="a pipe there is not a socket")
def test_a_workers_send_of_a_long_runs_steps_does_not_wait_for_the_server_to_read():
    """Late in a long run one send carries hundreds of kilobytes (steps with their capture): the worker's end of
    the pipe holds it, so the worker goes on decoding while the server is busy, instead of waiting for it to read."""
    server_end, worker_end = multiprocessing.get_context("spawn").Pipe()
    _widen(worker_end)
    message = bytes(600_000)  # three times a socket's default buffer on Linux, within SEND_BUFFER_BYTES
    sender = threading.Thread(target=worker_end.send_bytes, args=(message,), daemon=True)
    sender.start()
    sender.join(timeout=10)
    try:
        assert not sender.is_alive(), "the send waited for the server to read"
    finally:
        assert server_end.recv_bytes() == message  # nothing lost, and a waiting send is released
        sender.join()


def test_load_thirty_two_sessions_get_their_solo_outputs(model, tok, capsys):
    """A class: 32 sessions at once through worker processes, as the app serves them; every output equals its
    solo reference (no cross-talk, no errors). Prints the figures; timings are benchmarks/batching.py's."""
    sessions, n = 32, 40
    pool = BatchedPool(model, tok, max_batch=sessions, loops=2)
    first, finish, outputs, failures = {}, {}, {}, []
    start = threading.Barrier(sessions + 1)

    def session(i: int) -> None:
        start.wait()
        t0 = time.perf_counter()
        try:
            outputs[i] = []
            for data in pool.stream(tok.encode(PROMPTS[i % len(PROMPTS)]), settings(100 + i, n=n), view=step_data):
                first.setdefault(i, time.perf_counter() - t0)
                outputs[i].append(data)
        except Exception as err:  # every failure is collected and reported below
            failures.append(f"session {i}: {err!r}")
        finish[i] = time.perf_counter() - t0

    threads = [threading.Thread(target=session, args=(i,)) for i in range(sessions)]
    try:
        warm = [pool.stream("R", settings(0, n=2)) for _ in range(2)]  # both workers up before the clock starts
        for steps in warm:
            next(steps)
        for steps in warm:
            list(steps)
        for t in threads:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join(FAILSAFE * 5)
        wall = time.perf_counter() - t0
    finally:
        pool.close()
    assert failures == []
    for i in range(sessions):
        solo = [step_data(s) for s in solo_steps(model, tok, tok.encode(PROMPTS[i % len(PROMPTS)]),
                                                   settings(100 + i, n=n))]
        assert [(d["id"], d["t"], d["ws"]) for d in outputs[i]] == [(d["id"], d["t"], d["ws"]) for d in solo], \
            f"session {i} differs from its solo run"
    with capsys.disabled():
        print(f"\nbatched load: {sessions} sessions x {n} tokens: {sessions * n / wall:.0f} tok/s aggregate; first "
              f"token p50 {np.percentile(list(first.values()), 50) * 1000:.0f} ms, p95 "
              f"{np.percentile(list(first.values()), 95) * 1000:.0f} ms; finish p50 "
              f"{statistics.median(finish.values()):.2f} s, p95 {np.percentile(list(finish.values()), 95):.2f} s")


def test_the_benchmark_runs_on_a_tiny_model(model, tok, tmp_path):
    save_checkpoint(model, tok, tmp_path)
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "batching.py"), "--model", str(tmp_path), "--sessions", "1", "3",
         "--runs", "1", "--new-tokens", "5", "--pool-size", "1", "--loops", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith(("| pool", "| batched"))]
    assert [row.split("|")[1:3] for row in rows] == [
        [" pool (1 workers) ", " 1 "], [" batched ", " 1 "], [" pool (1 workers) ", " 3 "], [" batched ", " 3 "]]
    assert "batched, 3 sessions: 0 of 3 seeded sequences differ" in out.stdout


# ---- CUDA: run wherever it exists ------------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@needs_cuda
def test_cuda_batch_is_the_solo_run(tok):
    model = tiny_model(tok).cuda()
    requests = {i: (p, settings(30 + i, temperature=0.0 if i % 2 else 0.9), ()) for i, p in enumerate(PROMPTS)}
    steps = run_batched(BatchedDecoder(model, tok), requests, join_at={2: 4})
    for key, (prompt, cfg, _) in requests.items():
        solo = solo_steps(model, tok, prompt, cfg)
        assert [s.token_id for s in steps[key]] == [s.token_id for s in solo]
        for b, s in zip(steps[key], solo):
            torch.testing.assert_close(b.attention, s.attention, rtol=0, atol=TOLERANCE)
            torch.testing.assert_close(b.lens.probs, s.lens.probs, rtol=0, atol=TOLERANCE)


@needs_cuda
def test_cuda_pool_decodes_on_a_thread_of_the_server(tok):
    model = tiny_model(tok).cuda()
    pool = BatchedPool(model, tok)  # a GPU model: no worker process
    try:
        assert not pool.process
        got = [step_data(s)["id"] for s in pool.stream("ROMEO:", settings(7))]
    finally:
        pool.close()
    assert got == [s.token_id for s in solo_steps(model, tok, "ROMEO:", settings(7))]
