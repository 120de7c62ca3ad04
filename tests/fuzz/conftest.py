"""Hypothesis settings for the fuzz tests: one profile, derandomized (the same cases on every run and machine,
so CI is stable), no deadline (a shared 2-core machine has slow moments), no example database written into the
checkout. ``EMOCA_FUZZ_PROFILE=thorough`` runs ten times the cases with fresh randomness, for a local hunt."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("emoca", derandomize=True, deadline=None, database=None, suppress_health_check=_QUIET)
settings.register_profile("thorough", deadline=None, database=None, suppress_health_check=_QUIET)
settings.load_profile(os.environ.get("EMOCA_FUZZ_PROFILE", "emoca"))
