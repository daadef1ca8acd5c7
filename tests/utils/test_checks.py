"""modelguard.utils.checks.check_number: accepted values, refused values, the message."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

from modelguard.utils.checks import check_number

FIX = "set defense.eps=1.0"


@pytest.mark.parametrize("value, expected", [
    (1, 1.0), (0.5, 0.5), (np.float32(0.25), 0.25), (np.float64(2.0), 2.0), (np.int64(3), 3.0),
])
def test_accepts_real_numbers_and_returns_a_float(value, expected):
    out = check_number(value, "defense.eps", low=0, low_open=True, fix=FIX)
    assert out == expected and type(out) is float


@pytest.mark.parametrize("value", [0, 3, np.int64(7), np.int32(2)])
def test_integer_knob_returns_an_int(value):
    out = check_number(value, "defense.decimals", low=0, integer=True, fix="set defense.decimals=1")
    assert out == int(value) and type(out) is int


@pytest.mark.parametrize("value", [True, False, "1", "1.0", None, [1.0], float("nan"),
                                   float("inf"), -float("inf"), np.float64("nan")])
def test_refuses_non_numbers_bools_nan_and_inf(value):
    with pytest.raises(ValueError) as err:
        check_number(value, "defense.eps", low=0, low_open=True, fix=FIX)
    msg = str(err.value)
    assert msg.startswith(f"defense.eps={value!r} is invalid: ")  # names the knob and the value
    assert "eps must be a finite number > 0" in msg  # what is allowed
    assert msg.endswith("; " + FIX)  # and the fix


@pytest.mark.parametrize("value", [1.0, 2.5, np.float64(1.0)])
def test_integer_knob_refuses_floats(value):
    with pytest.raises(ValueError, match=re.escape(f"defense.k={value!r} is invalid: k must be an integer ≥ 1")):
        check_number(value, "defense.k", low=1, integer=True, fix="set defense.k=1")


@pytest.mark.parametrize("kwargs, good, bad, span", [
    (dict(low=0), [0, 0.0, 1e-300, 5], [-1e-300, -1], " ≥ 0"),
    (dict(low=0, low_open=True), [1e-300, 7], [0, -0.0, -2], " > 0"),
    (dict(high=1), [1, -5], [1.0000001], " ≤ 1"),
    (dict(high=1, high_open=True), [0.999], [1, 2], " < 1"),
    (dict(low=0, high=1), [0, 0.5, 1], [-0.1, 1.5], " in [0, 1]"),
    (dict(low=0, high=1, low_open=True, high_open=True), [0.5], [0, 1], " in (0, 1)"),
    (dict(low=1e-6), [1e-6], [9e-7], " ≥ 1e-06"),
    (dict(), [-1e300, 0, 1e300], [], ""),
])
def test_ranges(kwargs, good, bad, span):
    for v in good:
        assert check_number(v, "quantize.eps", fix="set quantize.eps=1.0", **kwargs) == v
    for v in bad:
        with pytest.raises(ValueError) as err:
            check_number(v, "quantize.eps", fix="set quantize.eps=1.0", **kwargs)
        assert str(err.value) == (f"quantize.eps={v!r} is invalid: eps must be a finite number{span}; "
                                  f"set quantize.eps=1.0")


def test_note_and_exact_message():
    with pytest.raises(ValueError) as err:
        check_number(-1, "defense.eps", low=0, note="the utility budget ‖y' − y‖", fix=FIX)
    assert str(err.value) == ("defense.eps=-1 is invalid: eps must be a finite number ≥ 0 "
                              "(the utility budget ‖y' − y‖); set defense.eps=1.0")


def test_infinity_allowed_when_not_finite_but_nan_never():
    assert check_number(math.inf, "x.budget", low=0, finite=False, fix="set x.budget=1") == math.inf
    with pytest.raises(ValueError, match=r"x.budget=nan is invalid: budget must be a number ≥ 0; set x.budget=1"):
        check_number(math.nan, "x.budget", low=0, finite=False, fix="set x.budget=1")


def test_unbounded_integer_seed():
    assert check_number(-3, "defense.seed", integer=True, fix="set defense.seed=0") == -3
    with pytest.raises(ValueError, match=r"defense.seed=None is invalid: seed must be an integer; set defense.seed=0"):
        check_number(None, "defense.seed", integer=True, fix="set defense.seed=0")


def test_fix_is_required():
    with pytest.raises(TypeError):
        check_number(1.0, "defense.eps")  # type: ignore[call-arg]
