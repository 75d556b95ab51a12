"""Warnings of the project: every solver reports a doubtful result through Python's
:mod:`warnings` (visible in notebooks and scripts, silenced or turned into errors by the standard
filters), and says the same in its result record (``converged``, ``message``, replicon verdicts).

Categories (all subclasses of :class:`HdloraWarning`):

* :class:`ConvergenceWarning`: a fixed point or an L-BFGS fit stopped before its tolerance;
* :class:`ProximalWarning`: some Monte-Carlo samples of a proximal did not reach tolerance;
* :class:`RepliconWarning`: the replicon (75)/(78) of a theory point is ≥ 1, so the
  replica-symmetric prediction need not describe the minimisers;
* :class:`StartsDisagreeWarning`: simulation starts reached different minima.
"""

from __future__ import annotations

import warnings


class HdloraWarning(UserWarning):
    """Base class of the warnings of hdlora."""


class ConvergenceWarning(HdloraWarning):
    """A solver stopped before reaching its tolerance."""


class ProximalWarning(HdloraWarning):
    """Some samples of a batched proximal did not reach their tolerance."""


class RepliconWarning(HdloraWarning):
    """A replica-symmetric fixed point whose replicon is >= 1 (App. A.6)."""


class StartsDisagreeWarning(HdloraWarning):
    """Several starts of a simulation reached different minima."""


def warn(category: type[HdloraWarning], message: str, stacklevel: int = 3) -> None:
    """``warnings.warn(message, category)`` pointing at the caller's caller."""
    warnings.warn(message, category, stacklevel=stacklevel)
