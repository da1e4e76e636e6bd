"""Training: one loop (loop.py) that takes a step function, its runtime (runtime.py), the typed
configs composed from shared parts (config.py), and the commands' step functions: the teacher's
ELBO step (teacher.py), the MCD step and its rounds (distill.py), the stochastic baseline (baseline.py)."""

from .config import DistillConfig, OptimConfig, RunConfig, TrainConfig
from .distill import distill
from .teacher import TrainingStopped, evaluate_elbo, train

__all__ = ["OptimConfig", "RunConfig", "TrainConfig", "DistillConfig", "train", "distill", "TrainingStopped", "evaluate_elbo"]
