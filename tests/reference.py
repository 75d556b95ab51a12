r"""Per-sample reference solvers of the two proximals: one ``scipy.optimize.minimize`` per
Monte-Carlo sample, as the paper's description of its numerics implies (App. D: "the proximals
are numerically extremized for each sample").

They are slow by design: the benchmarks time them beside the batched solvers of
:mod:`hdlora.theory.prox` and :mod:`hdlora.theory.prox_finetune`, and the tests use them as an
independent check; being an oracle, not part of the theory, they live with the tests.
BFGS with the analytic gradient, from the same starts as the batched solvers.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from hdlora.model import activations
from hdlora.theory.prox import loss_terms as pretrain_loss_terms
from hdlora.theory.prox_finetune import loss_terms as finetune_loss_terms
from hdlora.theory.symmetric import multiplicity


def pretrain_prox_per_sample(
    z_star, z_tilde, V, T, activation="softmax", gtol=1e-10, starts=("z_tilde", "z_star")
):
    """Prox(z*, z̃) of eq. (41), one BFGS per sample and start (z̃, z*); returns h (n, L)."""
    s = multiplicity(T)
    out = np.empty_like(z_tilde)
    for i in range(len(z_tilde)):
        zs, zt = z_star[i : i + 1], z_tilde[i]

        def F(h, zs=zs, zt=zt):
            f, g, _ = pretrain_loss_terms(h[None], zs, T, activation)
            d = h - zt
            return f[0] + (d * d / (2 * V * s)).sum(), g[0] + d / (V * s)

        x0s = {"z_tilde": zt, "z_star": zs[0]}
        runs = [
            minimize(F, x0s[k], jac=True, method="BFGS", options={"gtol": gtol}) for k in starts
        ]
        out[i] = min(runs, key=lambda r: r.fun).x
    return out


def finetune_prox_per_sample(
    chi_star, chi_tilde, z_star, z, q, v, activation="softmax", q0=1.0, gtol=1e-10, starts=2
):
    """prox(χ*, χ̃, z*, z) of eq. (64), one BFGS per sample from χ̃ (and −χ̃ if ``starts=2``);
    returns χ (n, T)."""
    T = chi_star.shape[1]
    eye = np.eye(T)
    sigma = activations.activation(activation)
    Y = sigma(z_star + chi_star[:, :, None] * chi_star[:, None, :] - q0 * eye)
    Zb = z - q * eye
    out = np.empty_like(chi_tilde)
    for i in range(len(chi_tilde)):

        def F(c, i=i):
            f, g, _, _ = finetune_loss_terms(
                c[None], Zb[i : i + 1], Y[i : i + 1], activation, need_hess=False
            )
            d = c - chi_tilde[i]
            return f[0] + d @ d / (2 * v), g[0] + d / v

        runs = [
            minimize(F, x0, jac=True, method="BFGS", options={"gtol": gtol})
            for x0 in (chi_tilde[i], -chi_tilde[i])[:starts]
        ]
        out[i] = min(runs, key=lambda r: r.fun).x
    return out
