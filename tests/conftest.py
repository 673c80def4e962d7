"""Test-wide settings. Nothing in the tests may reach the network: Hugging Face is put in offline mode before
any test imports it, so a hub id fails at once instead of trying to download."""

import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module (tests/chromium.py)."""
    from playwright.sync_api import sync_playwright

    from chromium import ARGS, CHROMIUM

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()
