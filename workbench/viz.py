"""Plotly figures of what the model did: attention, logit lens, the sampling pipeline, head ablation.

Every function takes plain data (numpy arrays, the records of :mod:`workbench.records`) and returns a
``plotly.graph_objects.Figure`` with an explicit height, for notebooks (the app draws its views in the browser, from
the same step records). :func:`step_views` draws the app's five views of one step of a generation. Nothing here
runs the model. Figures embed no external resources: the page that shows them serves plotly.js itself.
:func:`head_view` and :func:`model_view` show bertviz's views in a notebook with their scripts inlined, offline.
"""

from __future__ import annotations

import functools
import html
import importlib.util
import json
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from workbench.records import Candidate, Generation, LogitLens, Stage

ATTENTION_SCALE = "Blues"
PROB_SCALE = "Viridis"
MARGIN = dict(l=10, r=10, t=40, b=10)
# A small template of our own: plotly's default one is deep-copied into every figure when it is serialized, which
# costs ten times more than building a heatmap, and the app serializes figures while it streams.
TEMPLATE = go.layout.Template(
    layout=dict(
        font=dict(family="system-ui, sans-serif", size=12, color="#2a3f5f"),
        paper_bgcolor="white",
        plot_bgcolor="#f4f6fa",
        xaxis=dict(gridcolor="white", zeroline=False, automargin=True),  # automargin: room for token labels
        yaxis=dict(gridcolor="white", zeroline=False, automargin=True),
        colorway=["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"],
    )
)
PICKED = "#d62728"  # the sampled token, in every figure
OTHER = "#1f77b4"


def show_token(s: str) -> str:
    """A token's display string with invisible characters made visible: space -> ␣, newline -> ↵, tab -> ⇥."""
    return s.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅"


def position_labels(tokens: Sequence[str], start: int = 0) -> list[str]:
    """Axis labels ``"7:␣the"``: the position makes repeated tokens distinct, since plotly merges equal labels."""
    return [f"{start + i}:{show_token(t)}" for i, t in enumerate(tokens)]


def attention_heatmap(
    pattern: np.ndarray, tokens: Sequence[str], *, start: int = 0, title: str = "", height: int = 460
) -> go.Figure:
    """Heatmap of one attention pattern ``(T, T)`` (queries down, keys across) over ``tokens`` at ``start``..

    Row ``q`` is how the token at position ``q`` spread its attention over the positions it could see; the model
    reads that mix to predict the token at ``q + 1``.
    """
    labels = position_labels(tokens, start)
    fig = go.Figure(
        go.Heatmap(
            z=np.asarray(pattern, dtype=np.float32),
            x=labels,
            y=labels,
            colorscale=ATTENTION_SCALE,
            zmin=0.0,
            zmax=1.0,
            hovertemplate="query %{y}<br>key %{x}<br>attention %{z:.3f}<extra></extra>",
        )
    )
    fig.update_layout(template=TEMPLATE, title=title, height=height, margin=MARGIN)
    fig.update_xaxes(tickangle=-60, tickfont_size=9, title_text="key (attended to)")
    # Queries top to bottom, like reading the text.
    fig.update_yaxes(autorange="reversed", tickfont_size=9, title_text="query")
    return fig


def head_grid(patterns: np.ndarray, *, layer: int, cols: int = 4, height: int = 420) -> go.Figure:
    """All heads of one layer as small multiples: ``patterns`` is ``(H, T, T)``; one shared colour scale.

    The heads are tiled into one heatmap with blank (NaN) gutters rather than drawn as one subplot each: a single
    trace builds and renders about ten times faster, which matters while the app redraws it during streaming.
    """
    n_head, n, _ = patterns.shape
    rows, gap = -(-n_head // cols), max(2, n // 16)
    step = n + gap
    tiled = np.full((rows * step - gap, cols * step - gap), np.nan, dtype=np.float32)
    for h in range(n_head):
        r, c = divmod(h, cols)
        tiled[r * step : r * step + n, c * step : c * step + n] = patterns[h]
    fig = go.Figure(
        go.Heatmap(
            z=tiled,
            colorscale=ATTENTION_SCALE,
            zmin=0.0,
            zmax=1.0,
            hoverongaps=False,
            hovertemplate="%{z:.3f}<extra></extra>",
        )
    )
    labels = [
        dict(x=(h % cols) * step + (n - 1) / 2, y=(h // cols) * step - 0.5, text=f"L{layer}H{h}", showarrow=False,
             yshift=8, font_size=11)
        for h in range(n_head)
    ]
    fig.update_layout(template=TEMPLATE, height=height, margin=MARGIN, title=f"Layer {layer}: every head",
                      annotations=labels)
    fig.update_xaxes(showticklabels=False, ticks="", showgrid=False)
    fig.update_yaxes(showticklabels=False, ticks="", showgrid=False, autorange="reversed")
    return fig


def logit_lens(lens: LogitLens, tokens: Sequence[str], *, batch: int = 0, title: str = "", height: int = 460
               ) -> go.Figure:
    """The logit lens as a grid: one column per position, one row per read (after each layer's attention and MLP).

    Column ``j`` is the lens read at position ``lens.positions[j]`` of batch row ``batch``, whose input token is
    ``tokens[j]``. Each cell shows the token that read would predict next, coloured by its probability. For the steps
    of a generation, join their lenses first: ``LogitLens.concat([step.lens for step in steps])``.
    """
    if len(tokens) != len(lens.positions):
        raise ValueError(f"{len(tokens)} tokens for a lens of {len(lens.positions)} positions: pass one per position")
    top_ids = lens.ids[:, batch, :, 0].tolist()  # (R, P): each read's most likely token at each position
    text = [[show_token(lens.token_strs[i]) for i in row] for row in top_ids]
    probs = lens.probs[:, batch, :, 0].tolist()
    fig = go.Figure(
        go.Heatmap(
            z=probs,
            x=[f"{p}:{show_token(t)}" for p, t in zip(lens.positions, tokens)],  # like position_labels
            y=lens.read_names,
            text=text,
            texttemplate="%{text}",
            textfont_size=10,
            colorscale=PROB_SCALE,
            zmin=0.0,
            zmax=1.0,
            colorbar_title="p",
            hovertemplate="%{y} at %{x}<br>top: %{text} (%{z:.3f})<extra></extra>",
        )
    )
    fig.update_layout(template=TEMPLATE, title=title, height=height, margin=MARGIN)
    fig.update_xaxes(tickangle=-60, tickfont_size=9, title_text="input position")
    fig.update_yaxes(autorange="reversed", tickfont_size=9)  # layer 0 at the top, the output at the bottom
    return fig


def topk_bars(candidates: Sequence[Candidate], picked: int, *, title: str = "", height: int = 320) -> go.Figure:
    """Horizontal bars of the most likely next tokens; the one that was picked is red."""
    fig = go.Figure(_bars(candidates, picked))
    fig.update_layout(template=TEMPLATE, title=title, height=height, margin=MARGIN, xaxis_title="probability")
    fig.update_yaxes(autorange="reversed")
    return fig


def _bars(candidates: Sequence[Candidate], picked: int, *, text_on_bars: bool = False) -> go.Bar:
    # Labels carry the token id too: two candidates may share a display string (e.g. two byte fragments).
    labels = [f"{show_token(c.token_str)} #{c.token_id}" for c in candidates]
    bars = go.Bar(
        x=[c.prob for c in candidates],
        y=list(range(len(candidates))) if text_on_bars else labels,
        orientation="h",
        marker_color=[PICKED if c.token_id == picked else OTHER for c in candidates],
        customdata=labels,
        hovertemplate="%{customdata}: %{x:.4f}<extra></extra>",
    )
    if text_on_bars:  # narrow panels have no room for tick labels beside them
        bars.update(text=labels, textposition="auto", insidetextanchor="start", cliponaxis=False, textfont_size=10)
    return bars


def sampling_pipeline(stages: Sequence[Stage], picked: int, *, height: int = 340) -> go.Figure:
    """The sampling pipeline side by side: raw -> (penalties) -> temperature -> top-k -> top-p -> picked.

    Each panel shows a stage's most likely tokens; its title says how many tokens are still allowed. The picked
    token is red in every panel, so one can follow it through the filters. (Panels are laid out by hand, not with
    ``make_subplots``, which is several times slower to build.)
    """
    width = 1.0 / len(stages)
    data, layout, titles = [], {}, []
    for i, stage in enumerate(stages):
        suffix = "" if i == 0 else str(i + 1)
        bars = _bars(stage.candidates, picked, text_on_bars=True)
        bars.update(xaxis=f"x{suffix}", yaxis=f"y{suffix}")
        data.append(bars)
        left, right = i * width + 0.01, (i + 1) * width - 0.01
        layout[f"xaxis{suffix}"] = dict(domain=[left, right], anchor=f"y{suffix}", range=[0, 1])
        layout[f"yaxis{suffix}"] = dict(anchor=f"x{suffix}", autorange="reversed", showticklabels=False)
        titles.append(dict(x=(left + right) / 2, y=1.0, xref="paper", yref="paper", yanchor="bottom",
                           text=f"{stage.name}<br>{stage.kept} kept", showarrow=False))
    fig = go.Figure(data, layout)
    fig.update_layout(template=TEMPLATE, height=height, margin=dict(MARGIN, t=85), showlegend=False, annotations=titles,
                      title="sampling pipeline (red = picked)")
    return fig


def ablation_comparison(
    tokens: Sequence[str], baseline: Sequence[float], ablated: Sequence[float], *, title: str = "", height: int = 360
) -> go.Figure:
    """Per-step probability of the original tokens, with all heads on (baseline) and with the chosen heads off."""
    x = position_labels(tokens)
    fig = go.Figure(
        [
            go.Scatter(x=x, y=list(baseline), mode="lines+markers", name="baseline"),
            go.Scatter(x=x, y=list(ablated), mode="lines+markers", name="heads off"),
        ]
    )
    fig.update_layout(template=TEMPLATE, title=title, height=height, margin=MARGIN, yaxis_title="p(original token)",
                      yaxis_range=[0, 1])
    fig.update_xaxes(tickangle=-60, tickfont_size=9, title_text="generated token")
    return fig


STEP_VIEW = 64  # positions of the attention views in step_views
STEP_LENS = 16  # positions of its logit lens


def step_views(
    gen: Generation, step: int, *, layer: int = 0, head: int | str = "mean"
) -> tuple[go.Figure, go.Figure, go.Figure, go.Figure, go.Figure]:
    """The app's five views of one step of ``gen`` (made with ``generate(..., attention=True)``): the attention
    heatmap of ``layer``/``head`` (or the mean of the heads), every head of that layer, the logit lens up to the step,
    the top candidates and the sampling pipeline."""
    if gen.attention is None:
        raise ValueError("step_views needs the full pattern: generate(..., attention=True)")
    s = gen.steps[step]
    tokens = [*gen.prompt_strs, *gen.token_strs]
    q = len(gen.prompt_ids) - 1 + step  # the position that produced the step's token
    start = max(0, q + 1 - STEP_VIEW)
    pattern = gen.attention[layer, :, start : q + 1, start : q + 1].numpy()  # (H, n, n)
    matrix = pattern.mean(0) if head == "mean" else pattern[int(head)]
    who = "mean of heads" if head == "mean" else f"H{head}"
    produced = f"step {step}: {show_token(tokens[q])} → {show_token(s.token_str)}"
    heatmap = attention_heatmap(matrix, tokens[start : q + 1], start=start, title=f"L{layer} {who} · {produced}")
    first = max(0, step + 1 - STEP_LENS)
    P = len(gen.prompt_ids)
    lens = logit_lens(LogitLens.concat([st.lens for st in gen.steps[first : step + 1]]),
                      tokens[P - 1 + first : P + step], title=f"logit lens · {produced}")
    topk = topk_bars(s.top, s.token_id, title=f"top candidates · {produced}")
    return heatmap, head_grid(pattern, layer=layer), lens, topk, sampling_pipeline(s.stages, s.token_id)


# ------------------------------------------------------------------------------------------- bertviz, offline
# bertviz (Apache-2.0) draws its views with d3 and jQuery, which it asks require.js to fetch from a CDN. Offline, and
# in JupyterLab (which has no require.js), its view stays empty under a red "Javascript Error: require is not
# defined". head_view and model_view show the same views with both libraries inlined into the cell's output, read
# from pip packages that setup installs: d3 5.7.0 (BSD-3-Clause; the version bertviz asks for) as mpld3 ships it, and
# jQuery 3.7.1 (MIT) from XStatic-jQuery. The page then asks no host for anything. Where the scripts cannot run (a
# notebook opened untrusted runs none), the output shows one calm sentence instead of an empty view.

BERTVIZ_NOTE = ("bertviz's interactive view appears when this cell runs in a trusted notebook; "
                "the plotly view below shows the same attention.")
BERTVIZ_MISSING = ("bertviz's interactive view needs {what} (pip install {what}); "
                   "the plotly view below shows the same attention.")
_BERTVIZ_SCRIPT = '<script type="text/javascript">'  # where bertviz's own script starts in the HTML it returns


@functools.lru_cache(maxsize=1)
def _d3_and_jquery() -> tuple[str, str]:
    """The sources of d3 and jQuery, from the installed packages; ``ModuleNotFoundError`` names the missing one."""
    spec = importlib.util.find_spec("mpld3")  # located, not imported: importing mpld3 imports matplotlib
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("mpld3", name="mpld3")
    d3 = Path(spec.submodule_search_locations[0], "js", "d3.v5.min.js").read_text(encoding="utf-8")
    try:
        from xstatic.pkg import jquery
    except ImportError:
        raise ModuleNotFoundError("XStatic-jQuery", name="XStatic-jQuery") from None
    return d3, Path(jquery.BASE_DIR, "jquery.min.js").read_text(encoding="utf-8")


def _inline_script(source: str) -> str:
    # Inside <script>, only "</script" can end the element early; "<\/" means the same in JS strings and regexes.
    return re.sub(r"</(script)", r"<\\/\1", source, flags=re.IGNORECASE)


def _module(source: str) -> str:
    """A JS expression worth the library's exports: its UMD header sees a CommonJS ``module`` of our own and no
    ``define``, so it neither sets page globals (``$``, ``d3``) nor registers with a loader the page may have."""
    return ("(function () { var module = {exports: {}}, exports = module.exports, define;\n"
            f"{source}\n;return module.exports; }}).call({{}})")


def bertviz_html(view: str, attention, tokens: Sequence[str], **kwargs) -> str:
    """The HTML of bertviz's ``view`` (``"head_view"`` or ``"model_view"``; same arguments as bertviz's), with d3 and
    jQuery inlined and require.js replaced by a two-line stand-in, so that it renders offline and in JupyterLab.

    bertviz composes the view (its markup and its script, with the attention as data); only how the script gets
    its libraries changes. Until the script has run, the view is hidden behind :data:`BERTVIZ_NOTE`.
    """
    import bertviz

    d3, jquery = _d3_and_jquery()
    made = getattr(bertviz, view)(attention, list(tokens), html_action="return", **kwargs).data
    markup, found, script = made.partition(_BERTVIZ_SCRIPT)
    vis_id = re.search(r'id="(bertviz-[0-9a-f]+)"', markup)
    if not found or vis_id is None or not script.rstrip().endswith("</script>"):
        raise ValueError(f"bertviz {bertviz.__version__} composed its {view} in a way this function does not know")
    vis_id = vis_id.group(1)
    markup = re.sub(r"<script\b[^>]*\bsrc=[^>]*>\s*</script>", "", markup)  # require.js from the CDN
    script = script.rstrip()[: -len("</script>")]
    runner = f"""(function () {{
  var box = document.getElementById({json.dumps(vis_id + "-box")});
  var note = document.getElementById({json.dumps(vis_id + "-note")});
  box.style.display = "";
  try {{
    var d3 = {_module(d3)};
    var $ = {_module(jquery)};
    // bertviz's script calls require.config (CDN paths: not wanted) and then requirejs(["jquery", "d3"], f).
    var require = {{config: function () {{}}}};
    var requirejs = function (names, f) {{ f($, d3); }};
{script}
    note.remove();
  }} catch (err) {{
    box.style.display = "none";
    console.error("bertviz view:", err);
  }}
}})();"""
    return (f'<p id="{vis_id}-note" style="font-style:italic">{html.escape(BERTVIZ_NOTE)}</p>\n'
            f'<div id="{vis_id}-box" style="display:none">{markup}</div>\n'
            f"<script>\n{_inline_script(runner)}\n</script>")


def _show_bertviz(view: str, attention, tokens: Sequence[str], **kwargs) -> None:
    from IPython.display import HTML, display

    try:
        page = bertviz_html(view, attention, tokens, **kwargs)
    except ModuleNotFoundError as missing:
        print(BERTVIZ_MISSING.format(what=missing.name))
        return
    display(HTML(page))


def head_view(attention, tokens: Sequence[str], **kwargs) -> None:
    """bertviz's head view, offline: the heads of one layer as lines from each token to the tokens it attends to.
    ``attention`` is a list with one ``(batch=1, head, query, key)`` tensor per layer; keyword arguments are
    bertviz's (``layer``, ``heads``, ...)."""
    _show_bertviz("head_view", attention, tokens, **kwargs)


def model_view(attention, tokens: Sequence[str], **kwargs) -> None:
    """bertviz's model view, offline: every head of every layer as a thumbnail, each opening to its lines.
    ``attention`` is a list with one ``(batch=1, head, query, key)`` tensor per layer; keyword arguments are
    bertviz's (``include_layers``, ``display_mode``, ...)."""
    _show_bertviz("model_view", attention, tokens, **kwargs)
