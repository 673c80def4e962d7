"""Exercise checks for the lessons: run the student's code beside the reference, say what is likely wrong.

Every ``check_*`` function takes the student's function (or ``nn.Module`` class), runs it and the reference on
fresh random inputs at several shapes, and prints one line:

* ``✓ name: ...`` when every output matches the reference within a float32 tolerance;
* ``✗ name: <one hint>`` otherwise. The hint comes from the first thing that is off: an exception, the output's
  type or shape, an input changed in place, a NaN, or -- when the output matches one of the *known mistakes*
  (the reference computed with a planted error such as a missing 1/sqrt(d_k)) -- what that mistake is;
* ``○ name: not implemented yet`` when the student's code still raises ``NotImplementedError``.

Every line is printed in English or in Chinese: ``use_language("zh")`` switches (each message is a ``say(english,
chinese)``). Checks return a :class:`Verdict`, true when the check passed, which a notebook does not display (so no
stray ``True`` under the verdict line), and never raise, so a notebook runs on to the end whatever state it is in.
References come from :mod:`workbench.model` (or torch, where the workbench uses torch's function itself).

Planted mistakes are part of what a check is, and tests and teacher notes rely on them, so where a check plants
them with switches its module makes them public: ``<name>_variant(...)`` is the reference written out, correct
with every switch at its default, and ``<NAME>_MISTAKES`` maps each hint to the switches that plant its mistake
(``checks.sampling.TOP_P_MISTAKES`` and ``checks.sampling.top_p_variant``, say). A test builds its wrong
implementations from them instead of retyping the mistakes.
"""

# One module per part of the course, so a lesson's checks stay next to each other and short. Notebooks call them
# as ``checks.check_<name>``; every check is re-exported here.
from workbench.checks.core import Hint, Say, Verdict, language, run_check, say, use_language  # noqa: F401
from workbench.checks.quiz import check_quiz  # noqa: F401
from workbench.checks.tokens import *  # noqa: F401,F403  lessons 01-02
from workbench.checks.attention import *  # noqa: F401,F403  lessons 03-04
from workbench.checks.blocks import *  # noqa: F401,F403  lessons 05-06
from workbench.checks.training import *  # noqa: F401,F403  lesson 07
from workbench.checks.sampling import *  # noqa: F401,F403  lesson 08, sampling
from workbench.checks.kv_cache import *  # noqa: F401,F403  lesson 08, the KV cache
from workbench.checks.inside import *  # noqa: F401,F403  lesson 09
from workbench.checks.encoder_decoder import *  # noqa: F401,F403  lesson 10
from workbench.checks.real_gpt2 import *  # noqa: F401,F403  lessons 11-13
from workbench.checks.assistant import *  # noqa: F401,F403  lesson 15
from workbench.checks.modern import *  # noqa: F401,F403  lesson 14
