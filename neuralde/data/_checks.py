"""Argument and value checks of the datasets, and the seeded train/test split."""

import math
import operator
from collections.abc import Callable, Sequence

import numpy as np


def nonnegative_int(value, name: str) -> int:
    """`value` as a Python int, if it is an integer >= 0 (NumPy integers too, bools
    not); else a `ValueError` naming the argument."""
    try:
        n = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        n = None
    if n is None or n < 0:
        raise ValueError(f"`{name}` must be a non-negative integer, got {value!r}.")
    return n


def seed_int(seed) -> int:
    """The seed of `np.random.default_rng`: an integer >= 0."""
    try:
        return nonnegative_int(seed, "seed")
    except ValueError:
        raise ValueError(
            f"`seed` must be a non-negative integer (it seeds "
            f"`np.random.default_rng`), got {seed!r}."
        ) from None


def positive_float(value, name: str) -> float:
    """`value` as a float, if it is a finite number > 0; else a `ValueError`."""
    x = _finite_float(value, name, "a finite number > 0")
    if not x > 0:
        raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}.")
    return x


def nonnegative_float(value, name: str) -> float:
    """`value` as a float, if it is a finite number >= 0; else a `ValueError`."""
    x = _finite_float(value, name, "a finite number >= 0")
    if not x >= 0:
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}.")
    return x


def _finite_float(value, name, expected):
    try:
        x = None if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        x = None
    if x is None or not math.isfinite(x):
        raise ValueError(f"`{name}` must be {expected}, got {value!r}.")
    return x


def float_dtype(dtype) -> np.dtype:
    """`dtype` as a NumPy floating dtype, else a `TypeError`."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or not np.issubdtype(dt, np.floating):
        raise TypeError(
            f"`dtype` must be a floating-point dtype such as np.float32 or "
            f"np.float64, got {dtype!r}."
        )
    return dt


def check_fraction(value) -> float:
    """A fraction in `[0, 1)`."""
    x = _finite_float(value, "test_fraction", "a number in [0, 1)")
    if not 0 <= x < 1:
        raise ValueError(
            f"`test_fraction` must be in [0, 1) (the share of examples held out for "
            f"testing), got {value!r}."
        )
    return x


def check_finite(
    x: np.ndarray,
    what: str,
    *,
    columns: Sequence[str] | None = None,
    describe_row: Callable[[int], str] = str,
):
    """Raise a `ValueError` naming the first row and column of `x` that holds a NaN
    or an infinity. Rows are the leading axis; the column is the index into the
    remaining axes (with its name when `columns` is given); `describe_row` turns a
    row index into the text that names it."""
    if not np.issubdtype(x.dtype, np.inexact):
        return
    bad = ~np.isfinite(x)
    if not bad.any():
        return
    first = np.unravel_index(np.argmax(bad.reshape(-1)), x.shape)
    row, rest = int(first[0]), tuple(int(i) for i in first[1:])
    if not rest:
        column = ""
    elif len(rest) == 1 and columns is not None:
        column = f", column {rest[0]} ({columns[rest[0]]!r})"
    elif len(rest) == 1:
        column = f", column {rest[0]}"
    else:
        column = f", entry {rest} of the example"
    value, row = x[first], describe_row(row)
    raise ValueError(
        f"{what} holds a non-finite value ({value}) at row {row}{column}; "
        f"{int(bad.sum())} non-finite value(s) in all. Remove or impute those rows "
        f"before building the dataset."
    )


def split_indices(
    n: int,
    fraction: float,
    rng: np.random.Generator,
    *,
    labels: np.ndarray | None = None,
    shuffle: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and test examples among `n`.

    `round(fraction * n)` examples go to the test set; with `labels`, that many of
    each class (`round(fraction * n_c)`), so both sets keep the class proportions.
    With `shuffle`, both index arrays are in a random order drawn from `rng`;
    without, the last examples are the test set and the order is kept.
    """
    if labels is not None:
        test = []
        for c in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == c))
            test.append(members[: round(fraction * len(members))])
        is_test = np.zeros(n, dtype=bool)
        is_test[np.concatenate(test)] = True
        train_idx, test_idx = np.flatnonzero(~is_test), np.flatnonzero(is_test)
        return rng.permutation(train_idx), rng.permutation(test_idx)
    n_test = round(fraction * n)
    if shuffle:
        order = rng.permutation(n)
        return order[: n - n_test], order[n - n_test :]
    return np.arange(n - n_test), np.arange(n - n_test, n)


def check_split(n_train: int, n_test: int, fraction: float, n: int):
    """Refuse splits that leave the training set empty, or a test set that was
    asked for empty."""
    if n_train == 0 or (fraction > 0 and n_test == 0):
        empty = "training" if n_train == 0 else "test"
        raise ValueError(
            f"`test_fraction={fraction}` of {n} examples leaves the {empty} set "
            f"empty. Use more examples, or a test_fraction that leaves at least one "
            f"example on each side (test_fraction=0 for no test set)."
        )
