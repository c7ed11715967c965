"""Trajectories of known ODEs, for continuous-time regression.

Each system draws `n_train + n_test` initial states with
`np.random.default_rng(seed)`, integrates them in float64 to near round-off (see
`_integrate.py`), and then draws the observation noise from the same generator:
the clean trajectories do not depend on `noise`. The first `n_train` trajectories
are the training set.
"""

import numpy as np

from .._checks import positive_int
from ._checks import (
    float_dtype,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    seed_int,
)
from ._container import TimeSeries
from ._integrate import integrate


def _series(
    name,
    f,
    draw_y0,
    state_names,
    params,
    *,
    n_train,
    n_test,
    t1,
    num_times,
    noise,
    seed,
    dtype,
    time_scale,
):
    n_train = positive_int(n_train, "n_train")
    n_test = nonnegative_int(n_test, "n_test")
    t1 = positive_float(t1, "t1")
    num_times = positive_int(num_times, "num_times")
    if num_times < 2:
        raise ValueError(f"`num_times` must be at least 2 (0 and t1), got {num_times}.")
    noise = nonnegative_float(noise, "noise")
    dtype = float_dtype(dtype)
    rng = np.random.default_rng(seed_int(seed))
    ts = np.linspace(0.0, t1, num_times)
    y0 = draw_y0(rng, n_train + n_test)
    # One step per observation interval, capped at a fifth of the system's time
    # scale; the error control halves any step that is still too long.
    clean = integrate(f, y0, ts, max_step=min(t1 / (num_times - 1), time_scale / 5))
    observed = clean + noise * rng.normal(size=clean.shape)
    clean, observed, ts = clean.astype(dtype), observed.astype(dtype), ts.astype(dtype)
    return TimeSeries(
        ts,
        observed[:n_train],
        observed[n_train:],
        clean[:n_train],
        clean[n_train:],
        name,
        noise,
        state_names,
        params,
    )


def _uniform(low, high, dim):
    def draw(rng, n):
        return rng.uniform(low, high, size=(n, dim))

    return draw


def harmonic_oscillator(
    *,
    n_train: int = 64,
    n_test: int = 16,
    t1: float = 10.0,
    num_times: int = 101,
    omega: float = 1.0,
    noise: float = 0.01,
    seed: int = 0,
    dtype=np.float32,
) -> TimeSeries:
    """The harmonic oscillator $\\ddot x = -\\omega^2 x$, state $(x, v)$.

    Initial states are uniform on $[-1, 1]^2$. The exact solution is
    $x(t) = x_0 \\cos\\omega t + (v_0/\\omega) \\sin\\omega t$.

    **Arguments:** (all keyword only)

    - `omega`: the angular frequency $\\omega > 0$.
    - `n_train`, `n_test`: the numbers of training and test trajectories.
    - `t1`: the final time; observations are at `num_times` equally spaced times
        from 0 to `t1`.
    - `noise`: the standard deviation of the Gaussian noise added to every entry of
        the observations.
    - `seed`: seeds `np.random.default_rng` (initial states, then noise).
    - `dtype`: the floating dtype of the arrays (integration is in float64).

    **Returns:** a [`neuralde.data.TimeSeries`][].
    """
    omega = positive_float(omega, "omega")

    def f(t, y):
        return np.stack([y[:, 1], -(omega**2) * y[:, 0]], axis=-1)

    return _series(
        "harmonic_oscillator",
        f,
        _uniform(-1.0, 1.0, 2),
        ("x", "v"),
        dict(omega=omega),
        n_train=n_train,
        n_test=n_test,
        t1=t1,
        num_times=num_times,
        noise=noise,
        seed=seed,
        dtype=dtype,
        time_scale=1 / omega,
    )


def damped_oscillator(
    *,
    n_train: int = 64,
    n_test: int = 16,
    t1: float = 10.0,
    num_times: int = 101,
    omega: float = 1.0,
    zeta: float = 0.1,
    noise: float = 0.01,
    seed: int = 0,
    dtype=np.float32,
) -> TimeSeries:
    """The damped oscillator $\\ddot x + 2\\zeta\\omega \\dot x + \\omega^2 x = 0$,
    state $(x, v)$: underdamped for $\\zeta < 1$, critically damped at 1,
    overdamped above.

    Initial states are uniform on $[-1, 1]^2$.

    **Arguments:** (all keyword only)

    - `omega`: the undamped angular frequency $\\omega > 0$.
    - `zeta`: the damping ratio $\\zeta \\ge 0$.
    - `n_train`, `n_test`, `t1`, `num_times`, `noise`, `seed`, `dtype`: as for
        [`neuralde.data.harmonic_oscillator`][].

    **Returns:** a [`neuralde.data.TimeSeries`][].
    """
    omega = positive_float(omega, "omega")
    zeta = nonnegative_float(zeta, "zeta")

    def f(t, y):
        x, v = y[:, 0], y[:, 1]
        return np.stack([v, -2 * zeta * omega * v - omega**2 * x], axis=-1)

    return _series(
        "damped_oscillator",
        f,
        _uniform(-1.0, 1.0, 2),
        ("x", "v"),
        dict(omega=omega, zeta=zeta),
        n_train=n_train,
        n_test=n_test,
        t1=t1,
        num_times=num_times,
        noise=noise,
        seed=seed,
        dtype=dtype,
        time_scale=1 / (omega * (1 + zeta)),
    )


def lotka_volterra(
    *,
    n_train: int = 64,
    n_test: int = 16,
    t1: float = 10.0,
    num_times: int = 101,
    alpha: float = 1.5,
    beta: float = 1.0,
    gamma: float = 3.0,
    delta: float = 1.0,
    noise: float = 0.01,
    seed: int = 0,
    dtype=np.float32,
) -> TimeSeries:
    """The Lotka–Volterra predator–prey system, state (prey $x$, predator $y$):

    $\\dot x = \\alpha x - \\beta x y,\\qquad \\dot y = \\delta x y - \\gamma y$.

    Its orbits are closed: $V = \\delta x - \\gamma \\log x + \\beta y -
    \\alpha \\log y$ is conserved. Initial states are uniform on $[0.5, 2.5]^2$.

    **Arguments:** (all keyword only)

    - `alpha`, `beta`, `gamma`, `delta`: the positive rates.
    - `n_train`, `n_test`, `t1`, `num_times`, `noise`, `seed`, `dtype`: as for
        [`neuralde.data.harmonic_oscillator`][].

    **Returns:** a [`neuralde.data.TimeSeries`][].
    """
    a, b = positive_float(alpha, "alpha"), positive_float(beta, "beta")
    c, d = positive_float(gamma, "gamma"), positive_float(delta, "delta")

    def f(t, y):
        prey, predator = y[:, 0], y[:, 1]
        return np.stack([prey * (a - b * predator), predator * (d * prey - c)], axis=-1)

    return _series(
        "lotka_volterra",
        f,
        _uniform(0.5, 2.5, 2),
        ("prey", "predator"),
        dict(alpha=a, beta=b, gamma=c, delta=d),
        n_train=n_train,
        n_test=n_test,
        t1=t1,
        num_times=num_times,
        noise=noise,
        seed=seed,
        dtype=dtype,
        time_scale=1 / max(a, c),
    )


def pendulum(
    *,
    n_train: int = 64,
    n_test: int = 16,
    t1: float = 10.0,
    num_times: int = 101,
    g: float = 9.81,
    length: float = 1.0,
    noise: float = 0.01,
    seed: int = 0,
    dtype=np.float32,
) -> TimeSeries:
    """The nonlinear pendulum $\\ddot\\theta = -(g/l) \\sin\\theta$, state
    $(\\theta, \\omega)$ with $\\omega = \\dot\\theta$.

    The energy per unit mass and squared length, $E = \\tfrac12\\omega^2 - (g/l)
    \\cos\\theta$, is conserved. Initial angles are uniform on
    $[-\\pi/2, \\pi/2]$ and angular velocities on $[-1, 1]$; with the default
    $g/l$, every pendulum swings back and forth (none goes over the top).

    **Arguments:** (all keyword only)

    - `g`: the gravitational acceleration.
    - `length`: the length of the rod.
    - `n_train`, `n_test`, `t1`, `num_times`, `noise`, `seed`, `dtype`: as for
        [`neuralde.data.harmonic_oscillator`][].

    **Returns:** a [`neuralde.data.TimeSeries`][].
    """
    g, length = positive_float(g, "g"), positive_float(length, "length")
    k = g / length

    def f(t, y):
        return np.stack([y[:, 1], -k * np.sin(y[:, 0])], axis=-1)

    def draw_y0(rng, n):
        theta = rng.uniform(-np.pi / 2, np.pi / 2, size=n)
        return np.stack([theta, rng.uniform(-1.0, 1.0, size=n)], axis=-1)

    return _series(
        "pendulum",
        f,
        draw_y0,
        ("theta", "omega"),
        dict(g=g, length=length),
        n_train=n_train,
        n_test=n_test,
        t1=t1,
        num_times=num_times,
        noise=noise,
        seed=seed,
        dtype=dtype,
        time_scale=1 / np.sqrt(k),
    )


def double_pendulum(
    *,
    n_train: int = 64,
    n_test: int = 16,
    t1: float = 10.0,
    num_times: int = 101,
    m1: float = 1.0,
    m2: float = 1.0,
    l1: float = 1.0,
    l2: float = 1.0,
    g: float = 9.81,
    noise: float = 0.01,
    seed: int = 0,
    dtype=np.float32,
) -> TimeSeries:
    """The double pendulum of two point masses on massless rods, state
    $(\\theta_1, \\theta_2, \\omega_1, \\omega_2)$: angles from the downward vertical
    and their rates. Chaotic at these energies.

    The equations of motion are Lagrange's; with $\\Delta = \\theta_2 - \\theta_1$,
    $M = m_1 + m_2$ and $D = M - m_2 \\cos^2\\Delta$:

    $l_1 D \\dot\\omega_1 = m_2 l_1 \\omega_1^2 \\sin\\Delta\\cos\\Delta +
    m_2 g \\sin\\theta_2 \\cos\\Delta + m_2 l_2 \\omega_2^2 \\sin\\Delta -
    M g \\sin\\theta_1$,

    $l_2 D \\dot\\omega_2 = -m_2 l_2 \\omega_2^2 \\sin\\Delta\\cos\\Delta + M (g
    \\sin\\theta_1 \\cos\\Delta - l_1 \\omega_1^2 \\sin\\Delta - g \\sin\\theta_2)$.

    The energy $\\tfrac12 M l_1^2 \\omega_1^2 + \\tfrac12 m_2 l_2^2 \\omega_2^2 + m_2
    l_1 l_2 \\omega_1 \\omega_2 \\cos(\\theta_1 - \\theta_2) - M g l_1 \\cos\\theta_1 -
    m_2 g l_2 \\cos\\theta_2$ is conserved. Initial angles are uniform on
    $[-\\pi/2, \\pi/2]$ and angular velocities on $[-1, 1]$.

    **Arguments:** (all keyword only)

    - `m1`, `m2`: the masses (inner, outer).
    - `l1`, `l2`: the rod lengths.
    - `g`: the gravitational acceleration.
    - `n_train`, `n_test`, `t1`, `num_times`, `noise`, `seed`, `dtype`: as for
        [`neuralde.data.harmonic_oscillator`][].

    **Returns:** a [`neuralde.data.TimeSeries`][].
    """
    m1, m2 = positive_float(m1, "m1"), positive_float(m2, "m2")
    l1, l2 = positive_float(l1, "l1"), positive_float(l2, "l2")
    g = positive_float(g, "g")
    big_m = m1 + m2

    def f(t, y):
        th1, th2, w1, w2 = y[:, 0], y[:, 1], y[:, 2], y[:, 3]
        s, c = np.sin(th2 - th1), np.cos(th2 - th1)
        d = big_m - m2 * c * c
        a1 = (
            m2 * l1 * w1 * w1 * s * c
            + m2 * g * np.sin(th2) * c
            + m2 * l2 * w2 * w2 * s
            - big_m * g * np.sin(th1)
        ) / (l1 * d)
        a2 = (
            -m2 * l2 * w2 * w2 * s * c
            + big_m * (g * np.sin(th1) * c - l1 * w1 * w1 * s - g * np.sin(th2))
        ) / (l2 * d)
        return np.stack([w1, w2, a1, a2], axis=-1)

    def draw_y0(rng, n):
        theta = rng.uniform(-np.pi / 2, np.pi / 2, size=(n, 2))
        return np.concatenate([theta, rng.uniform(-1.0, 1.0, size=(n, 2))], axis=-1)

    return _series(
        "double_pendulum",
        f,
        draw_y0,
        ("theta1", "theta2", "omega1", "omega2"),
        dict(m1=m1, m2=m2, l1=l1, l2=l2, g=g),
        n_train=n_train,
        n_test=n_test,
        t1=t1,
        num_times=num_times,
        noise=noise,
        seed=seed,
        dtype=dtype,
        time_scale=np.sqrt(min(l1, l2) / g),
    )
