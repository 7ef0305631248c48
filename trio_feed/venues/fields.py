"""Field converters every venue adapter shares (pure, no I/O).

Plain functions: on the happy path each costs one call plus a type test. The type tests
matter: ``Decimal(1.1)`` would silently carry a binary-float error into a price, and a string
where an integer time belongs would only blow up far away, in a cache or a sink. Every error
they raise is one of `PARSE_ERRORS`, which the adapters turn into `MalformedFrame`.
"""

from __future__ import annotations

import reprlib
from decimal import Decimal

import orjson

__all__ = ["PARSE_ERRORS", "as_bool", "as_int", "as_str", "dec", "describe", "short"]

#: Memo of `dec`: decimal string -> its Decimal; only finite values from strings get in.
_DEC_CACHE: dict[object, Decimal] = {}
_DEC_CACHE_SIZE = 4096
_DEC_CACHE_MAX_LEN = 40  # real prices are short; do not let odd long strings pin memory

#: What a parse of bad input may raise before we turn it into `MalformedFrame`.
#: ``orjson.JSONDecodeError`` is a ValueError; ``decimal.InvalidOperation`` an ArithmeticError;
#: LookupError covers missing keys and short arrays; AttributeError a ``.get`` on a non-object.
PARSE_ERRORS = (LookupError, TypeError, ValueError, ArithmeticError, AttributeError)


def dec(s: object) -> Decimal:
    """A finite `Decimal` from a JSON string, else ValueError."""
    # Prices and sizes repeat a lot (the same open kline is re-sent four times a second, book
    # levels sit near the touch), and building a Decimal costs several times a dict lookup,
    # so validated strings are memoised. Decimals are immutable: sharing one is safe.
    d = _DEC_CACHE.get(s)
    if d is not None:
        return d
    if type(s) is str:
        try:
            d = Decimal(s)
        except ArithmeticError:  # decimal.InvalidOperation: not a number at all
            pass
        else:
            # Decimal accepts "NaN", "sNaN", "Infinity"; a price never is one of those.
            if d.is_finite():
                if len(s) <= _DEC_CACHE_MAX_LEN:
                    if len(_DEC_CACHE) >= _DEC_CACHE_SIZE:
                        # Crude, but amortised O(1) per insert; an LRU would cost on every hit.
                        _DEC_CACHE.clear()
                    _DEC_CACHE[s] = d
                return d
    raise ValueError(f"not a finite decimal string: {short(s)}")


def as_int(x: object) -> int:
    """A JSON integer (not a bool, float or string), else TypeError."""
    if type(x) is int:
        return x
    raise TypeError(f"expected an integer, got {short(x)}")


def as_str(x: object) -> str:
    """A JSON string, else TypeError."""
    if type(x) is str:
        return x
    raise TypeError(f"expected a string, got {short(x)}")


def as_bool(x: object) -> bool:
    """A JSON boolean, else TypeError."""
    if type(x) is bool:
        return x
    raise TypeError(f"expected true or false, got {short(x)}")


def short(value: object) -> str:
    """A repr cut to a log-line size (error path only)."""
    return reprlib.repr(value)


def describe(exc: BaseException) -> str:
    """A short reason for a parse failure (only runs on the error path)."""
    if isinstance(exc, orjson.JSONDecodeError):
        return f"invalid JSON ({exc})"
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}" if exc.args else "missing field"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
