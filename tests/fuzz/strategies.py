"""Hypothesis strategies shared by the fuzz tests: JSON values, and values of the protocol's wire types."""

from __future__ import annotations

import os
import typing
from typing import Any

from hypothesis import strategies as st


def examples(n: int) -> int:
    """``n`` cases in the suite's profile, ten times as many in the thorough one (``EMOCA_FUZZ_PROFILE``)."""
    return n * 10 if os.environ.get("EMOCA_FUZZ_PROFILE") == "thorough" else n


# any JSON value (NaN and infinities included: Python's json reads and writes them)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats()
    | st.text(max_size=40)
)


def _containers(inner: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)


JSON = st.recursive(SCALARS, _containers, max_leaves=12)


def wire_values(want: Any) -> st.SearchStrategy:
    """Values of the wire type ``want`` (emoca_contract.protocol's type language); a class that is not a JSON type
    has no JSON values (nothing is drawn for it)."""
    if want is Any:
        return JSON
    if want is None or want is type(None):
        return st.none()
    origin, args = typing.get_origin(want), typing.get_args(want)
    if args and origin not in (list, tuple, dict):  # a union
        return st.one_of([wire_values(a) for a in args])
    if origin in (list, tuple):
        return st.lists(wire_values(args[0]), max_size=4)
    if origin is dict:
        return st.dictionaries(st.text(max_size=12), wire_values(args[1]), max_size=3)
    simple = {
        str: st.text(max_size=24),
        int: st.integers(),
        float: st.floats() | st.integers(),
        bool: st.booleans(),
        dict: st.dictionaries(st.text(max_size=12), JSON, max_size=3),
        list: st.lists(JSON, max_size=3),
    }
    return simple.get(want, st.nothing())


def typed_or_not(want: Any) -> st.SearchStrategy:
    """Mostly a value of the right type (to reach the checks behind the type check), sometimes any JSON."""
    return st.one_of(wire_values(want), wire_values(want), JSON)
