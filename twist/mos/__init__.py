"""twist.mos: the paper's human evaluation (MMOS) as a static listening test, and its scoring.

TWIST (Hassid et al. 2023) backs its main claim, warm start beats cold start, with MMOS, the
meaningfulness MOS of Lakhotia et al. (2021): raters score continuations of the same prompts
from 1 to 5 in half points for grammar, meaning and variety. This package closes the loop
from ``twist-generate`` to that number with nothing hosted:

* :func:`build_page` (:mod:`twist.mos.build`): continuations of several systems, plus the
  original recordings as a top-line and gold items -> a self-contained page (HTML, JS, audio)
  and a private key;
* :func:`rater_plan` (:mod:`twist.mos.plan`): each rater's seeded running order, identical to
  the one the page computes;
* :func:`read_sessions` (:mod:`twist.mos.ratings`): the downloaded ratings files, checked row
  by row;
* :func:`score_ratings` (:mod:`twist.mos.score`): CrowdMOS-style rater screening, MMOS with
  confidence intervals, paired comparisons, a markdown table and a bar chart.

``twist-mos build`` / ``twist-mos score`` are the command lines; ``docs/mos.md`` the manual.
"""

from twist.mos.build import PageSettings, build_page, load_key
from twist.mos.plan import rater_plan
from twist.mos.ratings import read_sessions
from twist.mos.score import Screening, score_ratings

__all__ = ["PageSettings", "Screening", "build_page", "load_key", "rater_plan", "read_sessions", "score_ratings"]
