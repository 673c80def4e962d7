"""The page and its events: a prompt column of Gradio components beside our own renderer, which draws every view.

The Generate event is a public API (``api_name="generate"``): inputs ``(prompt, max_new_tokens, temperature,
top_k, top_p, seed)``; first output the text generated so far, streamed; second the page's frame (new steps as
compact data, see :mod:`workbench.app.session`). ``/ablate`` regenerates the session's last run with heads off.

Stop sets a flag that the generating thread reads after every token, so a run always ends in its own final frame
("stopped · N new tokens", the text and views kept); it never cancels the event, which would leave the page
half-updated. A Stop while the run still waits in the queue ends it at once, before its first token.

Bad input is one log line and one message naming the field and its range, in the page's language; unexpected
errors keep their traceback in the log. An error ends only its own request.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import time
import weakref
from importlib import resources
from typing import Any, Iterator

import torch

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # must be set before gradio is imported: the page stays offline

import gradio as gr  # noqa: E402

from workbench.app import strings  # noqa: E402
from workbench.app.session import (  # noqa: E402
    APP_CONCURRENCY,
    APP_MAX_NEW_TOKENS_CAP,
    InputError,
    Run,
    find_run,
    read_prompt,
    read_settings,
    step_data,
)
from workbench.generate import generate, stream  # noqa: E402
from workbench.model import GPT  # noqa: E402
from workbench.serve import step_batches  # noqa: E402
from workbench.tokenizers import Tokenizer  # noqa: E402
from workbench.batch_server import BatchedPool  # noqa: E402

QUEUE_PER_WORKER = 16  # queue max size = this x concurrency: a full queue refuses at once instead of waiting long
FRAME_SECONDS = 0.1  # while streaming, at most 10 frames a second: faster tokens share a frame
SMALL_MODEL_PARAMS = 20_000_000
STOPS_KEPT = 1000  # Stops remembered for runs that may still wait in the queue

EXAMPLES = ["ROMEO:", "To be, or not to be", "First Citizen:", "我 爱 吃 饭"]

log = logging.getLogger("workbench.app")

# System fonts only: the default theme would fetch Google Fonts, and the page must not leave the server.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
I18N = gr.I18n(**{lang: strings.table(lang) for lang in strings.LANGUAGES})


def _static(name: str) -> str:
    return resources.files("workbench.app").joinpath("static", name).read_text(encoding="utf-8")


def page_head() -> str:
    """The page's ``<head>`` addition: the language chooser, which must run before Gradio reads the language."""
    return f"<script>{_static('head.js')}</script>"


def as_json(value: dict) -> str:
    """The page's data as one JSON string. Gradio diffs each streamed output against its last value to send only
    the change; on a string that is one comparison, while on nested dicts its diff walked every candidate of
    every step and took about a fifth of the server's time."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def api_slider(*args: Any, **kwargs: Any) -> gr.Slider:
    """A ``gr.Slider`` whose range limits only the page.

    Gradio's slider rejects out-of-range API values with a message that does not name the field; this one passes
    the value on, so :func:`read_settings` reports it. The override is per instance: subclassing a component makes
    gradio write a ``.pyi`` stub beside this module.
    """
    slider = gr.Slider(*args, **kwargs)
    slider.preprocess = lambda payload: payload  # type: ignore[method-assign]
    return slider


def raw_number(*args: Any, **kwargs: Any) -> gr.Number:
    """A ``gr.Number`` that passes what the client sent ("abc", NaN, a 5,000-digit string) on to validation,
    instead of failing inside Gradio with a message that names nothing."""
    number = gr.Number(*args, **kwargs)
    number.preprocess = lambda payload: payload  # type: ignore[method-assign]
    return number


def request_language(request: gr.Request | None) -> str:
    """The language this request's page shows."""
    if request is None:
        return "en"
    return strings.language(dict(request.cookies), request.headers.get("accept-language"))


def tell(err: InputError, lang: str) -> str:
    """What is wrong with the input, in ``lang`` (a parameter given as ``(key, params)`` is a string of its own)."""
    params = {k: strings.say(v[0], lang, **v[1]) if isinstance(v, tuple) else v for k, v in err.params.items()}
    return strings.say(err.key, lang, **params)


def fail(err: InputError, lang: str) -> gr.Error:
    """The page's message for bad input, logged as one line (no traceback: nothing is wrong with the server)."""
    log.warning("bad input: %s", tell(err, "en"))
    return gr.Error(tell(err, lang), title=strings.say("error", lang), print_exception=False)


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


def model_info(model: GPT, tok: Tokenizer, name: str) -> dict:
    """What the page's model panel lists."""
    c = model.config
    return {"name": name, "params": model.num_params(), "layers": c.n_layer, "heads": c.n_head, "width": c.n_embd,
            "context": c.block_size, "vocab": f"{c.vocab_size} ({type(tok).__name__})", "device": str(model.device)}


def build_app(
    model: GPT,
    tok: Tokenizer,
    *,
    model_name: str,
    max_new_tokens_cap: int = APP_MAX_NEW_TOKENS_CAP,
    concurrency: int = APP_CONCURRENCY,
    workers: bool | None = None,
) -> gr.Blocks:
    """The app's page and events for one loaded model, shared by every session; queue already configured.

    Up to ``concurrency`` generations decode together in batches (:mod:`workbench.batch_server`), in worker
    processes for a CPU model, on a thread beside the server for a GPU model (whose work does not hold the
    interpreter). ``workers=False``: each generation runs alone on a thread beside the server instead, unbatched.
    """
    if tok is None:
        raise ValueError(f"{model_name} has no tokenizer saved with it, so the app cannot read a text prompt")
    pool = (BatchedPool(model, tok, max_batch=concurrency, process=workers, threads=torch.get_num_threads())
            if workers is not False else None)
    c = model.config
    head_labels = [f"L{layer}H{h}" for layer in range(c.n_layer) for h in range(c.n_head)]
    page = {"model": model_info(model, tok, model_name), "strings": {lang: strings.table(lang)
                                                                     for lang in strings.LANGUAGES}}

    def steps_since(request_data: Any) -> dict | None:
        """For the page: a run's steps from ``from`` on, when it missed frames."""
        if not isinstance(request_data, dict):
            return None
        run = find_run(request_data.get("run"))
        start = request_data.get("from")
        if run is None or not isinstance(start, int) or not 0 <= start <= len(run.steps):
            return None
        return run.frame(start, -1)

    with gr.Blocks(title="GPT Workbench") as demo:
        run_state = gr.State(None)
        with gr.Row(elem_id="wb-page", equal_height=False):
            with gr.Column(scale=1, min_width=270, elem_id="wb-left"):
                prompt = gr.Textbox(label=I18N("prompt"), value=EXAMPLES[0], lines=2, max_lines=5, elem_id="prompt")
                with gr.Row(elem_id="wb-buttons"):
                    go_btn = gr.Button(I18N("generate"), variant="primary", elem_id="generate", min_width=80)
                    stop_btn = gr.Button(I18N("stop"), variant="stop", elem_id="stop", min_width=80)
                gr.Examples([[e] for e in EXAMPLES], inputs=[prompt], label=I18N("examples"))
                with gr.Accordion(I18N("settings"), open=True, elem_id="settings"):
                    max_new = api_slider(1, max_new_tokens_cap, value=min(60, max_new_tokens_cap), step=1,
                                         label=I18N("max_new_tokens"), elem_id="max-new-tokens")
                    temperature = api_slider(0.0, 2.0, value=0.8, step=0.05, label=I18N("temperature"),
                                             elem_id="temperature")
                    top_k = api_slider(0, min(200, c.vocab_size), value=40, step=1, label=I18N("top_k"),
                                       elem_id="top-k")
                    top_p = api_slider(0.01, 1.0, value=0.95, step=0.01, label=I18N("top_p"), elem_id="top-p")
                    seed = raw_number(value=0, precision=0, label=I18N("seed"), elem_id="seed")
            with gr.Column(scale=4, min_width=600, elem_id="wb-right"):
                viewer = gr.HTML(
                    value=as_json({"page": page}),
                    html_template='<div class="wb-root"></div>',
                    js_on_load=_static("viewer.js"),
                    server_functions=[steps_since],
                    apply_default_css=False,
                    elem_id="viewer",
                )
                text = gr.Textbox(label=I18N("text_api"), visible=False, elem_id="text")
                press = gr.Textbox(visible=False)  # the page's name for a click of Generate (see on_stop)
        with gr.Accordion(I18N("ablation"), open=False, elem_id="ablation"):
            with gr.Row():
                ablate_heads = gr.Dropdown(head_labels, multiselect=True, label=I18N("ablate_heads"), scale=2)
                ablate_btn = gr.Button(I18N("ablate_run"), elem_id="ablate", scale=1)
            with gr.Row():
                base_text = gr.Textbox(label=I18N("baseline_text"), lines=3, interactive=False)
                ablated_text = gr.Textbox(label=I18N("ablated_text"), lines=3, interactive=False)

        # (session, press) of each Stop: a press names one click of Generate (the page makes one per click), so a
        # Stop ends that run, whether it still waits in the queue or runs, and never a later one. Oldest first; a
        # run removes its own, and the few that come after their run has ended are forgotten beyond STOPS_KEPT.
        stops: dict[tuple[str, str], None] = {}
        inputs = [prompt, max_new, temperature, top_k, top_p, seed]

        def read_input(prompt: Any, max_new_tokens: Any, temperature: Any, top_k: Any, top_p: Any,
                       seed: Any) -> tuple[Any, list[int], list[dict]]:
            cfg = read_settings(max_new_tokens, temperature, top_k, top_p, seed, max_new_tokens_cap)
            return (cfg, *read_prompt(model, tok, prompt))

        # Parameter names are the API's (they shadow the components inside this function only).
        def on_generate(
            prompt: str | None,
            max_new_tokens: Any,
            temperature: Any,
            top_k: Any,
            top_p: Any,
            seed: Any,
            previous: Run | None,
            press: Any = None,
            request: gr.Request = None,  # type: ignore[assignment]  # gradio passes it (by its type)
        ) -> Iterator[tuple]:
            """Stream one generation: each frame carries the steps made since the last one, FRAME_SECONDS apart at
            most (a frame costs the server a little whatever it carries). ``press``: the page's name for this
            click of Generate, which its Stop sends (the API's ``/generate`` has none, and no Stop)."""
            session = request.session_hash or ""
            try:
                cfg, ids, notes = read_input(prompt, max_new_tokens, temperature, top_k, top_p, seed)
            except InputError as err:
                raise fail(err, request_language(request)) from None
            if cfg.seed is None:  # draw one now and keep it, so that ablation can replay the same samples
                cfg.seed = secrets.randbits(63)
            run = Run(cfg, ids, tok.token_strs(ids), (c.n_layer, c.n_head), c.block_size, notes)
            key = (session, press)
            stopped = lambda: key in stops  # noqa: E731
            sent, seq, state = 0, 0, run
            try:
                if stopped():  # Stop was pressed while the run waited in the queue
                    run.state = "stopped"
                    yield "", as_json(run.frame(0, seq)), run
                    return
                made = (pool.stream(ids, cfg, view=step_data) if pool
                        else map(step_data, stream(model, tok, ids, cfg)))
                for batch in step_batches(made, stopped, FRAME_SECONDS):
                    for data in batch:
                        run.add(data)
                    run.text = tok.decode(run.token_ids)
                    yield run.text, as_json(run.frame(sent, seq)), state
                    sent, seq, state = len(run.steps), seq + 1, gr.skip()
                    # The first frame replaced the session's last Run; freeing it is done here, after the first
                    # token went out, not before.
                    previous = None
                run.state = "stopped" if stopped() and len(run.steps) < cfg.max_new_tokens else "done"
            except Exception as err:  # unexpected: the traceback goes to the log, the page keeps what it has
                log.exception("generation failed")
                run.state = "error"
                run.notes.append({"key": "err_unexpected", "kind": type(err).__name__})
            finally:
                stops.pop(key, None)
            run.seconds = time.perf_counter() - run.started
            yield run.text, as_json(run.frame(sent, seq)), run

        # The page's Generate is one event, so that nothing delays the run: Gradio's page sends a trigger's events
        # one after another, each once the last has finished. Its JS shows the waiting state and names the press
        # at the click; a press that fails (bad input, a full queue) shows the last run again. No progress overlay:
        # the page's status line says how the run goes, and Gradio's ticking timer over the views made the browser
        # lay the page out again many times a second.
        go_btn.click(on_generate, inputs=[*inputs, run_state, press], outputs=[text, viewer, run_state],
                     js="(...values) => [...values.slice(0, -1), window.wbPress()]", show_progress="hidden",
                     api_visibility="private").failure(None, js="() => window.wbRefused()")
        # The public API: the same function without a press (a hidden button gives the endpoint its event).
        gr.Button(visible=False).click(on_generate, inputs=[*inputs, run_state], outputs=[text, viewer, run_state],
                                       api_name="generate", show_progress="hidden")

        def on_stop(press: Any, request: gr.Request) -> None:
            """Ask the run of the page's last Generate to stop after its current token (or before its first, if it
            still waits); the page sends its last press until that press's run has ended, and none after."""
            if isinstance(press, str) and press:
                stops[(request.session_hash or "", press)] = None
                while len(stops) > STOPS_KEPT:
                    del stops[next(iter(stops))]

        stop_btn.click(on_stop, inputs=[press], js="() => [window.wbStopPress()]", queue=False,
                       api_visibility="private")

        def on_ablate(run: Run | None, labels: list[str] | None, request: gr.Request) -> tuple[str, str, str]:
            """Regenerate with the chosen heads off, same seed and length; compare the original tokens' odds."""
            lang = request_language(request)
            if run is None or not run.steps:
                raise fail(InputError("err_no_run"), lang)
            heads = parse_heads(labels)
            if not heads:
                raise fail(InputError("err_no_heads"), lang)
            cfg = dataclasses.replace(run.cfg, max_new_tokens=len(run.steps))
            ablated = generate(model, tok, run.prompt_ids, cfg, capture=False, ablate=heads)
            ids = run.prompt_ids + run.token_ids
            base_p = token_probs(model, ids, len(run.steps), [])
            abl_p = token_probs(model, ids, len(run.steps), heads)
            shown = [s["t"] for s in run.steps][len(run.steps) - len(base_p):]
            chart = as_json({"ablation": {"heads": labels, "tokens": shown, "base": base_p, "off": abl_p},
                             "seq": time.time()})
            return tok.decode(run.token_ids), ablated.text, chart

        ablate_btn.click(on_ablate, inputs=[run_state, ablate_heads], outputs=[base_text, ablated_text, viewer],
                         api_name="ablate")

    _name_missing_inputs(demo)
    demo.queue(max_size=QUEUE_PER_WORKER * concurrency, default_concurrency_limit=concurrency)
    # Ends every generation under way and the workers: when the process exits, or (launch) as soon as the server
    # has stopped, so that Ctrl+C does not wait for the generations under way to finish.
    demo.end_generations = weakref.finalize(demo, pool.close) if pool else lambda: None
    return demo


def _name_missing_inputs(demo: gr.Blocks) -> None:
    """A raw API call with too few inputs gets a message that says what the endpoint takes.

    Gradio's own check raises a plain ValueError there, which reaches the client as ``{"error": null}``; the
    override is on this instance only.
    """
    check = demo.validate_inputs

    def validate_inputs(block_fn: Any, inputs: list[Any]) -> None:
        try:
            check(block_fn, inputs)
        except ValueError:
            params = getattr(block_fn.fn, "__code__", None)
            names = params.co_varnames[: len(block_fn.inputs)] if params else ["?"] * len(block_fn.inputs)
            shown = [name for name, comp in zip(names, block_fn.inputs) if not isinstance(comp, gr.State)]
            text = strings.say("err_inputs", "en", api=block_fn.api_name or block_fn.name, want=len(shown),
                               names=", ".join(shown), n=len(inputs))
            log.warning("bad input: %s", text)
            raise gr.Error(text, print_exception=False) from None

    demo.validate_inputs = validate_inputs  # type: ignore[method-assign]


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
    """Launch ``demo`` with the app's offline theme, CSS, head script and translations.

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
        css=_static("viewer.css"),
        head=page_head(),
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
    max_new_tokens_cap: int = APP_MAX_NEW_TOKENS_CAP,
    concurrency: int = APP_CONCURRENCY,
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
    if not prevent_thread_lock:  # the server ran until stopped (Ctrl+C) and has stopped
        demo.end_generations()
    return demo

