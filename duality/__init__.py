"""duality: the Gaussian-masked duality as code shared by the verification suite and the sampler.

- project / latent_sample: the max-value-index-preserving projection of w_t = α̃(t)·e_{x0} + σ̃(t)·ε.
- MaskedCoupling: coupled (nested) masked trajectories from one noise draw per token, by the
  "gaussian" definition, the exact O(1) "threshold" draw, or the "uniform" draw (equal in law).
- forward: q_sample, posterior_step, reverse_unmask_prob, elbo_weight of the masked process.
"""

from .coupling import (
    METHODS,
    MaskedCoupling,
    max_of_standard_normals,
    sample_threshold,
    threshold_statistic,
)
from .forward import elbo_weight, posterior_step, q_sample, reverse_unmask_prob
from .projection import latent_sample, project

__all__ = [
    "project",
    "latent_sample",
    "MaskedCoupling",
    "METHODS",
    "max_of_standard_normals",
    "sample_threshold",
    "threshold_statistic",
    "q_sample",
    "posterior_step",
    "reverse_unmask_prob",
    "elbo_weight",
]
