"""GPT Workbench: an exact, instrumented GPT-2 for teaching, with lessons and a live app."""

from workbench.checkpoint import load_model, save_checkpoint
from workbench.generate import Generation, SamplingConfig, Step, generate, stream
from workbench.model import GPT, GPTConfig, KVCache
from workbench.trace import LogitLens, Trace

__all__ = [
    "GPT",
    "GPTConfig",
    "Generation",
    "KVCache",
    "LogitLens",
    "SamplingConfig",
    "Step",
    "Trace",
    "generate",
    "load_model",
    "save_checkpoint",
    "stream",
]
