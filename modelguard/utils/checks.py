"""Validation of numeric knobs: one helper, one message format.

Every constructor that takes a number from the config (an ε, a margin, a seed, a count)
validates it with :func:`check_number`, so a bad value fails at construction with a
message that names the knob, the value it got, what is allowed, and how to fix it::

    >>> check_number(0, "defense.eps", low=0, low_open=True, fix="set defense.eps=1.0")
    Traceback (most recent call last):
    ...
    ValueError: defense.eps=0 is invalid: eps must be a finite number > 0; set defense.eps=1.0
"""
from __future__ import annotations

import math
import numbers

__all__ = ["check_choice", "check_flag", "check_number", "check_training_knobs"]


def check_number(value, name: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, integer: bool = False,
                 finite: bool = True, note: str | None = None, fix: str) -> int | float:
    """Validate a numeric knob and return it as ``float`` (``int`` with ``integer``).

    Args:
        value: what the caller passed.
        name: the knob as the user spells it on the command line, e.g. ``"defense.eps"``;
            the message starts with ``name=value``.
        low, high: bounds, inclusive unless ``low_open`` / ``high_open`` (None: unbounded).
        integer: require an integral number (``int``, ``numpy.int64``, ...; ``1.0`` is
            refused, so a config typo is not silently truncated) and return an ``int``.
            Otherwise any real number (``int``, ``float``, ``numpy.float32``, ...) is
            accepted and returned as a ``float``.
        finite: refuse NaN and ±inf (the default; NaN is refused even when False).
        note: a short explanation of the knob, shown in brackets after the allowed range
            (e.g. ``"the L1 budget; the grid uses 1.0"``).
        fix: how to fix it, appended after a semicolon (e.g. ``"set defense.eps=1.0"``).

    ``bool`` is refused everywhere (``True`` is an ``int`` to Python, never a meaningful
    ε or count), and so are strings, None and tensors.

    Raises:
        ValueError: ``"{name}={value!r} is invalid: {short} must be {kind}{range}
            [({note})]; {fix}"``, with ``short`` the last component of ``name``, ``kind``
            "an integer" / "a finite number" / "a number" and ``range`` e.g. " > 0",
            " ≥ 0", " in [0, 1]".
    """
    if isinstance(value, bool):
        ok = False
    elif integer:
        ok = isinstance(value, numbers.Integral)
    else:
        ok = isinstance(value, numbers.Real) and not math.isnan(value)
        if ok and finite:
            ok = math.isfinite(value)
    if ok:
        if low is not None and (value <= low if low_open else value < low):
            ok = False
        elif high is not None and (value >= high if high_open else value > high):
            ok = False
    if not ok:
        raise ValueError(_message(value, name, low, high, low_open, high_open, integer,
                                  finite, note, fix))
    return int(value) if integer else float(value)


def _fmt(bound: float) -> str:
    """A bound as written in a config: 0 not 0.0, 1e-06 as is."""
    return str(int(bound)) if float(bound).is_integer() else repr(bound)


def _message(value, name, low, high, low_open, high_open, integer, finite, note, fix) -> str:
    kind = "an integer" if integer else ("a finite number" if finite else "a number")
    if low is not None and high is not None:
        span = (f" in {'(' if low_open else '['}{_fmt(low)}, "
                f"{_fmt(high)}{')' if high_open else ']'}")
    elif low is not None:
        span = f" {'>' if low_open else '≥'} {_fmt(low)}"
    elif high is not None:
        span = f" {'<' if high_open else '≤'} {_fmt(high)}"
    else:
        span = ""
    short = name.rsplit(".", 1)[-1]
    extra = f" ({note})" if note else ""
    return f"{name}={value!r} is invalid: {short} must be {kind}{span}{extra}; {fix}"


def check_flag(value, name: str, *, fix: str) -> bool:
    """Validate a true/false knob: only real booleans pass (a YAML ``maybe`` or ``1`` does not).

    Raises:
        ValueError: ``"{name}={value!r} is invalid: {short} must be true or false; {fix}"``.
    """
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is invalid: {name.rsplit('.', 1)[-1]} must be true or false; {fix}")
    return value


def check_choice(value, name: str, allowed, *, fix: str) -> str:
    """Validate a knob that names one of ``allowed`` (strings).

    Raises:
        ValueError: ``"{name}={value!r} is invalid: allowed values are a, b, c; {fix}"``.
    """
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name}={value!r} is invalid: allowed values are {', '.join(allowed)}; {fix}")
    return value


# The numeric knobs of SGD-like optimizers and step schedulers: bounds, and an example for the fix.
TRAINING_KNOBS = {"lr": (dict(low=0, low_open=True), 0.05), "momentum": (dict(low=0), 0.9),
                  "weight_decay": (dict(low=0), 0), "dampening": (dict(low=0), 0),
                  "step_size": (dict(low=1, integer=True), 10), "gamma": (dict(low=0, low_open=True), 0.5)}


def check_training_knobs(knobs, name: str) -> None:
    """Check the ``TRAINING_KNOBS`` present in ``knobs`` (an optimizer's or scheduler's keyword
    arguments), named ``{name}.{knob}``; other keys are left to the class they are passed to."""
    for knob, (bounds, example) in TRAINING_KNOBS.items():
        if knob in knobs:
            check_number(knobs[knob], f"{name}.{knob}", **bounds, fix=f"set {name}.{knob}={example}")
