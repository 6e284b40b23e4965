"""How often a run computes its validation loss when its config does not say.

A validation pass costs about as much as a few optimiser steps, so a short run that checked
after every step (one in ten of a ten-step run's steps, rounded up, is every step) spent
most of its time validating. The rule lives here, in one function, so the engine and anyone
who explains a run (the form, the estimate) give the same answer.
"""

from __future__ import annotations

import math

# Validations over a run when nothing else limits them: enough points for a curve.
TIMES_PER_RUN = 10
# Never closer than this many optimiser steps apart: on a short run, the end of the run
# (always validated) and a few points between are enough.
MIN_STEPS_APART = 5


def validation_interval(total_steps: int, asked: int | None = None) -> int:
    """Steps between validation passes (the last step is always validated too): ``asked``
    when the config sets ``eval_every``, else about ten over the run and never fewer than
    ``MIN_STEPS_APART`` steps apart; a run shorter than that is validated at its end only."""
    if asked is not None:
        return max(1, asked)
    total = max(1, total_steps)
    return max(MIN_STEPS_APART, math.ceil(total / TIMES_PER_RUN))
