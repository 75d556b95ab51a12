"""Run profiles of the notebooks: ``smoke`` (CI, seconds), ``quick`` (a 2-core CPU, the default
of ``make figures``), ``paper`` (the paper's sizes; a GPU if present)."""

from __future__ import annotations

from typing import TypeVar

PROFILES = ("smoke", "quick", "paper")

T = TypeVar("T")


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got profile={profile!r}")
    return profile


def choose(profile: str, *, smoke: T, quick: T, paper: T) -> T:
    """The value of the setting for ``profile``."""
    return {"smoke": smoke, "quick": quick, "paper": paper}[check_profile(profile)]
