"""Test-suite setup: runtime shape and type checking of every jaxtyping annotation.

The import hook must be installed before the project's packages are imported, so it
lives at the top of the root conftest.
"""

from jaxtyping import install_import_hook

install_import_hook(["theory", "duality", "sampler", "proofs_checks"], "beartype.beartype")

import os  # noqa: E402

import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

# Two cores, often shared: one torch thread is faster and keeps runs reproducible.
torch.set_num_threads(1)

# CI draws the same examples every run (seeded, like every Monte Carlo test here); dev explores new ones.
settings.register_profile("ci", deadline=None, print_blob=True, derandomize=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
