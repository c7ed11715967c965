"""Argument checks shared by every layer of the package (imports nothing from it)."""

import operator


def positive_int(value, name: str) -> int:
    """`value` as a Python int, if it is an integer >= 1 (NumPy integers too, bools
    not); else a `ValueError` naming the argument."""
    try:
        n = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        n = None
    if n is None or n < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return n
