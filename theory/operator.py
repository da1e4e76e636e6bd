"""PLACEHOLDER (helper A replaces this file)."""
def masked_alpha(nu, vocab_size, complement=False): raise NotImplementedError
def masked_alpha_deriv(nu, vocab_size): raise NotImplementedError
def log_masked_alpha(nu, vocab_size, complement=False): raise NotImplementedError
def nu_from_masked_alpha(alpha, vocab_size): raise NotImplementedError
def uniform_alpha(nu, vocab_size): raise NotImplementedError
