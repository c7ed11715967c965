"""The synthetic 2-D classification problems of the study (Haber & Ruthotto 2017):
concentric ellipses and the swiss roll, drawn from a seeded NumPy generator."""

from collections.abc import Callable
from typing import NamedTuple

import numpy as np


class Problem(NamedTuple):
    """A classification set: float32 points `(n, 2)` and int32 labels `(n,)`."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int


def ellipses(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Points uniform on the square $[-1, 1]^2$, labelled by the elliptic band they
    lie in: bands of width 0.5 of $r = \\sqrt{(u/1)^2 + (v/0.6)^2}$, with $(u, v)$ the
    point turned by 30 degrees, alternate between class 0 and class 1 (the inner
    ellipse is class 0). No noise: the difficulty is the nested, curved boundary."""
    x = rng.uniform(-1.0, 1.0, size=(n, 2))
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    u = c * x[:, 0] + s * x[:, 1]
    v = -s * x[:, 0] + c * x[:, 1]
    r = np.sqrt(u**2 + (v / 0.6) ** 2)
    labels = np.floor(r / 0.5).astype(np.int64) % 2
    return x, labels


def swiss_roll(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved arms of a swiss roll (two turns each, the second
    arm the first turned by $\\pi$), radius growing with the angle up to 1, with
    Gaussian noise of standard deviation 0.04. The label is the arm."""
    labels = rng.integers(0, 2, size=n)
    # sqrt makes the points uniform along the arm's area rather than its angle.
    angle = np.sqrt(rng.uniform(0.0, 1.0, size=n)) * 4.0 * np.pi
    radius = angle / (4.0 * np.pi)
    angle = angle + np.pi * labels
    x = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return x + 0.04 * rng.normal(size=x.shape), labels


PROBLEMS: dict[str, Callable[[int, np.random.Generator], tuple]] = {
    "ellipses": ellipses,
    "swiss_roll": swiss_roll,
}


def problem_name(name: str) -> str:
    """The canonical name of a problem (case and `-`/`_` are ignored)."""
    key = str(name).lower().replace("-", "_")
    if key not in PROBLEMS:
        raise ValueError(
            f"Unknown problem {name!r}. Valid problems: {', '.join(PROBLEMS)}."
        )
    return key


def make_problem(name: str, *, train: int, test: int, seed: int) -> Problem:
    """`train + test` points drawn independently from one distribution with
    `np.random.default_rng(seed)`; the first `train` are the training set, the rest
    the test set."""
    name = problem_name(name)
    x, y = PROBLEMS[name](train + test, np.random.default_rng(seed))
    x, y = x.astype(np.float32), y.astype(np.int32)
    return Problem(name, x[:train], y[:train], x[train:], y[train:], 2)
