"""Synthetic 2-D classification problems from the literature on stable networks,
and their lifting into more dimensions.

Every problem draws `n_train + n_test` independent examples from one distribution
with `np.random.default_rng(seed)`, in a fixed order of draws; the first `n_train`
are the training set and the rest the test set. The points are drawn in float64 and
cast to `dtype` at the end.
"""

import functools
from typing import Literal

import numpy as np

from .._checks import positive_int
from ._checks import (
    float_dtype,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    seed_int,
)
from ._container import Dataset


def _ellipses(n, rng):
    x = rng.uniform(-1.0, 1.0, size=(n, 2))
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    u = c * x[:, 0] + s * x[:, 1]
    v = -s * x[:, 0] + c * x[:, 1]
    r = np.sqrt(u**2 + (v / 0.6) ** 2)
    labels = np.floor(r / 0.5).astype(np.int64) % 2
    return x, labels


def _swiss_roll(n, rng, noise):
    labels = rng.integers(0, 2, size=n)
    # sqrt makes the points uniform along the arm's area rather than its angle.
    angle = np.sqrt(rng.uniform(0.0, 1.0, size=n)) * 4.0 * np.pi
    radius = angle / (4.0 * np.pi)
    angle = angle + np.pi * labels
    x = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return x + noise * rng.normal(size=x.shape), labels


def _spirals(n, rng, noise, turns):
    labels = rng.integers(0, 2, size=n)
    t = rng.uniform(0.0, 1.0, size=n)
    angle = 2.0 * np.pi * turns * t
    # The arms start off the origin, where they would otherwise meet.
    radius = 0.05 + 0.95 * t
    sign = 1.0 - 2.0 * labels
    x = (sign * radius)[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return x + noise * rng.normal(size=x.shape), labels


def _moons(n, rng, noise):
    labels = rng.integers(0, 2, size=n)
    t = rng.uniform(0.0, np.pi, size=n)
    upper = np.stack([np.cos(t), np.sin(t)], axis=1)
    lower = np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], axis=1)
    x = np.where(labels[:, None] == 0, upper, lower)
    return x + noise * rng.normal(size=x.shape), labels


def _circles(n, rng, noise, factor):
    labels = rng.integers(0, 2, size=n)
    t = rng.uniform(0.0, 2.0 * np.pi, size=n)
    radius = np.where(labels == 0, 1.0, factor)
    x = radius[:, None] * np.stack([np.cos(t), np.sin(t)], axis=1)
    return x + noise * rng.normal(size=x.shape), labels


def peaks_function(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """MATLAB's `peaks`: a sum of three shifted Gaussians on $[-3, 3]^2$."""
    return (
        3 * (1 - x) ** 2 * np.exp(-(x**2) - (y + 1) ** 2)
        - 10 * (x / 5 - x**3 - y**5) * np.exp(-(x**2) - y**2)
        - np.exp(-((x + 1) ** 2) - y**2) / 3
    )


@functools.lru_cache(maxsize=16)
def _peaks_thresholds(num_classes):
    # Quantiles of peaks over a fine uniform grid of [-3, 3]^2: the levels that cut
    # the square into bands of (nearly) equal area, so the classes are balanced.
    g = np.linspace(-3.0, 3.0, 601)
    z = peaks_function(*np.meshgrid(g, g))
    return np.quantile(z, np.arange(1, num_classes) / num_classes)


def _peaks(n, rng, num_classes):
    x = rng.uniform(-3.0, 3.0, size=(n, 2))
    z = peaks_function(x[:, 0], x[:, 1])
    return x, np.searchsorted(_peaks_thresholds(num_classes), z)


def lift(
    x: np.ndarray,
    dim: int,
    *,
    method: Literal["rotate", "pad"] = "rotate",
    seed: int = 0,
) -> np.ndarray:
    """Embed points of `d` dimensions in `dim >= d` dimensions, isometrically.

    **Arguments:**

    - `x`: the points, `(n, d)`.
    - `dim`: the dimension to lift to.
    - `method`: `"rotate"` (default) maps $x \\mapsto Q x$ by a random $Q$ of shape
        `(dim, d)` with orthonormal columns, so no coordinate is special and all
        pairwise distances are kept; `"pad"` appends `dim - d` zeros, as augmented
        neural ODEs do (Dupont et al. 2019).
    - `seed`: seeds `np.random.default_rng` for $Q$ (ignored by `"pad"`).

    **Returns:** an array `(n, dim)`, of the dtype of `x` if it is floating point,
    else float64.
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.inexact):
        x = x.astype(np.float64)
    if x.ndim != 2:
        raise ValueError(f"`x` must be a matrix (n, d) of points, got shape {x.shape}.")
    dim = positive_int(dim, "dim")
    d = x.shape[1]
    if dim < d:
        raise ValueError(
            f"`dim` must be at least the points' dimension {d} (lifting cannot drop "
            f"dimensions), got dim={dim}."
        )
    if method == "pad":
        return np.concatenate([x, np.zeros((x.shape[0], dim - d), x.dtype)], axis=1)
    if method != "rotate":
        raise ValueError(f'`method` must be "rotate" or "pad", got {method!r}.')
    q = _orthonormal(dim, d, np.random.default_rng(seed_int(seed)))
    return (x @ q.T).astype(x.dtype)


def _orthonormal(dim, d, rng):
    q, r = np.linalg.qr(rng.normal(size=(dim, d)))
    # Fixing the signs makes Q Haar distributed (Mezzadri 2007).
    return q * np.sign(np.diag(r))


def _make(name, draw, *, n_train, n_test, dim, seed, dtype, num_classes=2):
    n_train = positive_int(n_train, "n_train")
    n_test = nonnegative_int(n_test, "n_test")
    dim = positive_int(dim, "dim")
    seed = seed_int(seed)
    dtype = float_dtype(dtype)
    x, y = draw(n_train + n_test, np.random.default_rng(seed))
    if dim != 2:
        if dim < 2:
            raise ValueError(
                f"`dim` must be at least 2 (the points are planar), got {dim}."
            )
        # Q has a stream of its own, so the planar points do not depend on `dim`.
        x = x @ _orthonormal(dim, 2, np.random.default_rng([seed, 1])).T
    x, y = x.astype(dtype), y.astype(np.int32)
    return Dataset(
        x[:n_train], y[:n_train], x[n_train:], y[n_train:], name, num_classes
    )


def ellipses(
    *,
    n_train: int = 1024,
    n_test: int = 1024,
    dim: int = 2,
    seed: int = 0,
    dtype=np.float32,
) -> Dataset:
    """Concentric ellipses (Haber & Ruthotto 2017).

    Points uniform on the square $[-1, 1]^2$, labelled by the elliptic band they lie
    in: bands of width 0.5 of $r = \\sqrt{u^2 + (v/0.6)^2}$, with $(u, v)$ the point
    turned by 30 degrees, alternate between class 0 and class 1 (the inner ellipse
    is class 0). No noise: the difficulty is the nested, curved boundary.

    **Arguments:** (all keyword only)

    - `n_train`, `n_test`: the numbers of training and test points.
    - `dim`: embed the points in this many dimensions by a random isometry (as
        [`neuralde.data.lift`][], drawn from a stream of its own, so the planar
        points are the same for every `dim`). Default 2: no lifting.
    - `seed`: seeds `np.random.default_rng`.
    - `dtype`: the floating dtype of the features (labels are int32).

    **Returns:** a [`neuralde.data.Dataset`][] with `num_classes=2`.
    """
    return _make(
        "ellipses",
        _ellipses,
        n_train=n_train,
        n_test=n_test,
        dim=dim,
        seed=seed,
        dtype=dtype,
    )


def swiss_roll(
    *,
    n_train: int = 1024,
    n_test: int = 1024,
    noise: float = 0.04,
    dim: int = 2,
    seed: int = 0,
    dtype=np.float32,
) -> Dataset:
    """Two interleaved arms of a swiss roll (Haber & Ruthotto 2017).

    Each arm makes two turns, its radius growing linearly with the angle up to 1;
    the second arm is the first turned by $\\pi$, and the label is the arm. Points
    are uniform over the arm's area (the angle is $4\\pi\\sqrt{u}$, $u$ uniform on
    $[0, 1]$), plus Gaussian noise.

    **Arguments:** (all keyword only)

    - `noise`: the standard deviation of the Gaussian noise.
    - `n_train`, `n_test`, `dim`, `seed`, `dtype`: as for
        [`neuralde.data.ellipses`][].

    **Returns:** a [`neuralde.data.Dataset`][] with `num_classes=2`.
    """
    draw = functools.partial(_swiss_roll, noise=nonnegative_float(noise, "noise"))
    return _make(
        "swiss_roll",
        draw,
        n_train=n_train,
        n_test=n_test,
        dim=dim,
        seed=seed,
        dtype=dtype,
    )


def spirals(
    *,
    n_train: int = 1024,
    n_test: int = 1024,
    turns: float = 1.5,
    noise: float = 0.02,
    dim: int = 2,
    seed: int = 0,
    dtype=np.float32,
) -> Dataset:
    """Two spirals (Lang & Witbrock 1988), the classic problem that no continuous
    deformation of the plane makes linearly separable.

    Arm 0 is $r(\\cos\\phi, \\sin\\phi)$ with $\\phi = 2\\pi\\,\\mathrm{turns}\\,t$
    and $r = 0.05 + 0.95\\,t$, $t$ uniform on $[0, 1]$; arm 1 is its mirror image
    through the origin. Unlike the swiss roll, points are uniform in the angle and
    the arms start away from the origin, where they would meet.

    **Arguments:** (all keyword only)

    - `turns`: the number of turns of each arm.
    - `noise`: the standard deviation of the Gaussian noise.
    - `n_train`, `n_test`, `dim`, `seed`, `dtype`: as for
        [`neuralde.data.ellipses`][].

    **Returns:** a [`neuralde.data.Dataset`][] with `num_classes=2`.
    """
    turns, noise = positive_float(turns, "turns"), nonnegative_float(noise, "noise")
    draw = functools.partial(_spirals, noise=noise, turns=turns)
    return _make(
        "spirals", draw, n_train=n_train, n_test=n_test, dim=dim, seed=seed, dtype=dtype
    )


def moons(
    *,
    n_train: int = 1024,
    n_test: int = 1024,
    noise: float = 0.1,
    dim: int = 2,
    seed: int = 0,
    dtype=np.float32,
) -> Dataset:
    """Two interleaving half circles, as scikit-learn's `make_moons`.

    Class 0 is $(\\cos t, \\sin t)$ and class 1 is $(1 - \\cos t, 0.5 - \\sin t)$,
    with $t$ uniform on $[0, \\pi]$ and the label uniform on $\\{0, 1\\}$, plus
    Gaussian noise.

    **Arguments:** (all keyword only)

    - `noise`: the standard deviation of the Gaussian noise.
    - `n_train`, `n_test`, `dim`, `seed`, `dtype`: as for
        [`neuralde.data.ellipses`][].

    **Returns:** a [`neuralde.data.Dataset`][] with `num_classes=2`.
    """
    draw = functools.partial(_moons, noise=nonnegative_float(noise, "noise"))
    return _make(
        "moons", draw, n_train=n_train, n_test=n_test, dim=dim, seed=seed, dtype=dtype
    )


def circles(
    *,
    n_train: int = 1024,
    n_test: int = 1024,
    factor: float = 0.5,
    noise: float = 0.05,
    dim: int = 2,
    seed: int = 0,
    dtype=np.float32,
) -> Dataset:
    """Two concentric circles, as scikit-learn's `make_circles`: class 0 on the
    unit circle, class 1 on the circle of radius `factor`, angles uniform, plus
    Gaussian noise. A homeomorphism of the plane cannot separate them linearly; a
    lifted (`dim=3`) or augmented model can (Dupont et al. 2019).

    **Arguments:** (all keyword only)

    - `factor`: the inner radius, in $(0, 1)$.
    - `noise`: the standard deviation of the Gaussian noise.
    - `n_train`, `n_test`, `dim`, `seed`, `dtype`: as for
        [`neuralde.data.ellipses`][].

    **Returns:** a [`neuralde.data.Dataset`][] with `num_classes=2`.
    """
    factor, noise = positive_float(factor, "factor"), nonnegative_float(noise, "noise")
    if factor >= 1:
        raise ValueError(
            f"`factor` is the inner radius relative to the outer one and must be in "
            f"(0, 1), got {factor}."
        )
    draw = functools.partial(_circles, noise=noise, factor=factor)
    return _make(
        "circles", draw, n_train=n_train, n_test=n_test, dim=dim, seed=seed, dtype=dtype
    )


def peaks(
    *,
    n_train: int = 1024,
    n_test: int = 1024,
    num_classes: int = 5,
    dim: int = 2,
    seed: int = 0,
    dtype=np.float32,
) -> Dataset:
    """Level sets of MATLAB's `peaks` function (Haber & Ruthotto 2017).

    Points uniform on $[-3, 3]^2$, labelled by the band of values of
    $f(x, y) = 3(1-x)^2 e^{-x^2-(y+1)^2} - 10(x/5 - x^3 - y^5) e^{-x^2-y^2} -
    \\tfrac13 e^{-(x+1)^2-y^2}$ they fall in. The bands are cut at the
    `num_classes`-quantiles of $f$ over the square (computed on a fixed 601 x 601
    grid), so they have nearly equal areas, the classes are nearly balanced, and
    the label increases with $f$.

    **Arguments:** (all keyword only)

    - `num_classes`: the number of bands, at least 2.
    - `n_train`, `n_test`, `dim`, `seed`, `dtype`: as for
        [`neuralde.data.ellipses`][].

    **Returns:** a [`neuralde.data.Dataset`][].
    """
    num_classes = positive_int(num_classes, "num_classes")
    if num_classes < 2:
        raise ValueError(f"`num_classes` must be at least 2, got {num_classes}.")
    draw = functools.partial(_peaks, num_classes=num_classes)
    return _make(
        "peaks",
        draw,
        n_train=n_train,
        n_test=n_test,
        dim=dim,
        seed=seed,
        dtype=dtype,
        num_classes=num_classes,
    )
