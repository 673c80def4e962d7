"""The app through its public API: a gradio_client against the launched server.

Most tests run a tiny character model (fast, and a character tokenizer can refuse characters); one runs the
shipped model. The app is launched once per module on a free port.
"""

from __future__ import annotations

import json
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from gradio_client import Client  # always with ssl_verify=False: the test servers are plain http, and verifying
# makes each request build two certificate stores (~70 ms of CPU), which slowed the load test by a third
from gradio_client.exceptions import AppError

from workbench import GPT, GPTConfig, LogitLens, SamplingConfig, generate, load_model, save_checkpoint
from workbench import viz
from workbench.__main__ import main
from workbench.app import build_app, cpu_threads, parse_heads, serve, strings, ui
from workbench.app.session import (LENS_TOP, VIEW, InputError, Run, find_run, read_prompt, read_settings,
                                   step_data)
import workbench.serve as serve_module
from workbench.generate import stream
from workbench.serve import step_batches
from workbench.tokenizers import CharTokenizer

ROOT = Path(__file__).resolve().parent.parent
TEXT = "ROMEO: But soft, what light through yonder window breaks?\nFirst Citizen: To be, or not to be.\n"
CAP = 4096
SETTINGS = dict(temperature=0.9, top_k=20, top_p=0.95)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny():
    tok = CharTokenizer.from_text(TEXT)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=16)).eval()
    return model, tok


def launch(model, tok, *, concurrency: int = 4, name: str = "tiny", workers: bool | None = None):
    demo = build_app(model, tok, model_name=name, max_new_tokens_cap=CAP, concurrency=concurrency, workers=workers)
    _, url, _ = serve(demo, port=free_port(), prevent_thread_lock=True, quiet=True)
    return demo, url


FAILSAFE = 60  # seconds a test waits for an event before failing; never reached when the code under test works


class Released:
    """Stands in for a model whose steps the test releases: step i (the number i) is made only once the test has
    released i + 1 steps. ``queued[i]`` is set once step_batches has queued step i (its thread asks for the next
    step only after queuing the last one); ``ended`` once the generator is finished or closed."""

    def __init__(self, n: int, fail_at: int | None = None):
        self.n, self.fail_at = n, fail_at
        self.permits = threading.Semaphore(0)
        self.made: list[int] = []
        self.queued = [threading.Event() for _ in range(n)]
        self.ended = threading.Event()
        self.steps = self._steps()

    def _steps(self):
        try:
            for i in range(self.n):
                assert self.permits.acquire(timeout=FAILSAFE), f"step {i} was never released"
                if i == self.fail_at:
                    raise ValueError(f"failed at {i}")
                self.made.append(i)
                yield i
                self.queued[i].set()
        finally:
            self.ended.set()

    def release(self, k: int = 1, *, wait: bool = True) -> None:
        """Let the next ``k`` steps be made; with ``wait``, return once step_batches has queued them (its thread
        starts at the first ``next()``: release the first step without waiting)."""
        first = len(self.made)
        self.permits.release(k)
        if wait:
            for i in range(first, min(first + k, self.n)):
                assert self.queued[i].wait(FAILSAFE), f"step {i} was not queued"


def in_thread(batches) -> tuple[threading.Thread, list]:
    """Consume ``batches`` on a thread of its own (a consumer that hangs then fails the test instead of hanging it)."""
    got: list = []
    thread = threading.Thread(target=lambda: got.extend(batches), daemon=True)
    thread.start()
    return thread, got


def test_step_batches_keep_order_and_group_what_was_made_meanwhile():
    steps = Released(7)
    batches = step_batches(steps.steps, lambda: False, frame_seconds=0.0)  # every frame is due at once
    steps.release(wait=False)
    assert next(batches) == [0]
    steps.release(3)  # made while the server sends the last frame
    assert next(batches) == [1, 2, 3]
    steps.release(2)
    assert next(batches) == [4, 5]
    steps.release()
    assert list(batches) == [[6]]


class InlineThread:
    """A thread that runs its target to the end when started: every step exists before the first frame."""

    def __init__(self, target, name=None, daemon=None):
        self.target = target

    def start(self) -> None:
        self.target()


def test_step_batches_send_the_first_step_alone_even_when_more_are_waiting(monkeypatch):
    # A model faster than anything: all five steps and the end are queued before the first frame is taken.
    monkeypatch.setattr(serve_module, "threading", SimpleNamespace(Thread=InlineThread, Event=threading.Event))
    thread, batches = in_thread(step_batches(iter(range(5)), lambda: False, frame_seconds=3600.0))
    thread.join(FAILSAFE)
    # The first goes at once on its own; the rest are all waiting, and go together, at the end (not an hour later).
    assert not thread.is_alive() and batches == [[0], [1, 2, 3, 4]]


def test_step_batches_send_the_last_steps_without_waiting_for_the_frame():
    steps = Released(3)
    batches = step_batches(steps.steps, lambda: False, frame_seconds=3600.0)  # the next frame is due in an hour
    steps.release(wait=False)
    assert next(batches) == [0]
    thread, rest = in_thread(batches)
    steps.release()  # made while the frame is not due: held for it
    steps.release()  # the last: the generation ends, and what is held goes out now
    thread.join(FAILSAFE)
    assert not thread.is_alive(), "the last steps waited for the frame"
    assert rest == [[1, 2]]


def test_step_batches_stop_when_asked_or_closed_and_raise_the_threads_error():
    steps = Released(100)
    steps.release(100, wait=False)
    got = [i for b in step_batches(steps.steps, lambda: len(steps.made) >= 5, frame_seconds=0.0) for i in b]
    assert got == [0, 1, 2, 3, 4] and steps.made == [0, 1, 2, 3, 4]  # asked after every step; none made after

    steps = Released(100)
    batches = step_batches(steps.steps, lambda: False, frame_seconds=0.0)
    steps.release(wait=False)
    assert next(batches) == [0]
    steps.release(2)  # steps 1 and 2 queued; the thread waits to make step 3
    batches.close()  # what gradio does when the client cancels or goes away
    steps.release(97, wait=False)  # the model could go on to the end
    assert steps.ended.wait(FAILSAFE), "the generator was not closed"
    assert steps.made == [0, 1, 2, 3]  # the thread stopped after its current step

    steps = Released(10, fail_at=3)
    steps.release(10, wait=False)
    with pytest.raises(ValueError, match="failed at 3"):
        list(step_batches(steps.steps, lambda: False, frame_seconds=0.0))


def test_step_batches_close_the_generator_they_stop():
    """A worker process stops when its stream is closed (tests/test_workers.py): Stop must close it, not drop it."""
    cleaned: list[bool] = []

    def numbers():
        try:
            yield from range(100)
        finally:
            cleaned.append(True)

    steps = numbers()
    batches = list(step_batches(steps, lambda: True, frame_seconds=0.0))
    assert sum(map(len, batches)) == 1 and cleaned == [True]
    del steps  # the caller still held it: the cleanup above did not wait for garbage collection


class Lockstep:
    """Makes the app's generation (in the server's process: workers=False) hand each step to the server before it
    makes the next, by standing in for ``ui.stream`` and wrapping ``ui.step_batches``. Each step then goes out in a
    frame of its own however fast or slow the machine is, and a run the server closes can make one step more at
    most. ``runs`` holds each generation's record: the steps made, how many were handed over, whether it was closed
    (``closed``, an Event) and how many steps were made after that."""

    def __init__(self, monkeypatch):
        self.runs: list[SimpleNamespace] = []
        monkeypatch.setattr(ui, "stream", self.stream)
        monkeypatch.setattr(ui, "step_batches", self.step_batches)

    def stream(self, *args, **kwargs):
        run = SimpleNamespace(made=[], handed=0, is_closed=False, after_close=0, lock=threading.Condition(),
                              closed=threading.Event())
        self.runs.append(run)
        return self._steps(run, stream(*args, **kwargs))

    @staticmethod
    def _steps(run, steps):
        for step in steps:
            with run.lock:
                run.after_close += run.is_closed
            run.made.append(step.index)
            yield step
            with run.lock:  # the next step only once this one is handed over, or the run closed
                handed = run.lock.wait_for(lambda: run.is_closed or run.handed >= len(run.made), timeout=FAILSAFE)
            assert handed, f"step {len(run.made) - 1} was never handed over"

    def step_batches(self, steps, should_stop, frame_seconds):
        run = self.runs[-1]  # the app makes its stream just before its step_batches
        batches = step_batches(steps, should_stop, frame_seconds)
        try:
            for batch in batches:
                yield batch
                with run.lock:  # the server took the batch and asks for the next
                    run.handed += len(batch)
                    run.lock.notify_all()
        finally:
            batches.close()
            with run.lock:
                run.is_closed = True
                run.lock.notify_all()
            run.closed.set()


def test_cpu_threads_one_for_a_small_model_unless_asked(tiny, monkeypatch):
    model, _ = tiny
    assert cpu_threads(model) == 1
    assert cpu_threads(model, 3) == 3
    monkeypatch.setattr(ui, "SMALL_MODEL_PARAMS", model.num_params())  # now it counts as large
    assert cpu_threads(model) == torch.get_num_threads()


@pytest.fixture(scope="module")
def server(tiny):
    demo, url = launch(*tiny)
    yield url
    demo.close()


def reference(model, tok, prompt: str, n: int, seed: int) -> str:
    return generate(model, tok, prompt, SamplingConfig(max_new_tokens=n, seed=seed, **SETTINGS), capture=False).text


def call(client: Client, prompt: str, n: int, seed: int | None) -> str:
    args = (prompt, n, SETTINGS["temperature"], SETTINGS["top_k"], SETTINGS["top_p"], seed)
    return client.predict(*args, api_name="/generate")[0]


def test_generate_streams_and_matches_workbench_generate(tiny, monkeypatch):
    model, tok = tiny
    Lockstep(monkeypatch)  # a tiny model is too fast to stream: one step per frame, whatever the machine's speed
    demo, url = launch(*tiny, workers=False)  # generating in the server's process, where the stand-in runs
    n = 16
    try:
        job = Client(url, verbose=False, ssl_verify=False).submit("ROMEO:", n, SETTINGS["temperature"],
                                                                  SETTINGS["top_k"], SETTINGS["top_p"], 7,
                                                                  api_name="/generate")
        texts = [out[0] for out in job]
        final = job.outputs()[-1][0]
    finally:
        demo.close()
    assert final == reference(model, tok, "ROMEO:", n, seed=7)
    assert texts[0] == reference(model, tok, "ROMEO:", 1, seed=7)  # the first token is sent on its own, at once
    partial = [t for t in texts if t != final]
    # It streams: every token reached the client in an update of its own, in order (one character per token here).
    assert partial == [final[:k] for k in range(1, n)]


def test_generate_api_is_documented_with_its_inputs_in_order(server):
    info = Client(server, verbose=False, ssl_verify=False).view_api(print_info=False, return_format="dict")
    params = [p["parameter_name"] for p in info["named_endpoints"]["/generate"]["parameters"]]
    assert params == ["prompt", "max_new_tokens", "temperature", "top_k", "top_p", "seed"]


@pytest.mark.parametrize("args,message", [
    (("ROMEO: 我", 5, 0.8, 10, 0.9, 0), "The prompt has characters this model's tokenizer cannot encode: '我'"),
    (("ROMEO:", 0, 0.8, 10, 0.9, 0), "max_new_tokens must be an integer in [1, 4096], got 0"),
    (("ROMEO:", 5000, 0.8, 10, 0.9, 0), "max_new_tokens must be an integer in [1, 4096], got 5000"),
    (("ROMEO:", 2.5, 0.8, 10, 0.9, 0), "max_new_tokens must be an integer"),
    (("ROMEO:", 5, -1, 10, 0.9, 0), "temperature must be a finite number >= 0"),
    (("ROMEO:", 5, "hot", 10, 0.9, 0), "temperature must be a finite number >= 0 (0 means greedy), got 'hot'"),
    (("ROMEO:", 5, 0.8, -3, 0.9, 0), "top_k must be an integer >= 0"),
    (("ROMEO:", 5, 0.8, 10, 0.0, 0), "top_p must be a number in (0, 1]"),
    (("ROMEO:", 5, 0.8, 10, 1.5, 0), "top_p must be a number in (0, 1]"),
    (("ROMEO:", 5, 0.8, 10, 0.9, -1), "seed must be empty (random) or an integer in [0, 2**63), got -1"),
    (("ROMEO:", 5, 0.8, 10, 0.9, "abc"), "seed must be empty (random) or an integer in [0, 2**63), got 'abc'"),
    (("ROMEO:", 5, 0.8, 10, 0.9, "9" * 5000), "seed must be empty (random) or an integer in [0, 2**63), got '999"),
    (("ROMEO:", 5, 0.8, 10, 0.9, 2**63), "seed must be empty (random) or an integer in [0, 2**63)"),
], ids=["unknown-char", "zero-tokens", "over-cap", "fractional-tokens", "negative-temperature", "text-temperature",
        "negative-top-k", "zero-top-p", "top-p-above-1", "negative-seed", "text-seed", "5000-digit-seed",
        "seed-too-large"])
def test_bad_input_gets_its_message_and_the_server_keeps_serving(server, tiny, args, message, capfd, caplog):
    client = Client(server, verbose=False, ssl_verify=False)
    with pytest.raises(AppError) as err:
        client.predict(*args, api_name="/generate")
    assert message in str(err.value)
    assert len(str(err.value)) < 300  # a 5,000-digit value is shortened in the message
    assert call(client, "ROMEO:", 8, seed=1) == reference(*tiny, "ROMEO:", 8, seed=1)
    assert "Traceback" not in capfd.readouterr().err  # bad input is one log line, not a traceback
    lines = [r for r in caplog.records if r.name == "workbench.app"]
    assert len(lines) == 1 and "bad input:" in lines[0].getMessage() and lines[0].exc_info is None


def test_bad_input_message_follows_the_page_language(server):
    client = Client(server, verbose=False, ssl_verify=False, headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    with pytest.raises(AppError) as err:
        client.predict("ROMEO:", 5, 0.8, 10, 1.5, 0, api_name="/generate")
    assert "top_p 必须是 (0, 1] 之间的数" in str(err.value)


@pytest.mark.parametrize("temperature", [1e-300, 1e-38, 1e-31])
def test_extreme_temperature_is_greedy_its_limit(server, tiny, temperature):
    model, tok = tiny
    client = Client(server, verbose=False, ssl_verify=False)
    text = client.predict("ROMEO:", 20, temperature, 0, 1.0, 0, api_name="/generate")[0]
    greedy = generate(model, tok, "ROMEO:", SamplingConfig(max_new_tokens=20, temperature=0), capture=False).text
    assert text == greedy


def raw_call(server: str, body: str) -> str:
    """POST a JSON body, written by hand, to /generate the way any HTTP client can, and return the event stream."""
    import httpx

    base = server.rstrip("/")
    reply = httpx.post(f"{base}/gradio_api/call/generate", content=body.encode("ascii"),
                       headers={"Content-Type": "application/json"}, timeout=30)
    assert reply.status_code == 200, reply.text
    return httpx.get(f"{base}/gradio_api/call/generate/{reply.json()['event_id']}", timeout=60).text


@pytest.mark.parametrize("body,message", [
    ('{"data": ["abc\\ud800def", 5, 0.8, 10, 0.9, 0]}', "unpaired surrogate (U+D800 at position 3)"),
    ('{"data": ["ROMEO:", 5, 0.8, 10, 0.9, NaN]}', "seed must be empty (random) or an integer in [0, 2**63), got nan"),
    ('{"data": ["ROMEO:", 5, 0.8, 10, 0.9, Infinity]}', "seed must be empty (random) or an integer in [0, 2**63), got inf"),
    ('{"data": ["ROMEO:", 5, NaN, 10, 0.9, 0]}', "temperature must be a finite number >= 0 (0 means greedy), got nan"),
    ('{"data": ["ROMEO:", 5]}', "/generate takes 6 inputs (prompt, max_new_tokens, temperature, top_k, top_p, seed), got 2"),
], ids=["lone-surrogate", "nan-seed", "infinite-seed", "nan-temperature", "two-inputs"])
def test_raw_json_calls_get_a_message_naming_the_problem(server, body, message):
    events = raw_call(server, body)
    assert "event: error" in events and message in events, events[-500:]
    assert "complete" in raw_call(server, '{"data": ["ROMEO:", 3, 0.8, 10, 0.9, 0]}')  # still serving


def test_settings_are_read_from_what_json_clients_send():
    cfg = read_settings(40.0, 0, "7", 1, "  ", cap=64)
    assert (cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p, cfg.seed) == (40, 0.0, 7, 1.0, None)
    assert read_settings(5, 0.5, 0, 0.9, "123", cap=64).seed == 123
    with pytest.raises(InputError) as err:
        read_settings(True, 0.5, 0, 0.9, 0, cap=64)
    assert err.value.params["field"] == "max_new_tokens"


def test_request_language_cookie_then_header_then_english():
    assert strings.language({"wb_lang": "zh-CN"}, "en-US,en") == "zh-CN"
    assert strings.language({}, "zh-TW,zh;q=0.8") == "zh-CN"
    assert strings.language(None, None) == "en"
    assert strings.say("err_no_heads", "zh-CN") == "请至少选择一个要关闭的头。"


@pytest.mark.parametrize("prompt,note", [
    ("", {"key": "note_empty_prompt", "token": "'\\n'"}),
    ("To be, or not to be. " * 4, {"key": "note_long_prompt", "n": 84, "block": 32}),  # and the window slides
])
def test_empty_or_too_long_prompt_is_noted_and_still_generates(server, tiny, prompt, note):
    model, tok = tiny
    _, notes = read_prompt(model, tok, prompt)
    assert notes == [note]
    client = Client(server, verbose=False, ssl_verify=False)
    text, frame = client.predict(prompt, 12, SETTINGS["temperature"], SETTINGS["top_k"], SETTINGS["top_p"], 3,
                                 api_name="/generate")
    assert text == reference(model, tok, prompt, 12, seed=3)
    frame = json.loads(frame)
    assert frame["notes"][0] == note and frame["state"] == "done"


def test_stop_cancels_the_generation_on_the_server(tiny, monkeypatch):
    lockstep = Lockstep(monkeypatch)  # one step per frame: the run cannot race to its end before the cancel lands
    # One generation at a time: the next request runs only once the first has stopped. In the server's process,
    # where the stand-in runs; tests/test_workers.py stops a worker process the same way (closing the iterator,
    # which step_batches does when Stop is pressed).
    demo, url = launch(*tiny, concurrency=1, workers=False)
    try:
        client = Client(url, verbose=False, ssl_verify=False)
        job = client.submit("ROMEO:", CAP, 0.8, 10, 0.9, 0, api_name="/generate")
        for _ in range(3):
            next(job)  # three updates arrived: it is generating
        job.cancel()
        cancelled = lockstep.runs[0]
        assert cancelled.closed.wait(FAILSAFE), "the server did not close the cancelled generation"
        after = call(Client(url, verbose=False, ssl_verify=False), "ROMEO:", 5, seed=0)
    finally:
        demo.close()
    assert after == reference(*tiny, "ROMEO:", 5, seed=0)
    assert len(lockstep.runs) == 2 and len(lockstep.runs[1].made) == 5
    assert len(cancelled.made) < CAP // 2, f"the cancelled generation went on for {len(cancelled.made)} tokens"
    assert cancelled.after_close <= 1, f"{cancelled.after_close} steps were made after the server closed the run"


def test_ablation_endpoint_regenerates_with_heads_off(server, tiny):
    model, tok = tiny
    client = Client(server, verbose=False, ssl_verify=False)
    base = call(client, "ROMEO:", 20, seed=5)  # the session's state now holds this generation
    base_text, ablated_text, chart = client.predict(["L0H1", "L1H0"], api_name="/ablate")
    cfg = SamplingConfig(max_new_tokens=20, seed=5, **SETTINGS)
    assert base_text == base
    assert ablated_text == generate(model, tok, "ROMEO:", cfg, capture=False, ablate=[(0, 1), (1, 0)]).text
    chart = json.loads(chart)
    assert chart["ablation"]["heads"] == ["L0H1", "L1H0"] and len(chart["ablation"]["off"]) == 20


def test_ablation_without_a_generation_is_an_error(server):
    with pytest.raises(AppError, match="Generate some text first"):
        Client(server, verbose=False, ssl_verify=False).predict(["L0H0"], api_name="/ablate")


def decode_rows(data: dict, shape: tuple[int, int]) -> np.ndarray:
    """An attention row of the page's data as (L, H, n) floats."""
    import base64

    raw = np.frombuffer(base64.b64decode(data["a"]), dtype="<u2").astype(np.float32) / 65535
    return raw.reshape(*shape, data["n"])


def test_page_data_holds_the_attention_rows_lens_and_candidates_of_each_step(tiny):
    model, tok = tiny
    cfg = SamplingConfig(max_new_tokens=40, seed=0)  # 40 new tokens slide the 32-token window
    ids, notes = read_prompt(model, tok, "ROMEO: But")
    run = Run(cfg, ids, tok.token_strs(ids), (2, 2), 32, notes)
    steps = list(stream(model, tok, ids, cfg))
    for step in steps:
        run.add(step_data(step))
    full = generate(model, tok, ids, SamplingConfig(max_new_tokens=12, seed=0), attention=True).attention
    P = len(ids)
    def keys(q: int, data: dict) -> np.ndarray:  # the last n keys of position q's row, which end at q
        return full[:, :, q, q + 1 - data["n"] : q + 1]

    for q in range(P - 1):  # prompt rows
        np.testing.assert_allclose(decode_rows(run.prompt_rows[q], (2, 2)), keys(q, run.prompt_rows[q]), atol=2e-5)
    for i in (0, 5, 11):  # the row of the position that produced step i, cut to the keys the views show
        q = P - 1 + i
        assert run.steps[i]["n"] == min(q + 1, VIEW)
        np.testing.assert_allclose(decode_rows(run.steps[i], (2, 2)), keys(q, run.steps[i]), atol=2e-5)
    s = run.steps[3]
    assert s["t"] == steps[3].token_str and s["top"][0][2] == steps[3].top[0].token_id
    assert [st[0] for st in s["stages"]] == ["raw", "temperature", "top-k", "top-p"]
    lens = steps[3].lens.candidates()  # [read][rank]: L0 attn, L0 mlp, L1 attn, L1 mlp
    assert s["lens"] == [[[c.token_str, round(c.prob, 4)] for c in row[:LENS_TOP]] for row in lens]
    assert [n["key"] for n in run.notes] == ["note_slid"]  # the window slid once, noted once

    frame = run.frame(0, 0)
    assert frame["head"]["prompt"] == tok.token_strs(ids) and len(frame["steps"]) == 40
    assert find_run(run.id) is run
    run.text = "abc"
    later = run.frame(40, 1)
    assert later["steps"] == [] and later["tx"] == [0, "abc"]  # the page had no text yet: all of it
    run.text = "abd"
    assert run.frame(40, 2)["tx"] == [2, "d"]  # only the tail from where the texts part
    assert run.frame(40, -1)["tx"] == [0, "abd"]  # a resend of missed steps: the page's text may lag, all of it


def test_viz_figures_hold_what_they_show(tiny):
    model, tok = tiny
    cfg = SamplingConfig(max_new_tokens=6, temperature=0.9, top_k=5, top_p=0.8, seed=0)
    steps = generate(model, tok, "ROMEO:", cfg).steps
    pattern = np.tril(np.ones((4, 5, 5), dtype=np.float32)) / np.arange(1, 6)[:, None]  # (H, T, T) rows sum to 1

    heatmap = viz.attention_heatmap(pattern[0], list("abcab"), start=3)
    assert list(heatmap.data[0].y) == ["3:a", "4:b", "5:c", "6:a", "7:b"]  # repeated tokens stay distinct
    grid = viz.head_grid(pattern, layer=2, cols=2)
    assert len(grid.data) == 1 and [a.text for a in grid.layout.annotations] == ["L2H0", "L2H1", "L2H2", "L2H3"]

    joined = LogitLens.concat([s.lens for s in steps])
    inputs = tok.token_strs(tok.encode("ROMEO:")[-1:] + [s.token_id for s in steps[:-1]])  # each step's input token
    lens = viz.logit_lens(joined, inputs)
    assert list(lens.data[0].y) == ["L0 attn", "L0 mlp", "L1 attn", "L1 mlp"]
    assert np.asarray(lens.data[0].z).shape == (4, 6)
    assert list(lens.data[0].x)[0] == f"{joined.positions[0]}:{viz.show_token(inputs[0])}"
    assert lens.data[0].text[-1][2] == viz.show_token(steps[2].top[0].token_str)  # the last read: the model's guess
    with pytest.raises(ValueError, match="one per position"):
        viz.logit_lens(joined, inputs[:-1])

    s = steps[-1]
    pipeline = viz.sampling_pipeline(s.stages, s.token_id)
    assert [a.text.split("<br>")[0] for a in pipeline.layout.annotations] == ["raw", "temperature", "top-k", "top-p"]
    assert all(viz.PICKED in bars.marker.color for bars in pipeline.data)  # the picked token is in every stage
    assert viz.topk_bars(s.top, s.token_id).data[0].x[0] == s.top[0].prob
    ablation = viz.ablation_comparison(["a", "b"], [0.5, 0.4], [0.2, 0.1])
    assert [t.name for t in ablation.data] == ["baseline", "heads off"]


def test_parse_heads():
    assert parse_heads(["L0H3", "L12H11"]) == [(0, 3), (12, 11)]
    assert parse_heads(None) == []


def test_load_sixteen_sessions_five_generations_each(server, tiny, capsys):
    sessions, per_session, n = 16, 5, 24
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def session(s: int) -> None:
        client = Client(server, verbose=False, ssl_verify=False)
        for g in range(per_session):
            seed = 1000 + s * per_session + g
            started = time.perf_counter()
            try:
                text = call(client, "ROMEO:", n, seed)
            except Exception as err:  # every failure is collected and reported below
                with lock:
                    failures.append(f"session {s} seed {seed}: {err!r}")
                continue
            with lock:
                latencies.append(time.perf_counter() - started)
                if text != reference(*tiny, "ROMEO:", n, seed):
                    failures.append(f"session {s} seed {seed}: output differs from its seeded reference")

    threads = [threading.Thread(target=session, args=(s,)) for s in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert len(latencies) == sessions * per_session
    p50, p95 = np.percentile(latencies, 50), np.percentile(latencies, 95)
    with capsys.disabled():
        print(f"\nload: {sessions} sessions x {per_session} generations of {n} tokens: "
              f"p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, mean {statistics.mean(latencies) * 1000:.0f} ms")


def test_shipped_model_serves_and_matches_generate():
    model, tok = load_model("shakespeare", device="cpu")  # fails, not skips, when the shipped model is missing
    demo, url = launch(model, tok, name="shakespeare")
    try:
        client = Client(url, verbose=False, ssl_verify=False)
        for prompt in ("ROMEO:", "我 爱 吃 饭"):
            assert call(client, prompt, 16, seed=0) == reference(model, tok, prompt, 16, seed=0)
    finally:
        demo.close()


def test_serve_honours_gradio_server_port(tiny, monkeypatch):
    port = free_port()
    monkeypatch.setenv("GRADIO_SERVER_PORT", str(port))
    demo = build_app(*tiny, model_name="tiny", workers=False)
    serve(demo, prevent_thread_lock=True, quiet=True)
    try:
        assert demo.server_port == port
    finally:
        demo.close()


@pytest.mark.parametrize("argv,message", [
    (["--model", "/nonexistent/dir"], "error: no model directory at '/nonexistent/dir'"),
    (["--concurrency", "0"], "error: --concurrency must be >= 1"),
    (["--max-new-tokens-cap", "0"], "error: --max-new-tokens-cap must be in"),
    (["--threads", "0"], "error: --threads must be >= 1"),
])
def test_cli_app_fails_cleanly(argv, message, capsys):
    status = main(["app", *argv])
    err = capsys.readouterr().err
    assert status == 2 and message in err and "Traceback" not in err


def test_app_benchmark_runs_on_a_tiny_model(tiny, tmp_path):
    save_checkpoint(*tiny, tmp_path)
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "app.py"), "--model", str(tmp_path), "--runs", "1",
         "--new-tokens", "5", "--compare-threads", "1", "--profile-page", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| bare `workbench.stream`" in out.stdout and "| app via `gradio_client`" in out.stdout
    assert "| app in Chromium" in out.stdout and "| bare `workbench.stream` (full capture), 1 thread(s) |" in out.stdout
    assert "| the app's decoding pool alone, the page's data of every step |" in out.stdout
    assert re.search(r"Against the bare loop on 1 thread\(s\).*: client \d+\.\d\dx .* browser \d+\.\d\dx", out.stdout)
    # Where the time goes: each process group found and charged (a tiny run may take under one clock tick).
    for group in ("server", "decoding workers", "Chromium renderer", "Chromium, other processes"):
        assert re.search(rf"^\| {group} \| \d+\.\d\d \| \d+\.\d\d \| \d+\.\d\d \|$", out.stdout, re.M), (
            group, out.stdout)
    assert re.search(r"worker's CPU ms per token .*: pool alone \d+\.\d\d, app via the client \d+\.\d\d, "
                     r"app in Chromium \d+\.\d\d$", out.stdout, re.M), out.stdout
    # The page's script time by function, after the timed rounds: a table with at least one function.
    table = out.stdout.split("the functions that took most:", 1)[1]
    assert re.search(r"^\| \S.* \| \d+\.\d \|$", table, re.M), out.stdout


@pytest.mark.parametrize("stop_signal", ["SIGINT", "SIGTERM"])
def test_served_app_logs_bad_input_as_one_line_and_stops_cleanly(tiny, tmp_path, stop_signal):
    """As `make app` runs it: its own process with worker processes, stopped mid-generation by Ctrl+C in its
    terminal (SIGINT to the whole process group) or by `kill` (SIGTERM)."""
    import os
    import signal

    save_checkpoint(*tiny, tmp_path)
    port = free_port()
    # The server starts with Ctrl+C live, as from a terminal, even when these tests run as a background job: a shell
    # starts those with SIGINT ignored, a child inherits an ignored signal across exec, and Python then never turns
    # SIGINT into KeyboardInterrupt. A handler (not an ignore) is reset to the default by exec.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        server = subprocess.Popen([sys.executable, "-m", "workbench", "app", "--model", str(tmp_path), "--port",
                                   str(port), "--concurrency", "4", "--max-new-tokens-cap", str(CAP)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, start_new_session=True)
    finally:
        signal.signal(signal.SIGINT, inherited)
    try:
        deadline = time.time() + 120
        while True:
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False, ssl_verify=False)
                break
            except Exception:  # not listening yet
                assert time.time() < deadline and server.poll() is None, "the app did not start"
                time.sleep(0.5)
        assert call(client, "ROMEO:", 8, seed=1) == reference(*tiny, "ROMEO:", 8, seed=1)
        for top_p, seed in [(1.5, 0), (0.9, "abc"), (0.9, -1)]:
            with pytest.raises(AppError):
                client.predict("ROMEO:", 5, 0.8, 10, top_p, seed, api_name="/generate")
        client.submit("ROMEO:", CAP, 0.8, 10, 0.9, 0, api_name="/generate")  # still generating when stopped
        time.sleep(1)
        os.killpg(server.pid, getattr(signal, stop_signal))
        log, _ = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    assert log.count("bad input:") == 3 and "Traceback" not in log, log
    # An Event per worker held semaphores, which the resource tracker reported as leaked on SIGTERM.
    assert "leaked" not in log, log
    if stop_signal == "SIGINT":
        assert server.returncode == 0, log
