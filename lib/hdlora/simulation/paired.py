r"""The paired gain of Algorithm 1: uniform and active selection from one pool (§4, Fig. 4).

The gain of active fine-tuning, ΔE' = E'(uniform) − E'(Alg. 1), is a small difference of two
errors that each fluctuate, at finite D, with the teacher, the frozen fields and the sequences.
Simulated apart, the two protocols add those fluctuations; simulated *paired*, one run draws one
teacher w*, one pool of N̄' = N'/ρ candidate frozen fields (law 𝒬, Result 1), one set of N'
training sequences X and one test set, and the two protocols differ only in which N' of the pool
they label:

* uniform: the pool's first N' (the candidates are i.i.d., so this is a uniform random subset);
* active: Algorithm 1's N' (:func:`~hdlora.simulation.active.active_order`).

Both are fine-tuned at every λ' of a grid (:mod:`hdlora.harness.paired` takes the gain at each
λ' and at the best λ' of each protocol). What the two share (the teacher, the test set, the
sequences by position, the candidates both select) cancels from the difference; Fig. 4's
notebook prints how far its spread across runs falls below that of either error.
"""

from __future__ import annotations

import time

from hdlora.model.data import stream_generators
from hdlora.observables import Observables
from hdlora.params import Params
from hdlora.simulation.active import check_rho
from hdlora.simulation.finetune_only import STREAMS, FinetuneExperiment, draw_frozen_fields
from hdlora.simulation.measure import delta_eff_hat


class UniformFromPool(FinetuneExperiment):
    """The uniform protocol of a paired run: the :class:`FinetuneExperiment` of Algorithm 1 at
    the same (params, effective, D, seed, ρ), with the training fields replaced by the first N'
    candidates of the same pool (the same stream, drawn again). Teacher, X and the test set are
    the active experiment's, by construction."""

    def __init__(self, params: Params, effective, D: int, seed: int = 0, *, rho: float, **kw):
        super().__init__(params, effective, D, seed, rho=rho, **kw)
        g = stream_generators(self.seed, STREAMS, spawn_key=(2,))
        z_star_pool, z_pool = draw_frozen_fields(
            self.n_candidates, self.T, self.effective, params.Delta, g["fields"]
        )
        n = self.sizes.N_ft
        z_star_ext, z = z_star_pool[:n], z_pool[:n]
        self.train_delta_eff_hat = delta_eff_hat(z, z_star_ext)
        conv = dict(device=self.device, dtype=self.dtype)
        self.z = z.to(**conv)
        self.train = self._labelled(self.train.X, z_star_ext.to(**conv))

    def observables(self, w, fit=None, wall_time: float = float("nan")) -> Observables:
        """The record of :class:`FinetuneExperiment`, with ``selection`` = "uniform" (``rho``
        stays the pool's ratio: the uniform N' came from N'/ρ candidates)."""
        return super().observables(w, fit, wall_time).replace(selection="uniform")


def simulate_paired(
    params: Params,
    effective,
    D: int,
    seed: int = 0,
    *,
    rho: float,
    lam_fts,
    progress: bool | None = None,
    **options,
) -> list[Observables]:
    r"""One paired run: both selections of one pool (:class:`UniformFromPool`, Algorithm 1)
    fine-tuned at every λ' of ``lam_fts``.

    Parameters
    ----------
    params : T, Δ, α' (= ρ ᾱ'), σ; ``lam_ft`` is replaced by each of ``lam_fts``.
    effective : the frozen map (Q0, Q, M), as :func:`~hdlora.simulation.simulate_finetune`.
    rho : the labelling ratio N'/N̄' ∈ (0, 1].
    lam_fts : the λ' grid, both protocols.
    options : the starts and the minimiser (``n_init``, ``teacher_start``, ``gtol``, …) of
        :meth:`FinetuneExperiment.finetune`; ``n_test``, ``teacher``, ``device``, ``dtype``.

    Returns 2·len(lam_fts) :class:`Observables`, uniform then active, λ' in the order given;
    ``info["paired"]`` is True and ``wall_time`` is each fit's own time.
    """
    if check_rho(rho) is None:
        raise ValueError("simulate_paired needs a labelling ratio rho in (0, 1], got rho=None")
    build = {k: options.pop(k) for k in ("n_test", "teacher", "device", "dtype") if k in options}
    out = []
    for cls in (UniformFromPool, FinetuneExperiment):
        exp = cls(params, effective, D, seed, rho=rho, **build)
        for lam_ft in lam_fts:
            t0 = time.perf_counter()
            exp.params = params.replace(lam_ft=float(lam_ft))  # the record's λ'
            fit = exp.finetune(float(lam_ft), progress=progress, **options)
            rec = exp.observables(fit.x, fit, wall_time=time.perf_counter() - t0)
            out.append(rec.replace(info={**rec.info, "paired": True}))
    return out
