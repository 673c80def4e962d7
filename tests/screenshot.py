"""The README's picture of the app: ``make screenshot`` (or ``python tests/screenshot.py PATH``) serves the shipped
model, generates 60 tokens in Chromium at 1280x720 and saves the page with step 20 selected. The browser tests call
:func:`take_screenshot` with a temporary path, so a test run never rewrites the tracked picture."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from chromium import ARGS, CHROMIUM



def take_screenshot(page: Page, path: Path) -> Path:
    """Generate 60 tokens from "ROMEO:" in ``page`` (the app, already open), select step 20, save to ``path``."""
    page.fill("#prompt textarea", "ROMEO:")
    page.fill("#max-new-tokens input[type=number]", "60")
    page.press("#max-new-tokens input[type=number]", "Enter")
    page.click("#generate")
    page.wait_for_function("document.querySelector('.wb').dataset.state === 'done'", timeout=120_000)
    n_prompt = page.locator(".wb-tok-prompt").count()
    page.locator(".wb-strip .wb-tok").nth(n_prompt + 20).click()
    page.wait_for_function("document.querySelector('.wb').dataset.sel === '20'")
    page.wait_for_timeout(300)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, nargs="?", default=Path("assets/app.png"),
                        help="where to write the PNG (default: %(default)s)")
    args = parser.parse_args()
    from workbench import load_model
    from workbench.app import build_app, serve

    model, tok = load_model("shakespeare", device="cpu")
    demo = build_app(model, tok, model_name="shakespeare", concurrency=1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = serve(demo, port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 720}, locale="en-US")
            page.goto(url)
            page.wait_for_selector(".wb")
            print("wrote", take_screenshot(page, args.path))
            browser.close()
    finally:
        demo.close()


if __name__ == "__main__":
    main()
