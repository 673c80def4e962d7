"""GPT Workbench: an exact, instrumented GPT-2 for teaching, with lessons and a live app.

The map of the package, module by module, is ``docs/ARCHITECTURE.md``.
"""

from workbench import hf, trace
from workbench.checkpoint import load_model, save_checkpoint
from workbench.generate import SamplingConfig, generate, stream
from workbench.model import GPT, GPTConfig, KVCache
from workbench.records import Generation, LogitLens, Step
from workbench.trace import Trace

# GPT's methods that need the modules built on model.py. Python runs this file before any module of the package, so
# every GPT has them, while model.py itself imports only torch and no import runs in a circle.
GPT.run_with_trace = trace.run_with_trace
GPT.from_hf = staticmethod(hf.from_hf)
GPT.to_hf = hf.to_hf

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
