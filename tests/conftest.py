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


def pytest_collection_modifyitems(config, items) -> None:
    """Under pytest-xdist (`-n 2`, what CI runs) the tests marked `slow` go first, so the two workers share the
    long runs and no long run starts last on one worker while the other sits idle.  A plain run keeps file order."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: file order within each kind
