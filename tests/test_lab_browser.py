"""The lessons' bertviz views in a real JupyterLab, in Debian's chromium driven by Playwright, offline.

bertviz used to fetch require.js, d3 and jQuery from a CDN: offline, JupyterLab showed a red "Javascript Error:
require is not defined" box and an empty "Layer:" dropdown. ``workbench.viz.head_view``/``model_view`` inline those
scripts (from installed pip packages). Here a JupyterLab server on 127.0.0.1 runs lesson 04 top to bottom (a copy,
in a temporary folder: the lesson file is never written), then a small notebook with a model view; each page must
show the view, no JavaScript error, and ask no host but 127.0.0.1 for anything. A notebook opened with a saved
(so untrusted) view shows the calm sentence instead of an empty view. Waits are generous and nothing is timed: the
machine may be busy.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output
from playwright.sync_api import Page, expect

from workbench import viz

LESSONS = Path(__file__).resolve().parent.parent / "lessons"
LESSON = "04_multihead.ipynb"  # the head view; lesson 09's model view is the small notebook's
RUN_TIMEOUT_MS = 300_000  # the whole lesson, on a busy machine
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
BOX = 'div[id^="bertviz-"][id$="-box"]'  # the view, hidden until its script has run
NOTE = 'p[id^="bertviz-"][id$="-note"]'  # the calm sentence, removed once the view shows


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a free port of 127.0.0.1, with a token, serving a temporary folder; its own config,
    runtime, settings and workspace folders (nothing from the user's); no news or update checks."""
    home = tmp_path_factory.mktemp("lab")
    root = home / "notebooks"
    root.mkdir()
    settings = home / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # Every cell in the page (not only those in view), so that the checks see every output.
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               WORKBENCH_QUICK="1")
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=0",
           "--ServerApp.allow_root=True",  # CI runs as root
           "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly",
           f"--LabApp.user_settings_dir={home / 'settings'}", f"--LabApp.workspaces_dir={home / 'workspaces'}"]
    log = (home / "server.log").open("w")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (home / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, (home / "server.log").read_text()[-3000:]
            time.sleep(1)
        yield dict(base=base, token=token, root=root, log=home / "server.log")
    finally:
        server.terminate()  # the server shuts its kernels down
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def open_notebook(browser, lab, name: str) -> Page:
    """A page with JupyterLab on ``name``, its kernel ready; every URL it asks for lands in ``page.requests``."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.requests, page.errors = [], []
    page.on("request", lambda request: page.requests.append(request.url))
    page.on("pageerror", lambda err: page.errors.append(str(err)))
    # A workspace of its own: the default one would reopen the notebooks of the pages before.
    page.goto(f"{lab['base']}/lab/workspaces/{secrets.token_hex(4)}/tree/{name}?token={lab['token']}")
    page.wait_for_function("name => window.jupyterapp && jupyterapp.shell.currentWidget && "
                           "jupyterapp.shell.currentWidget.context && jupyterapp.shell.currentWidget.context.path "
                           "=== name", arg=name, timeout=120_000)
    page.evaluate("""() => { const w = jupyterapp.shell.currentWidget; window.__ready = false;
        Promise.all([w.context.ready, w.sessionContext.ready]).then(() => { window.__ready = true; }); }""")
    page.wait_for_function("() => window.__ready", timeout=120_000)
    return page


def run_all(page: Page) -> None:
    """Run every cell, as Run > Run All Cells does, and wait for the last one; fails if any cell failed."""
    page.evaluate("""() => { window.__ran = undefined;
        jupyterapp.commands.execute('notebook:run-all-cells').then(
            ok => { window.__ran = String(ok); }, err => { window.__ran = 'error: ' + err; }); }""")
    page.wait_for_function("() => window.__ran !== undefined", timeout=RUN_TIMEOUT_MS)
    assert page.evaluate("window.__ran") == "true", page.locator(".jp-OutputArea-output[data-mime-type="
                                                                 "'application/vnd.jupyter.stderr']").all_inner_texts()


def assert_offline_and_calm(page: Page) -> None:
    text = page.locator("body").inner_text()
    assert "Javascript Error" not in text and "require is not defined" not in text
    assert not [e for e in page.errors if "require" in e or "bertviz" in e], page.errors
    outside = {urlsplit(u).hostname for u in page.requests if urlsplit(u).scheme in ("http", "https", "ws", "wss")}
    assert outside <= {"127.0.0.1"}, sorted(u for u in page.requests if urlsplit(u).hostname != "127.0.0.1")


def test_lesson_04_shows_bertviz_head_view_offline(browser, lab):
    shutil.copy(LESSONS / LESSON, lab["root"] / LESSON)
    page = open_notebook(browser, lab, LESSON)
    run_all(page)
    box = page.locator(BOX)
    expect(box).to_have_count(1)
    expect(box.locator("svg").first).to_be_visible(timeout=30_000)
    expect(box.locator("select#layer option")).not_to_have_count(0)  # the dropdown that stayed empty
    expect(page.locator(NOTE)).to_have_count(0)
    assert_offline_and_calm(page)
    page.close()


def test_model_view_shows_offline(browser, lab):
    source = ("import torch\nfrom workbench import viz\n\ntorch.manual_seed(0)\n"
              "attention = [torch.softmax(torch.randn(1, 4, 6, 6), -1) for _ in range(2)]  # 2 layers, 4 heads\n"
              "viz.model_view(attention, list('abcdef'))")
    nbformat.write(new_notebook(cells=[new_code_cell(source)], metadata={"kernelspec": KERNELSPEC}),
                   lab["root"] / "model_view.ipynb")
    page = open_notebook(browser, lab, "model_view.ipynb")
    run_all(page)
    expect(page.locator(BOX).locator("svg").first).to_be_visible(timeout=30_000)
    expect(page.locator(NOTE)).to_have_count(0)
    assert_offline_and_calm(page)
    page.close()


def test_a_saved_view_shows_the_calm_sentence(browser, lab):
    """Opened later, a notebook's outputs are untrusted: JupyterLab runs none of their scripts. The note stays."""
    import torch

    attention = [torch.softmax(torch.randn(1, 2, 3, 3), -1)]
    cell = new_code_cell("viz.head_view(attention, tokens)", execution_count=1, outputs=[
        new_output("display_data", data={"text/html": viz.bertviz_html("head_view", attention, list("abc")),
                                         "text/plain": "<IPython.core.display.HTML object>"})])
    nbformat.write(new_notebook(cells=[cell], metadata={"kernelspec": KERNELSPEC}), lab["root"] / "saved.ipynb")
    page = open_notebook(browser, lab, "saved.ipynb")
    # JupyterLab's sanitizer strips the ids of untrusted HTML: the sentence is found by its text.
    expect(page.get_by_text(viz.BERTVIZ_NOTE)).to_be_visible(timeout=30_000)
    expect(page.locator(".jp-RenderedHTMLCommon svg")).to_have_count(0)
    expect(page.get_by_text("Layer:")).not_to_be_visible()  # no empty view beside the sentence
    assert_offline_and_calm(page)
    page.close()
