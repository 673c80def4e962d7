"""Test-wide settings. Nothing in the tests may reach the network: Hugging Face is put in offline mode before
any test imports it, so a hub id fails at once instead of trying to download."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
