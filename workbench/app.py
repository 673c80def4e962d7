"""The live app: generation streamed token by token, with every token open to inspection.

``python -m workbench app`` (or ``make app``) serves it; in a notebook, ``from workbench.app import launch;
launch()`` shows it inline. The model is loaded once and shared by every session (on the CPU, generation runs in
worker processes that share its weights, see :mod:`workbench.workers`); a session keeps only its last generation
(:class:`Run`): the steps' small records and each position's attention row cut to the last ``VIEW`` keys, which
is all the views draw.

The Generate event is a public API (``api_name="generate"``): inputs ``(prompt, max_new_tokens, temperature,
top_k, top_p, seed)``, first output the text generated so far, streamed. Values sent straight to the API are
checked by :class:`~workbench.generate.SamplingConfig`, whose message names the field and its range.

Bad input: an empty prompt starts from the tokenizer's start token (a warning says so); a prompt longer than the
context keeps its end (a warning says how much); characters the tokenizer cannot encode and out-of-range settings
raise ``gr.Error`` with the reason. An error ends only that request.

This is the only module that imports gradio.
"""

from __future__ import annotations

import dataclasses
import math
import os
import queue
import secrets
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # must be set before gradio is imported: the page stays offline

import gradio as gr  # noqa: E402

from workbench import viz  # noqa: E402
from workbench.generate import SamplingConfig, Step, generate, prompt_ids, stream  # noqa: E402
from workbench.model import GPT  # noqa: E402
from workbench.tokenizers import Tokenizer  # noqa: E402
from workbench.workers import GenerationPool  # noqa: E402

DEFAULT_MAX_NEW_TOKENS_CAP = 512
DEFAULT_CONCURRENCY = 4
QUEUE_PER_WORKER = 16  # queue max size = this x concurrency: a full queue refuses at once instead of waiting long
VIEW = 64  # positions shown in the attention views; also how many keys of each row a session keeps
LENS_COLUMNS = 16  # positions shown in the logit lens
FRAME_SECONDS = 0.05  # while streaming, at most 20 frames a second: faster tokens share a frame
REDRAW_SECONDS = 0.5  # and the figures are redrawn at most this often,
DRAW_SHARE = 0.1  # and only while drawing has taken under this share of the generation's time so far

EXAMPLES = ["ROMEO:", "To be, or not to be", "First Citizen:", "我 爱 吃 饭"]

# System fonts only: the default theme would fetch Google Fonts, and the page must not leave the server.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
# Token boundaries stay visible even between two tokens of the same colour.
CSS = "#tokens .token { margin-right: 1px; border-right: 1px solid rgba(128,128,128,.5); border-radius: 0; }"

EN = {
    "title": "## GPT Workbench: live generation you can look inside",
    "intro": "Type a prompt and press Generate. Click any generated token (or move the step slider) to see what "
    "every layer and head attended to, what the model considered next, and what each layer predicted.",
    "prompt": "Prompt",
    "examples": "Example prompts",
    "max_new_tokens": "Max new tokens",
    "temperature": "Temperature (0 = greedy)",
    "top_k": "Top-k (0 = off)",
    "top_p": "Top-p (1 = off)",
    "seed": "Seed (empty = random)",
    "generate": "Generate",
    "stop": "Stop",
    "text": "Generated text",
    "tokens": "Tokens: the darker, the more likely the model found it (click one)",
    "step": "Step",
    "layer": "Layer",
    "head": "Head",
    "attention": "Attention",
    "logits": "Next-token candidates",
    "lens": "Logit lens",
    "pipeline": "Sampling pipeline",
    "ablation": "Head ablation",
    "ablate_heads": "Heads to switch off",
    "ablate_run": "Regenerate with these heads off (same seed)",
    "baseline_text": "Baseline",
    "ablated_text": "Heads off",
    "model": "Model",
    "status": "Status",
}
ZH = {
    "title": "## GPT Workbench:可以看到内部的实时生成",
    "intro": "输入提示词并点击“生成”。点击任意生成的词元(或拖动步骤滑块),查看每一层每个注意力头关注了什么、模型考虑了哪些候选词、"
    "以及每一层预测的下一个词元。",
    "prompt": "提示词",
    "examples": "示例提示词",
    "max_new_tokens": "最多生成词元数",
    "temperature": "温度(0 = 贪心)",
    "top_k": "Top-k(0 = 关闭)",
    "top_p": "Top-p(1 = 关闭)",
    "seed": "随机种子(留空 = 随机)",
    "generate": "生成",
    "stop": "停止",
    "text": "生成的文本",
    "tokens": "词元:颜色越深,模型认为它越可能出现(可点击)",
    "step": "步骤",
    "layer": "层",
    "head": "注意力头",
    "attention": "注意力",
    "logits": "下一个词元的候选",
    "lens": "Logit 透镜",
    "pipeline": "采样流程",
    "ablation": "注意力头消融",
    "ablate_heads": "要关闭的注意力头",
    "ablate_run": "关闭这些头后重新生成(相同种子)",
    "baseline_text": "基线",
    "ablated_text": "关闭后",
    "model": "模型",
    "status": "状态",
}
I18N = gr.I18n(en=EN, **{"zh-CN": ZH})


def api_slider(*args: Any, **kwargs: Any) -> gr.Slider:
    """A ``gr.Slider`` whose range limits only the page.

    Gradio's slider rejects out-of-range API values with a message that does not name the field; this one passes
    the value on, so :class:`SamplingConfig` reports it ("top_p must be a number in (0, 1], got 2.0"). The override
    is per instance: subclassing a component makes gradio write a ``.pyi`` stub beside this module.
    """
    slider = gr.Slider(*args, **kwargs)
    slider.preprocess = lambda payload: payload  # type: ignore[method-assign]
    return slider


@dataclass
class Run:
    """A session's last generation, kept small: what the views need and nothing else."""

    cfg: SamplingConfig
    prompt_ids: list[int]
    tokens: list[str]  # display strings of prompt + generated tokens
    probs: list[float | None]  # None for prompt tokens, else the model's probability of the token
    steps: list[Step] = field(default_factory=list)  # with attention=None: rows below hold it
    rows: list[np.ndarray] = field(default_factory=list)  # rows[q]: (L, H, n) float16, keys q-n+1 .. q

    @property
    def token_ids(self) -> list[int]:
        """The generated token ids."""
        return [s.token_id for s in self.steps]

    def add(self, step: Step) -> None:
        """Record a step: its attention row becomes the row of the position that produced the token."""
        if step.prompt_attention is not None:  # the first step: rows of every prompt position but the last
            pattern = step.prompt_attention
            self.rows = [_cut(pattern[:, :, q, : q + 1]) for q in range(pattern.shape[-1] - 1)]
        self.rows.append(_cut(step.attention))
        self.steps.append(dataclasses.replace(step, attention=None, prompt_attention=None))
        self.tokens.append(step.token_str)
        self.probs.append(step.prob)


_END = object()  # what the generating thread puts last


def step_batches(steps: Iterator[Step], should_stop: Callable[[], bool], frame_seconds: float) -> Iterator[list[Step]]:
    """Run ``steps`` on a thread of its own and yield the steps made so far, at most once per ``frame_seconds``.

    The model keeps generating while the server turns the last batch into a frame and sends it: the two overlap
    instead of taking turns. The first step comes out alone, as soon as it exists; the last ones as soon as the
    generation ends. ``should_stop`` is asked after every step; closing this generator (a cancelled or vanished
    client) also stops the thread after its current step.
    An exception in the thread is raised here.
    """
    made: queue.SimpleQueue = queue.SimpleQueue()
    closed = threading.Event()

    def produce() -> None:
        try:
            for s in steps:
                made.put(s)
                if closed.is_set() or should_stop():
                    break
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, which raises it
            made.put(err)
        finally:
            close = getattr(steps, "close", None)
            if close is not None:  # a generator left early: run its cleanup now (a worker stops and is freed)
                close()
            made.put(_END)

    threading.Thread(target=produce, name="workbench-generate", daemon=True).start()
    frame_at = -math.inf
    try:
        while True:
            batch = [made.get()]
            # Gather steps until the frame is due; the end (or an error) goes out at once, so the last tokens
            # do not wait out a frame interval. The first step always goes alone.
            while frame_at > -math.inf and batch[-1] is not _END and not isinstance(batch[-1], BaseException):
                wait = frame_at + frame_seconds - time.perf_counter()
                try:
                    batch.append(made.get(timeout=wait) if wait > 0 else made.get_nowait())
                except queue.Empty:
                    break
            frame_at = time.perf_counter()
            for item in batch:
                if isinstance(item, BaseException):
                    raise item
            steps_made = [item for item in batch if item is not _END]
            if steps_made:
                yield steps_made
            if batch[-1] is _END:
                return
    finally:
        closed.set()


def _cut(row: torch.Tensor) -> np.ndarray:
    """An attention row (L, H, T) cut to its last VIEW keys, as float16: all the views ever show of it."""
    return row[..., -VIEW:].to(torch.float16).cpu().numpy()


def _as_int(x: Any) -> Any:
    """Integral floats from JSON clients (``40.0``) become ints; anything else is left for validation to report."""
    return int(x) if isinstance(x, float) and x.is_integer() else x


def sampling_config(
    max_new_tokens: Any, temperature: Any, top_k: Any, top_p: Any, seed: Any, cap: int
) -> SamplingConfig:
    """Build the config from raw inputs; an out-of-range value raises ``gr.Error`` with the field and its range."""
    try:
        return SamplingConfig(
            max_new_tokens=_as_int(max_new_tokens),
            temperature=temperature,
            top_k=_as_int(top_k),
            top_p=top_p,
            seed=_as_int(seed),
            max_new_tokens_cap=cap,
        )
    except ValueError as err:
        raise gr.Error(str(err)) from None


def start_run(model: GPT, tok: Tokenizer, prompt: str | None, cfg: SamplingConfig) -> Run:
    """Encode the prompt, with a warning for the empty and too-long cases; a gr.Error names unknown characters."""
    try:
        ids, notes = prompt_ids(model, tok, prompt or "")
    except ValueError as err:  # characters the tokenizer cannot encode: the message names them
        raise gr.Error(str(err)) from None
    for note in notes:
        gr.Warning(note)
    return Run(cfg=cfg, prompt_ids=ids, tokens=tok.token_strs(ids), probs=[None] * len(ids))


def attention_window(run: Run, step: int) -> tuple[np.ndarray, int]:
    """The (L, H, n, n) pattern over the last ``n <= VIEW`` positions up to the query that produced ``step``.

    Rows are placed by their absolute key positions; keys a row did not see (before its window) stay zero.
    Returns the pattern and the absolute position of its first row.
    """
    q_last = len(run.prompt_ids) - 1 + step
    start = max(0, q_last + 1 - VIEW)
    n = q_last + 1 - start
    L, H = run.rows[0].shape[:2]
    out = np.zeros((L, H, n, n), dtype=np.float32)
    for q in range(start, q_last + 1):
        row = run.rows[q]
        first_key = q + 1 - row.shape[-1]
        lo = max(first_key, start)
        out[:, :, q - start, lo - start : q - start + 1] = row[..., lo - first_key :]
    return out, start


def render_views(run: Run | None, step: Any, view: dict) -> tuple[Any, Any, Any, Any, Any]:
    """The five figures for one step: attention heatmap, head grid, logit lens, top-k bars, sampling pipeline."""
    if run is None or not run.steps:
        return (None,) * 5
    i = min(max(int(step or 0), 0), len(run.steps) - 1)
    s = run.steps[i]
    pattern, start = attention_window(run, i)
    q_last = start + pattern.shape[-1] - 1
    window_tokens = run.tokens[start : q_last + 1]
    layer, head = view["layer"], view["head"]
    matrix = pattern[layer].mean(0) if head == "mean" else pattern[layer, int(head)]
    who = "mean of heads" if head == "mean" else f"H{head}"
    produced = f"step {i}: {viz.show_token(run.tokens[q_last])} → {viz.show_token(s.token_str)}"
    heatmap = viz.attention_heatmap(matrix, window_tokens, start=start, title=f"L{layer} {who} · {produced}")
    grid = viz.head_grid(pattern[layer], layer=layer)
    first = max(0, i + 1 - LENS_COLUMNS)
    P = len(run.prompt_ids)
    lens = viz.logit_lens(
        [st.lens for st in run.steps[first : i + 1]],
        run.tokens[P - 1 + first : P + i],
        start=P - 1 + first,
        title=f"logit lens · {produced}",
    )
    topk = viz.topk_bars(s.top, s.token_id, title=f"top candidates · {produced}")
    pipeline = viz.sampling_pipeline(s.stages, s.token_id)
    return heatmap, grid, lens, topk, pipeline


def tokens_value(run: Run) -> list[tuple[str, float | None]]:
    """HighlightedText value: every token with its probability (prompt tokens uncoloured).

    A newline is shown as ↵ so that a newline token is a visible, clickable box rather than a line break."""
    return [(t.replace("\n", "↵"), p) for t, p in zip(run.tokens, run.probs)]


def status_line(run: Run, seconds: float, finished: bool) -> str:
    """One line: tokens made, speed, and how the generation ended."""
    n = len(run.steps)
    speed = n / seconds if seconds > 0 else 0.0
    state = "done" if finished else "generating…"
    return (f"{state} · {len(run.prompt_ids)} prompt tokens · {n} new tokens · {speed:.1f} tokens/s · "
            f"seed {run.cfg.seed}")


def token_probs(model: GPT, ids: list[int], n_new: int, ablate: list[tuple[int, int]]) -> list[float]:
    """Probability the model gives each of the last ``n_new`` tokens of ``ids`` given what precedes it.

    One teacher-forced forward over the last ``block_size`` tokens, so baseline and ablation are scored the same
    way; steps that fall outside that window are left out (the list can be shorter than ``n_new``).
    """
    window = ids[-model.config.block_size :]
    with torch.inference_mode():
        logits = model(torch.tensor([window], device=model.device), ablate=ablate)[0].float()  # (T, vocab)
    probs = torch.softmax(logits[:-1], dim=-1).gather(1, torch.tensor(window[1:], device=model.device)[:, None])
    return probs[:, 0].tolist()[-n_new:]


def parse_heads(labels: list[str] | None) -> list[tuple[int, int]]:
    """``["L0H3", ...]`` -> ``[(0, 3), ...]``."""
    return [(int(a), int(b)) for a, b in (label[1:].split("H") for label in labels or [])]


def model_markdown(model: GPT, tok: Tokenizer, name: str) -> str:
    """The model panel: what is loaded and where it runs."""
    c = model.config
    return (
        f"- name: `{name}`\n- parameters: {model.num_params():,}\n- layers × heads: {c.n_layer} × {c.n_head}\n"
        f"- width: {c.n_embd}\n- context: {c.block_size} tokens\n"
        f"- vocabulary: {c.vocab_size} ({type(tok).__name__})\n- device: `{model.device}`"
    )


def build_app(
    model: GPT,
    tok: Tokenizer,
    *,
    model_name: str,
    max_new_tokens_cap: int = DEFAULT_MAX_NEW_TOKENS_CAP,
    concurrency: int = DEFAULT_CONCURRENCY,
    workers: bool | None = None,
) -> gr.Blocks:
    """The app's page and events for one loaded model, shared by every session; queue already configured.

    ``workers``: generate in ``concurrency`` worker processes (:mod:`workbench.workers`) instead of on a thread
    beside the server. Default: on for a CPU model, off on a GPU (whose work does not hold the interpreter).
    """
    if tok is None:
        raise ValueError(f"{model_name} has no tokenizer saved with it, so the app cannot read a text prompt")
    if workers is None:
        workers = model.device.type == "cpu"
    pool = GenerationPool(model, tok, size=concurrency, threads=torch.get_num_threads()) if workers else None
    i18n = I18N
    c = model.config
    head_labels = [f"L{layer}H{h}" for layer in range(c.n_layer) for h in range(c.n_head)]

    with gr.Blocks(title="GPT Workbench") as demo:
        run_state = gr.State(None)
        view_state = gr.State({"layer": 0, "head": "mean"})
        gr.Markdown(i18n("title"), elem_id="title")
        gr.Markdown(i18n("intro"))
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                prompt = gr.Textbox(label=i18n("prompt"), value=EXAMPLES[0], lines=3, elem_id="prompt")
                gr.Examples([[e] for e in EXAMPLES], inputs=[prompt], label=i18n("examples"))
                max_new = api_slider(1, max_new_tokens_cap, value=min(60, max_new_tokens_cap), step=1,
                                    label=i18n("max_new_tokens"), elem_id="max-new-tokens")
                temperature = api_slider(0.0, 2.0, value=0.8, step=0.05, label=i18n("temperature"))
                top_k = api_slider(0, min(200, c.vocab_size), value=40, step=1, label=i18n("top_k"))
                top_p = api_slider(0.01, 1.0, value=0.95, step=0.01, label=i18n("top_p"))
                seed = gr.Number(value=0, precision=0, label=i18n("seed"))
                with gr.Row():
                    go_btn = gr.Button(i18n("generate"), variant="primary", elem_id="generate")
                    stop_btn = gr.Button(i18n("stop"), variant="stop", elem_id="stop")
                with gr.Accordion(i18n("model"), open=True):
                    gr.Markdown(model_markdown(model, tok, model_name), elem_id="model-panel")
            with gr.Column(scale=3):
                text = gr.Textbox(label=i18n("text"), lines=4, max_lines=8, interactive=False, elem_id="text")
                tokens = gr.HighlightedText(label=i18n("tokens"), combine_adjacent=False, show_legend=False,
                                            elem_id="tokens")
                status = gr.Markdown("", elem_id="status")
                step = gr.Slider(0, 1, value=0, step=1, label=i18n("step"), elem_id="step")
                with gr.Row():
                    layer = gr.Dropdown([(f"L{i}", i) for i in range(c.n_layer)], value=0, label=i18n("layer"))
                    head = gr.Dropdown([("mean", "mean")] + [(f"H{h}", str(h)) for h in range(c.n_head)],
                                       value="mean", label=i18n("head"))
                with gr.Row():
                    heatmap = gr.Plot(label=i18n("attention"), elem_id="heatmap")
                    grid = gr.Plot(label=i18n("attention"), elem_id="head-grid")
                lens = gr.Plot(label=i18n("lens"), elem_id="lens")
                with gr.Row():
                    topk = gr.Plot(label=i18n("logits"), elem_id="topk", scale=1)
                    pipeline = gr.Plot(label=i18n("pipeline"), elem_id="pipeline", scale=2)
                with gr.Accordion(i18n("ablation"), open=False):
                    ablate_heads = gr.Dropdown(head_labels, multiselect=True, label=i18n("ablate_heads"))
                    ablate_btn = gr.Button(i18n("ablate_run"), elem_id="ablate")
                    with gr.Row():
                        base_text = gr.Textbox(label=i18n("baseline_text"), lines=4, interactive=False)
                        ablated_text = gr.Textbox(label=i18n("ablated_text"), lines=4, interactive=False)
                    ablation_plot = gr.Plot(label=i18n("ablation"), elem_id="ablation")
        plots = [heatmap, grid, lens, topk, pipeline]

        stop_requests: set[str] = set()  # sessions whose Stop was pressed while they generate

        # Parameter names are the API's (they shadow the components inside this function only).
        def on_generate(
            prompt: str | None,
            max_new_tokens: Any,
            temperature: Any,
            top_k: Any,
            top_p: Any,
            seed: Any,
            view: dict,
            previous: Run | None,
            request: gr.Request,
        ) -> Iterator[tuple]:
            """Stream one generation.

            The model generates on a thread of its own (:func:`step_batches`); each frame carries the tokens made
            since the last one, FRAME_SECONDS apart at most, because a frame costs the server a few milliseconds
            whatever it carries. Figures are redrawn at most every REDRAW_SECONDS and within a DRAW_SHARE of the
            time; in between, the last ones are sent again (already serialized, so nearly free). Stop is checked
            after every token.
            """
            cfg = sampling_config(max_new_tokens, temperature, top_k, top_p, seed, max_new_tokens_cap)
            if cfg.seed is None:  # draw one now and keep it, so that ablation can replay the same samples
                cfg = dataclasses.replace(cfg, seed=secrets.randbits(63))
            run = start_run(model, tok, prompt, cfg)
            session = request.session_hash or ""
            stop_requests.discard(session)
            started = draw_at = time.perf_counter()  # the first redraw waits: the first token goes at once
            drawing = 0.0  # seconds spent drawing so far
            # The state gets this Run on the first frame; the Run grows in place, so later frames skip the state.
            state: Any = run
            views: tuple = (0, "", *([None] * len(plots)))  # slider, status, figures until the first redraw
            made = pool.stream(run.prompt_ids, cfg) if pool else stream(model, tok, run.prompt_ids, cfg)
            for batch in step_batches(made, lambda: session in stop_requests, FRAME_SECONDS):
                for s in batch:
                    for note in s.notes:  # the window slid
                        gr.Info(note)
                    run.add(s)
                now = time.perf_counter()
                frame_views = views
                if now - draw_at >= REDRAW_SECONDS and drawing <= DRAW_SHARE * (now - started):
                    frame_views, views = draw(run, view, status_line(run, now - started, False))
                    draw_at = time.perf_counter()
                    drawing += draw_at - now
                yield (tok.decode(run.token_ids), tokens_value(run), state, *frame_views)
                state = gr.skip()
                # The first frame replaced the session's last Run; freeing its thousands of objects takes a few
                # milliseconds, which are spent here, after the first token went out, not before.
                previous = None
            stop_requests.discard(session)
            final, _ = draw(run, view, status_line(run, time.perf_counter() - started, True))
            yield (tok.decode(run.token_ids), tokens_value(run), run, *final)

        def draw(run: Run, view: dict, line: str) -> tuple[tuple, tuple]:
            """Slider, status line and figures at the last step: once with the slider's new range, for this frame,
            and once as plain values for the frames until the next redraw (a ``gr.update`` is costly to apply, and
            the figures are serialized once here so resending them is nearly free)."""
            last = len(run.steps) - 1
            figures = tuple(plot.postprocess(fig) for plot, fig in zip(plots, render_views(run, last, view)))
            return (gr.update(maximum=max(1, last), value=last), line, *figures), (last, line, *figures)

        gen_event = go_btn.click(
            on_generate,
            inputs=[prompt, max_new, temperature, top_k, top_p, seed, view_state, run_state],
            outputs=[text, tokens, run_state, step, status, *plots],
            api_name="generate",
        )

        def on_stop(request: gr.Request) -> None:
            """Ask this session's generation to stop after its current token."""
            stop_requests.add(request.session_hash or "")

        # The flag stops a running generation within one token; cancels= also drops one still waiting in the queue.
        stop_btn.click(on_stop, cancels=[gen_event], queue=False, api_visibility="private")

        def on_select(run: Run | None, view: dict, evt: gr.SelectData) -> tuple:
            """A click on token ``evt.index``: point the views at the step that produced it."""
            if run is None or evt.index is None:
                return (gr.skip(),) * (1 + len(plots))
            index = evt.index[0] if isinstance(evt.index, (list, tuple)) else int(evt.index)
            i = index - len(run.prompt_ids)
            if not 0 <= i < len(run.steps):
                gr.Info("That is a prompt token: pick a generated one to see why it came out.")
                return (gr.skip(),) * (1 + len(plots))
            return (i, *render_views(run, i, view))

        tokens.select(on_select, inputs=[run_state, view_state], outputs=[step, *plots], api_visibility="private")
        step.release(render_views, inputs=[run_state, step, view_state], outputs=plots, api_visibility="private")

        def on_view(run: Run | None, i: Any, layer_value: Any, head_value: Any) -> tuple:
            """A new layer or head: remember it for this session and redraw the current step."""
            view = {"layer": int(layer_value), "head": head_value}
            return (view, *render_views(run, i, view))

        for control in (layer, head):
            control.change(on_view, inputs=[run_state, step, layer, head], outputs=[view_state, *plots],
                           api_visibility="private")

        def on_ablate(run: Run | None, labels: list[str] | None) -> tuple[str, str, Any]:
            """Regenerate with the chosen heads off, same seed and length; compare the original tokens' odds."""
            if run is None or not run.steps:
                raise gr.Error("Generate some text first: ablation compares against that generation.")
            heads = parse_heads(labels)
            if not heads:
                raise gr.Error("Pick at least one head to switch off.")
            cfg = dataclasses.replace(run.cfg, max_new_tokens=len(run.steps))
            ablated = generate(model, tok, run.prompt_ids, cfg, capture=False, ablate=heads)
            ids = run.prompt_ids + run.token_ids
            base_p = token_probs(model, ids, len(run.steps), [])
            abl_p = token_probs(model, ids, len(run.steps), heads)
            shown = run.tokens[len(run.tokens) - len(base_p) :]
            title = f"p(original token), heads off: {', '.join(labels or [])}"
            fig = viz.ablation_comparison(shown, base_p, abl_p, title=title)
            return tok.decode(run.token_ids), ablated.text, fig

        ablate_btn.click(on_ablate, inputs=[run_state, ablate_heads], outputs=[base_text, ablated_text, ablation_plot],
                         api_name="ablate")

    demo.queue(max_size=QUEUE_PER_WORKER * concurrency, default_concurrency_limit=concurrency)
    if pool:
        weakref.finalize(demo, pool.close)
    return demo


SMALL_MODEL_PARAMS = 20_000_000


def cpu_threads(model: GPT, requested: int | None = None) -> int:
    """Torch threads for serving ``model`` on the CPU: ``requested`` if given; else 1 for a model under
    SMALL_MODEL_PARAMS, whose matrices are too small to be worth splitting between cores (and the other core is
    left to serve the page and encode frames, instead of preempting the model mid-step); else torch's default."""
    if requested is not None:
        return requested
    return 1 if model.num_params() < SMALL_MODEL_PARAMS else torch.get_num_threads()


def serve(
    demo: gr.Blocks,
    *,
    host: str | None = None,
    port: int | None = None,
    share: bool = False,
    prevent_thread_lock: bool = False,
    quiet: bool = False,
) -> Any:
    """Launch ``demo`` with the app's offline theme, CSS and translations.

    ``host``/``port`` default to ``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT``, else 127.0.0.1:7860. ``share``
    opens a public gradio.live tunnel, so it is off unless asked for. In a notebook the app shows inline.
    """
    # Read here, not at gradio's import, so a variable set later (in a notebook, in a test) still counts.
    host = host or os.environ.get("GRADIO_SERVER_NAME") or None
    if port is None and os.environ.get("GRADIO_SERVER_PORT"):
        port = int(os.environ["GRADIO_SERVER_PORT"])
    return demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        prevent_thread_lock=prevent_thread_lock,
        quiet=quiet,
        theme=THEME,
        css=CSS,
        i18n=I18N,
        footer_links=["api", "settings"],  # the API page documents /generate; settings has the language
    )


def launch(
    model: str = "shakespeare",
    *,
    device: str = "auto",
    host: str | None = None,
    port: int | None = None,
    share: bool = False,
    max_new_tokens_cap: int = DEFAULT_MAX_NEW_TOKENS_CAP,
    concurrency: int = DEFAULT_CONCURRENCY,
    threads: int | None = None,
    workers: bool | None = None,
    prevent_thread_lock: bool = False,
) -> gr.Blocks:
    """Load ``model`` (a shipped name, one of our checkpoint dirs, an HF GPT-2 dir or hub id) and serve the app.

    On the CPU, ``threads`` sets torch's thread count (see :func:`cpu_threads` for the default). ``workers``: see
    :func:`build_app`.
    """
    from workbench.checkpoint import load_model

    loaded, tok = load_model(model, device=device)
    if next(loaded.parameters()).device.type == "cpu":
        torch.set_num_threads(cpu_threads(loaded, threads))
    demo = build_app(loaded, tok, model_name=model, max_new_tokens_cap=max_new_tokens_cap, concurrency=concurrency,
                     workers=workers)
    serve(demo, host=host, port=port, share=share, prevent_thread_lock=prevent_thread_lock)
    return demo
