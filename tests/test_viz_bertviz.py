"""bertviz's views, offline (workbench.viz.head_view / model_view): the HTML carries its scripts and asks no host for
anything; a missing package gives one calm sentence instead of an error. tests/test_lab_browser.py shows the views
in JupyterLab."""

from __future__ import annotations

import re
import sys

import pytest
import torch

from workbench import viz

TOKENS = list("abcde")


def attention(layers: int = 2, heads: int = 3, n: int = len(TOKENS)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.softmax(torch.randn(1, heads, n, n, generator=g), -1) for _ in range(layers)]


@pytest.mark.parametrize("view", ["head_view", "model_view"])
def test_view_html_carries_its_scripts(view):
    page = viz.bertviz_html(view, attention(), TOKENS)
    assert not re.search(r"<script[^>]*\bsrc=", page)  # require.js from the CDN is gone; nothing else is loaded
    assert page.count("</script>") == 1 and page.rstrip().endswith("</script>")  # the libraries cannot end it early
    assert "d3js.org v5.7.0" in page and "jQuery v3.7.1" in page  # inlined from mpld3 and XStatic-jQuery
    assert "var requirejs = function" in page  # bertviz's requirejs([...], f) call is answered locally
    vis_id = re.search(r'id="(bertviz-[0-9a-f]+)"', page).group(1)
    assert f'<div id="{vis_id}-box" style="display:none">' in page  # hidden until the script has run
    assert viz.BERTVIZ_NOTE.replace("'", "&#x27;") in page  # what shows when it cannot run


def test_views_are_distinct_per_call():
    ids = {re.search(r'id="(bertviz-[0-9a-f]+)"', viz.bertviz_html("head_view", attention(), TOKENS)).group(1)
           for _ in range(2)}
    assert len(ids) == 2  # two views in one notebook drive their own elements


def test_head_view_displays_one_html_output(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    viz.head_view(attention(), TOKENS, layer=1)
    assert len(shown) == 1 and "bertviz-" in shown[0].data


def test_without_bertviz_one_calm_sentence(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "bertviz", None)  # import bertviz now fails as if it were not installed
    viz.model_view(attention(), TOKENS)
    assert capsys.readouterr().out == viz.BERTVIZ_MISSING.format(what="bertviz") + "\n"


def test_without_d3_one_calm_sentence(monkeypatch, capsys):
    real_find_spec = viz.importlib.util.find_spec
    monkeypatch.setattr(viz.importlib.util, "find_spec", lambda name: None if name == "mpld3" else real_find_spec(name))
    viz._d3_and_jquery.cache_clear()
    try:
        viz.head_view(attention(), TOKENS)
    finally:
        viz._d3_and_jquery.cache_clear()
    assert capsys.readouterr().out == viz.BERTVIZ_MISSING.format(what="mpld3") + "\n"
