"""The shadow student: a few-step student that reads the noise its sampler draws.

- noise: ShadowNoise, its draw from a seed, the sorted-quantile draw and the noise-shared sampler.
- student: the noise-conditioned student network (ShadowStudent), its checkpoint loader and sampler.
- causal_head: the attention head that reads only the noise of tokens revealed earlier.
- recall: the sequential importance bound on a causal shadow student's recall.

The names of `noise` are re-exported here (``from sampler.shadow import noise_shared_sample``).
"""

from .noise import (  # noqa: F401
    REVEAL_METHODS,
    ShadowNoise,
    noise_shared_sample,
    quantile_interval,
    sample_shadow_noise,
    shadow_coupling,
    shadow_step,
    sorted_quantile_draw,
    tempered_weights,
)
