"""sampler: teacher model, data sources, training, samplers, evaluation and masked consistency distillation."""
