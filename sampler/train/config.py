"""The typed configurations of the training commands (`TrainConfig`, `DistillConfig` and their shared parts),
the rounds' step counts and temperatures, and the resume rule.  They are defined in `sampler.configs`, which
imports no torch, so that `mcd train` and `mcd distill` check their arguments before torch loads; this module
is their home inside the training package and re-exports every public name."""

from __future__ import annotations

from ..configs import *  # noqa: F401,F403  (every public name of sampler.configs)
