"""A high-accuracy NumPy integrator for the reference trajectories of the time-series
datasets.

The trajectories are targets, so their error must sit far below any model's:
float64 throughout and a local error near round-off. `neuralde.data` depends on
NumPy alone (scipy is not a dependency, and JAX would need float64 switched on
globally), so the integrator is written here: Gragg–Bulirsch–Stoer extrapolation
(Hairer, Nørsett & Wanner, *Solving Ordinary Differential Equations I*, §II.9).

On each step of size $H$ the modified midpoint rule is run with $n_j = 2, 4,
\\ldots, 12$ substeps. Its error expands in even powers of $H/n_j$, so
Aitken–Neville extrapolation of the six results in $(H/n_j)^2$ to zero cancels the
first five terms and gives a method of order 12. The difference between the last
two extrapolants estimates the local error; a step whose estimate exceeds the
tolerance is halved and retried, so every accepted step meets it. All trajectories
of a batch advance together (NumPy vectorises over them) and share the step size.
"""

from collections.abc import Callable

import numpy as np


_SEQUENCE = (2, 4, 6, 8, 10, 12)
_MAX_HALVINGS = 30


def _midpoint(f, t, y, f0, big_h, n):
    # Gragg's modified midpoint rule with the final smoothing step: its error has an
    # expansion in even powers of h alone, which makes the extrapolation work.
    h = big_h / n
    z0, z1 = y, y + h * f0
    for i in range(1, n):
        z0, z1 = z1, z0 + 2 * h * f(t + i * h, z1)
    return 0.5 * (z0 + z1 + h * f(t + big_h, z1))


def _extrapolated_step(f, t, y, big_h):
    f0 = f(t, y)
    previous = []
    for j, n in enumerate(_SEQUENCE):
        row = [_midpoint(f, t, y, f0, big_h, n)]
        for k in range(1, j + 1):
            ratio = (n / _SEQUENCE[j - k]) ** 2
            row.append(row[k - 1] + (row[k - 1] - previous[k - 1]) / (ratio - 1))
        previous = row
    return previous[-1], np.abs(previous[-1] - previous[-2])


def integrate(
    f: Callable[[float, np.ndarray], np.ndarray],
    y0: np.ndarray,
    ts: np.ndarray,
    *,
    max_step: float,
    rtol: float = 1e-12,
    atol: float = 1e-12,
) -> np.ndarray:
    """Integrate $\\dot y = f(t, y)$ from `y0` at `ts[0]`, returning the states at
    `ts` stacked on axis 1: `(batch, len(ts), ...)` for `y0` of shape
    `(batch, ...)`.

    `f` acts on the whole batch. Steps are at most `max_step` and land on every
    time of `ts`; a step is accepted when the estimated local error of every
    component is at most `atol + rtol * |y|`.
    """
    y = np.asarray(y0, dtype=np.float64)
    out = np.empty((len(ts),) + y.shape)
    out[0] = y
    for k in range(len(ts) - 1):
        t, t_next = float(ts[k]), float(ts[k + 1])
        n = max(1, int(np.ceil((t_next - t) / max_step - 1e-9)))
        pending = [((t_next - t) / n, 0)] * n
        while pending:
            h, depth = pending.pop()
            y_new, error = _extrapolated_step(f, t, y, h)
            scale = atol + rtol * np.maximum(np.abs(y), np.abs(y_new))
            if not np.all(error <= scale):
                if depth >= _MAX_HALVINGS or not np.all(np.isfinite(y_new)):
                    raise RuntimeError(
                        f"The reference trajectory could not be integrated past "
                        f"t={t:.6g}: the solution blows up or is too stiff for "
                        f"these parameters. Choose parameters or initial states "
                        f"with bounded solutions."
                    )
                pending += [(h / 2, depth + 1)] * 2
                continue
            t, y = t + h, y_new
        out[k + 1] = y
    return np.moveaxis(out, 0, 1)
