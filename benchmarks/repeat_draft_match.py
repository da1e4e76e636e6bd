"""Diagnostic: at the all-masked state, does the sorted-quantile draw of a network's marginal at c equal the exact
denoiser's draw at the same c (the rollout's first token)?  And the network's own draft vs a copy of itself."""
import sys, torch
from sampler.checkpoint import InferenceConfig, open_for_inference, load_source
from sampler.shadow import sorted_quantile_draw
torch.set_num_threads(1)
for run in sys.argv[1:]:
    model, meta, schedule, _ = open_for_inference(InferenceConfig(ckpt=run, device="cpu", threads=1))
    base = getattr(model, "base", model)
    source = load_source(meta); V = source.vocab_size; L = 10
    z = torch.full((1, L), V)
    net = base(z, torch.ones(1))[0, 0].double().log_softmax(-1)
    exact = source.denoiser(V, dtype=torch.float32)(z, torch.ones(1))[0, 0].double()
    c = torch.rand(4000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    d_net = sorted_quantile_draw(net.expand(4000, V), c); d_exact = sorted_quantile_draw(exact.expand(4000, V), c)
    print(run, "P(draft == exact draw) =", float((d_net == d_exact).double().mean()),
          "| max/min prob ratio of net marginal:", float((net.max() - net.min()).exp()))
