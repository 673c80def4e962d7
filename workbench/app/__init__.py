"""The live app: generation streamed token by token, every view drawn in the browser as each token arrives.

``python -m workbench app`` (or ``make app``) serves it; in a notebook, ``from workbench.app import launch;
launch()`` shows it inline.

- :mod:`~workbench.app.ui`: the page (Gradio components around our renderer) and its events; the only importer of
  gradio in the package.
- :mod:`~workbench.app.session`: a session's run as the page receives it (compact step data), input checks.
- :mod:`~workbench.app.strings`: every visible string, English and 简体中文, in one table.
- ``static/``: the renderer (``viewer.js``, ``viewer.css``) and the language chooser (``head.js``), shipped with
  the package: the page fetches nothing from any other host.

The model is loaded once and shared by every session; on the CPU, generation runs in worker processes that share
its weights (:mod:`workbench.workers`), fed through :func:`workbench.serve.step_batches`.
"""

__all__ = ["build_app", "cpu_threads", "launch", "parse_heads", "serve", "token_probs"]


def __getattr__(name: str):
    # gradio is imported on first use of the page, not with the package: a worker process that unpickles
    # ``session.step_data`` imports this package, and needs no web framework.
    if name in __all__:
        from workbench.app import ui

        return getattr(ui, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
