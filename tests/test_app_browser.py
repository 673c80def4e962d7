"""The app in a real browser (Debian's chromium, driven by Playwright), on the shipped model.

Generation streams tokens into the page, the plotly views render, clicking a token moves them, Stop stops, the
page asks nothing of any host but the server, and the Chinese UI follows the browser's language. One test writes
the README screenshot, assets/app.png.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from workbench import load_model
from workbench.app import build_app, serve

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
MODEL = "shakespeare"
SCREENSHOT = Path(__file__).resolve().parent.parent / "assets" / "app.png"
TOKENS = "#tokens .token"


@pytest.fixture(scope="module")
def url():
    model, tok = load_model(MODEL, device="cpu")  # fails, not skips, when the shipped model is missing
    demo = build_app(model, tok, model_name=MODEL, max_new_tokens_cap=512, concurrency=2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, local_url, _ = serve(demo, port=port, prevent_thread_lock=True, quiet=True)
    yield local_url
    demo.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    page = context.new_page()
    page.requests = []  # every URL the page asks for, to check that none leaves the server
    page.on("request", lambda request: page.requests.append(request.url))
    page.goto(url)
    page.wait_for_selector("#generate")
    yield page
    context.close()


def generate(page: Page, prompt: str, max_new_tokens: int) -> None:
    """Fill the prompt and the token count, press Generate."""
    page.fill("#prompt textarea", prompt)
    page.fill("#max-new-tokens input[type=number]", str(max_new_tokens))
    page.press("#max-new-tokens input[type=number]", "Enter")
    page.click("#generate")


def heatmap_title(page: Page) -> str:
    return page.locator("#heatmap .gtitle").text_content()


def test_generate_shows_tokens_and_views_and_a_click_moves_them(page, url):
    generate(page, "ROMEO:", 30)
    expect(page.locator("#status")).to_contain_text("done", timeout=60_000)
    assert page.locator(TOKENS).count() >= 30  # the prompt's tokens and 30 new ones
    for view in ("#heatmap", "#head-grid", "#lens", "#topk", "#pipeline"):
        expect(page.locator(f"{view} .js-plotly-plot .main-svg").first).to_be_visible()
    assert "step 29:" in heatmap_title(page)
    lens_before = page.locator("#lens .gtitle").text_content()

    n_prompt = page.locator(TOKENS).count() - 30
    page.locator(TOKENS).nth(n_prompt + 4).click()  # the fifth generated token
    expect(page.locator("#heatmap .gtitle")).to_contain_text("step 4:")
    expect(page.locator("#topk .gtitle")).to_contain_text("step 4:")
    assert page.locator("#lens .gtitle").text_content() != lens_before
    assert page.locator("#step input[type=number]").input_value() == "4"

    page.get_by_label("Head").click()  # the views follow the chosen head too
    page.get_by_role("option", name="H3").click()
    expect(page.locator("#heatmap .gtitle")).to_contain_text("H3 ·")
    assert_stayed_local(page, url)


def test_stop_stops_the_stream(page, url):
    generate(page, "First Citizen:", 500)
    expect(page.locator(TOKENS)).not_to_have_count(0, timeout=30_000)
    page.wait_for_function("document.querySelectorAll('#tokens .token').length > 12", timeout=60_000)
    page.click("#stop")
    page.wait_for_timeout(1500)  # let any token already on its way arrive
    stopped = page.locator(TOKENS).count()
    page.wait_for_timeout(1500)
    assert page.locator(TOKENS).count() == stopped  # nothing more arrives once stopped
    assert stopped < 500
    assert_stayed_local(page, url)


def test_chinese_ui_follows_the_browser_language(browser, url):
    context = browser.new_context(locale="zh-CN")
    page = context.new_page()
    page.goto(url)
    expect(page.locator("#generate")).to_have_text("生成", timeout=30_000)
    expect(page.locator("#stop")).to_have_text("停止")
    context.close()


def test_screenshot_for_the_readme(page, url):
    page.set_viewport_size({"width": 1400, "height": 1250})  # down to the attention views
    generate(page, "ROMEO:", 60)
    expect(page.locator("#status")).to_contain_text("done", timeout=60_000)
    n_prompt = page.locator(TOKENS).count() - 60
    page.locator(TOKENS).nth(n_prompt + 20).click()
    expect(page.locator("#heatmap .gtitle")).to_contain_text("step 20:")
    page.wait_for_timeout(500)  # plotly's transition
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))
    assert 0 < SCREENSHOT.stat().st_size < 500_000


def assert_stayed_local(page: Page, url: str) -> None:
    """Every request the page made went to the app's own server (data: and blob: URLs never leave the page)."""
    outside = [u for u in page.requests if not u.startswith((url.rstrip("/"), "data:", "blob:"))]
    assert page.requests and outside == []
