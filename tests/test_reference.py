"""The batched proximals against the per-sample scipy reference (tests/reference.py)."""

import numpy as np
from reference import finetune_prox_per_sample, pretrain_prox_per_sample

from hdlora.theory.prox import pretrain_prox
from hdlora.theory.prox_finetune import finetune_prox
from hdlora.theory.symmetric import multiplicity


def test_pretrain_prox_matches_the_reference():
    rng = np.random.default_rng(0)
    T, n = 3, 60
    s = multiplicity(T)
    zs = rng.standard_normal((n, 6)) * np.sqrt(2.25 * s)
    zt = 0.5 * zs + rng.standard_normal((n, 6)) * np.sqrt(0.4 * s)
    batched = pretrain_prox(zs, zt, 1.5, T).h
    ref = pretrain_prox_per_sample(zs, zt, 1.5, T)
    assert np.abs(batched - ref).max() < 1e-6


def test_finetune_prox_matches_the_reference():
    rng = np.random.default_rng(1)
    T, n = 3, 60
    cs = rng.standard_normal((n, T))
    ct = 0.6 * cs + 0.6 * rng.standard_normal((n, T))
    zs = rng.standard_normal((n, T, T))
    zs = zs + np.swapaxes(zs, 1, 2)
    z = 0.5 * zs
    batched = finetune_prox(cs, ct, zs, z, 0.5, 0.8).chi
    ref = finetune_prox_per_sample(cs, ct, zs, z, 0.5, 0.8)
    assert np.abs(batched - ref).max() < 1e-6
