"""GPT Workbench: an exact, instrumented GPT-2 for teaching, with lessons and a live app."""

from workbench.model import GPT, GPTConfig, KVCache
from workbench.trace import LogitLens, Trace

__all__ = ["GPT", "GPTConfig", "KVCache", "LogitLens", "Trace"]
