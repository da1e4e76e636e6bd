"""Diagnostic for the shadow student on the repeat source: at the all-masked state, how often does the
sorted-quantile draw of a run's (base) network marginal at a category noise c (the student's draft of the first
token of a step) equal the draw at the same c of the rollout's teacher: the exact denoiser (an --exact-teacher
run's rollout) and, with --teacher, the teacher network (a network-teacher run's rollout)?  4 000 noises, seed 0.

    PYTHONPATH=. python benchmarks/repeat_draft_match.py RUN [RUN ...] [--teacher TEACHER_RUN]
"""

from __future__ import annotations

import argparse

import torch

from sampler.checkpoint import load_source
from sampler.run.open import InferenceConfig, open_for_inference
from sampler.shadow.noise import sorted_quantile_draw

NUM = 4000


def first_marginal(run: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probs of position 0 at the all-masked state from the run's base network, the exact denoiser's), float64."""
    opened = open_for_inference(InferenceConfig(ckpt=run, device="cpu", threads=1))
    model, meta = opened.model, opened.meta
    base = getattr(model, "base", model)
    source = load_source(meta)
    V, L = source.vocab_size, model.config.seq_len
    z = torch.full((1, L), V)
    with torch.no_grad():
        net = base(z, torch.ones(1))[0, 0].double().log_softmax(-1)
    exact = source.denoiser(V, dtype=torch.float32)(z, torch.ones(1))[0, 0].double()
    return net, exact


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--teacher", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    c = torch.rand(NUM, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    draw = lambda log_p: sorted_quantile_draw(log_p.expand(NUM, -1), c)  # noqa: E731
    teacher = draw(first_marginal(args.teacher)[0]) if args.teacher else None
    for run in args.runs:
        net, exact = first_marginal(run)
        draft = draw(net)
        line = (f"{run}: P(draft == exact draw) = {float((draft == draw(exact)).double().mean()):.5f}; "
                f"max/min probability ratio of the marginal {float((net.max() - net.min()).exp()):.2f}")
        if teacher is not None:
            line += f"; P(draft == teacher network's draw) = {float((draft == teacher).double().mean()):.5f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
