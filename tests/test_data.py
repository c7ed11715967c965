import hashlib
import sys

import numpy as np
import pytest
import scipy.linalg
import scipy.special

import neuralde as nde
from neuralde._study._problems import make_problem
from neuralde.data._integrate import integrate


SYNTHETIC = ("ellipses", "swiss_roll", "spirals", "moons", "circles", "peaks")


def _rows(a):
    return {r.tobytes() for r in np.ascontiguousarray(a).reshape(len(a), -1)}


# --------------------------------------------------------------------- containers


def test_dataset_unpacks_and_refuses_mismatched_lengths():
    x, y = np.zeros((3, 2)), np.arange(3)
    data = nde.data.Dataset(x, y, x[:1], y[:1], "toy", 3)
    x_train, y_train, x_test, y_test = data
    assert x_train is x and y_test is data.test[1] and data.train[1] is y
    assert "float64[3, 2]" in repr(data)
    with pytest.raises(ValueError, match="same number of examples.*3 and 2"):
        nde.data.Dataset(x, y[:2], x, y, "toy")
    with pytest.raises(ValueError, match="same shape"):
        nde.data.Dataset(x, y, np.zeros((3, 4)), y, "toy")


# ---------------------------------------------------------------------- synthetic


@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_seeded_split_disjoint_complete(name):
    make = getattr(nde.data, name)
    a = make(n_train=300, n_test=100, seed=1)
    b = make(n_train=300, n_test=100, seed=1)
    c = make(n_train=300, n_test=100, seed=2)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a.x_train, c.x_train)
    assert a.x_train.shape == (300, 2) and a.x_test.shape == (100, 2)
    assert a.x_train.dtype == np.float32 and a.y_train.dtype == np.int32
    assert a.name == name
    # The split partitions one draw: moving the boundary moves no example, and
    # no example is in both sets.
    whole = make(n_train=400, n_test=0, seed=1)
    np.testing.assert_array_equal(np.concatenate([a.x_train, a.x_test]), whole.x_train)
    np.testing.assert_array_equal(np.concatenate([a.y_train, a.y_test]), whole.y_train)
    assert whole.x_test.shape == (0, 2)
    assert not _rows(a.x_train) & _rows(a.x_test)
    # Lifting keeps the planar points: same Gram matrix (an isometry; float64
    # round-off of a 5 x 2 product, 1e-12).
    lifted = make(n_train=300, n_test=100, seed=1, dim=5, dtype=np.float64)
    planar = make(n_train=300, n_test=100, seed=1, dtype=np.float64)
    assert lifted.x_train.shape == (300, 5)
    np.testing.assert_allclose(
        lifted.x_train @ lifted.x_train.T, planar.x_train @ planar.x_train.T, atol=1e-12
    )
    assert np.linalg.matrix_rank(lifted.x_train) == 2
    # Classes are balanced: each class share is within 5 binomial standard
    # deviations of its expectation (1/2; 1/5 for the equal-area bands of peaks).
    k = a.num_classes
    y = make(n_train=4000, n_test=0, seed=3).y_train
    share = np.bincount(y, minlength=k) / len(y)
    if name != "ellipses":  # ellipses: the bands' areas differ; checked below
        sd = np.sqrt((1 / k) * (1 - 1 / k) / 4000)
        np.testing.assert_allclose(share, 1 / k, atol=5 * sd)


def test_synthetic_geometry_matches_definitions():
    f64 = dict(n_train=500, n_test=0, seed=0, dtype=np.float64)
    # Ellipses: the band of the rotated, stretched radius, as documented.
    x, y = nde.data.ellipses(**f64).train
    assert np.all(np.abs(x) <= 1)
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    r = np.hypot(c * x[:, 0] + s * x[:, 1], (-s * x[:, 0] + c * x[:, 1]) / 0.6)
    np.testing.assert_array_equal(y, np.floor(r / 0.5) % 2)
    # Without noise, points lie exactly (to float64 round-off) on their curves.
    x, y = nde.data.swiss_roll(noise=0.0, **f64).train
    r = np.linalg.norm(x, axis=1)
    phase = 4 * np.pi * r + np.pi * y
    np.testing.assert_allclose(
        x, r[:, None] * np.c_[np.cos(phase), np.sin(phase)], atol=1e-12
    )
    x, y = nde.data.spirals(noise=0.0, turns=2.0, **f64).train
    r = np.linalg.norm(x, axis=1)
    phase = 2 * np.pi * 2.0 * (r - 0.05) / 0.95 + np.pi * y
    assert r.min() >= 0.05 and r.max() <= 1
    np.testing.assert_allclose(
        x, r[:, None] * np.c_[np.cos(phase), np.sin(phase)], atol=1e-12
    )
    x, y = nde.data.moons(noise=0.0, **f64).train
    upper, lower = x[y == 0], x[y == 1]
    np.testing.assert_allclose(np.linalg.norm(upper, axis=1), 1.0, atol=1e-14)
    np.testing.assert_allclose(
        np.linalg.norm(lower - [1.0, 0.5], axis=1), 1.0, atol=1e-14
    )
    assert upper[:, 1].min() >= 0 and lower[:, 1].max() <= 0.5
    x, y = nde.data.circles(noise=0.0, factor=0.3, **f64).train
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), np.where(y == 0, 1.0, 0.3))
    # Noise: the radial residual has the requested standard deviation (4000
    # samples: relative standard error 1.1%, so 6% is over 5 standard errors).
    x, y = nde.data.circles(n_train=4000, n_test=0, noise=0.02, dtype=np.float64).train
    residual = np.linalg.norm(x, axis=1) - np.where(y == 0, 1.0, 0.5)
    np.testing.assert_allclose(residual.std(), 0.02, rtol=0.06)


def _matlab_peaks(x, y):
    # MATLAB's documented formula, written out independently of the package.
    return (
        3 * (1 - x) ** 2 * np.exp(-(x**2) - (y + 1) ** 2)
        - 10 * (x / 5 - x**3 - y**5) * np.exp(-(x**2) - y**2)
        - 1 / 3 * np.exp(-((x + 1) ** 2) - y**2)
    )


def test_peaks_labels_are_ordered_bands():
    x, y = nde.data.peaks(n_train=3000, n_test=0, num_classes=4, dtype=np.float64).train
    assert np.all(np.abs(x) <= 3) and set(np.unique(y)) == {0, 1, 2, 3}
    z = _matlab_peaks(x[:, 0], x[:, 1])
    # Bands do not overlap and increase with the value of peaks.
    for k in range(3):
        assert z[y == k].max() < z[y == k + 1].min()


def test_ellipses_class_share_is_the_band_area():
    # Class 0's share is the area of the even bands inside the square, measured
    # on a fine midpoint grid (error ~ 1e-3), against 20 000 samples (standard
    # error 0.0035; 0.02 is over 5).
    g = (np.arange(1000) + 0.5) / 500 - 1
    u, v = np.meshgrid(g, g)
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    r = np.hypot(c * u + s * v, (-s * u + c * v) / 0.6)
    area = np.mean(np.floor(r / 0.5) % 2 == 0)
    y = nde.data.ellipses(n_train=20000, n_test=0, seed=5).y_train
    assert abs(np.mean(y == 0) - area) < 0.02


def test_study_problems_unchanged():
    # Checksums of the study's problems as generated before their code moved to
    # neuralde.data: the study's data must stay bit-identical.
    expected = {
        "ellipses": "178e23486bb90b7d1dff55237552e831290718cbb5798b69c78a87fa53bc823b",
        "swiss_roll": (
            "c9a44de214c3d94a8e341ca96c4ccd056fc9ad7e64407e257fb5a8eae166fd84"
        ),
    }
    for name, digest in expected.items():
        p = make_problem(name, train=100, test=50, seed=3)
        d = getattr(nde.data, name)(n_train=100, n_test=50, seed=3)
        for u, v in zip(p[1:5], d):
            np.testing.assert_array_equal(u, v)
        assert p.classes == d.num_classes == 2
        raw = b"".join(np.ascontiguousarray(a).tobytes() for a in p[1:5])
        assert hashlib.sha256(raw).hexdigest() == digest


def test_lift():
    x = np.random.default_rng(0).normal(size=(6, 3))
    up = nde.data.lift(x, 7, seed=4)
    np.testing.assert_allclose(up @ up.T, x @ x.T, atol=1e-13)
    np.testing.assert_array_equal(up, nde.data.lift(x, 7, seed=4))
    assert not np.allclose(up, nde.data.lift(x, 7, seed=5))
    padded = nde.data.lift(x, 5, method="pad")
    np.testing.assert_array_equal(padded, np.c_[x, np.zeros((6, 2))])
    assert nde.data.lift(np.ones((2, 2), int), 3).dtype == np.float64
    with pytest.raises(ValueError, match="at least the points' dimension 3"):
        nde.data.lift(x, 2)
    with pytest.raises(ValueError, match='"rotate" or "pad"'):
        nde.data.lift(x, 5, method="zeros")
    with pytest.raises(ValueError, match=r"matrix \(n, d\)"):
        nde.data.lift(x[0], 5)
    with pytest.raises(ValueError, match="at least 2"):
        nde.data.moons(dim=1)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(n_train=0), ValueError, "`n_train` must be a positive integer"),
        (dict(n_test=-1), ValueError, "`n_test` must be a non-negative integer"),
        (dict(n_train=2.5), ValueError, "`n_train` must be a positive integer"),
        (dict(seed=-1), ValueError, "`seed` must be a non-negative integer"),
        (dict(seed=1.5), ValueError, "`seed` must be a non-negative integer"),
        (dict(noise=-0.1), ValueError, "`noise` must be a finite number >= 0"),
        (dict(noise=np.nan), ValueError, "`noise` must be a finite number >= 0"),
        (dict(dtype=np.int32), TypeError, "`dtype` must be a floating-point dtype"),
    ],
)
def test_synthetic_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        nde.data.moons(**kwargs)


def test_synthetic_bad_shape_arguments():
    with pytest.raises(ValueError, match=r"`factor` .* must be in \(0, 1\)"):
        nde.data.circles(factor=1.0)
    with pytest.raises(ValueError, match="`factor` must be a finite number > 0"):
        nde.data.circles(factor=0.0)
    with pytest.raises(ValueError, match="`turns` must be a finite number > 0"):
        nde.data.spirals(turns=-1)
    with pytest.raises(ValueError, match="`num_classes` must be at least 2"):
        nde.data.peaks(num_classes=1)


# -------------------------------------------------------------------- time series

SMALL = dict(n_train=6, n_test=2, t1=5.0, num_times=51, noise=0.0, dtype=np.float64)
# The integrator accepts a step when its estimated local error is below 1e-12
# (relative, for states of order 1), and these solves take 50 to 150 steps: the
# global error is 1e-14 to 3e-13 as measured. 1e-11 leaves room for round-off on
# other machines, yet an error in the equations (order 1) or a fourth-order
# method at these steps (order 1e-5) would fail it by far.
TOL = 1e-11


def _trajectories(series):
    return np.concatenate([series.clean_train, series.clean_test])


def test_harmonic_oscillator_closed_form():
    series = nde.data.harmonic_oscillator(omega=2.0, **SMALL)
    y, t = _trajectories(series), series.ts
    np.testing.assert_array_equal(t, np.linspace(0, 5, 51))
    x0, v0 = y[:, :1, 0], y[:, :1, 1]
    assert np.all(np.abs(y[:, 0]) <= 1)
    x = x0 * np.cos(2 * t) + v0 / 2 * np.sin(2 * t)
    v = -2 * x0 * np.sin(2 * t) + v0 * np.cos(2 * t)
    np.testing.assert_allclose(y[..., 0], x, rtol=0, atol=TOL)
    np.testing.assert_allclose(y[..., 1], v, rtol=0, atol=TOL)
    assert series.state_names == ("x", "v") and series.params == dict(omega=2.0)


@pytest.mark.parametrize("zeta", [0.1, 1.0, 2.5])
def test_damped_oscillator_matches_matrix_exponential(zeta):
    # Under-, critically and over-damped: y(t) = expm(A t) y0 for the companion
    # matrix A, whatever the damping.
    series = nde.data.damped_oscillator(omega=1.5, zeta=zeta, **SMALL)
    y = _trajectories(series)
    a = np.array([[0.0, 1.0], [-(1.5**2), -2 * zeta * 1.5]])
    flows = scipy.linalg.expm(a * series.ts[:, None, None])  # (num_times, 2, 2)
    exact = np.einsum("tij,nj->nti", flows, y[:, 0])
    np.testing.assert_allclose(y, exact, rtol=0, atol=TOL)


def test_lotka_volterra_conserves_its_invariant():
    p = dict(alpha=1.2, beta=0.8, gamma=2.0, delta=0.9)
    series = nde.data.lotka_volterra(**p, **SMALL)
    x, y = np.moveaxis(_trajectories(series), -1, 0)
    assert np.all((x[:, 0] >= 0.5) & (x[:, 0] <= 2.5)) and np.all(x > 0)
    v = p["delta"] * x - p["gamma"] * np.log(x) + p["beta"] * y - p["alpha"] * np.log(y)
    np.testing.assert_allclose(v, np.broadcast_to(v[:, :1], v.shape), rtol=TOL)
    # The populations move: the check is not passed by a constant trajectory.
    assert np.ptp(x, axis=1).min() > 0.1


def test_pendulum_energy_and_elliptic_closed_form():
    series = nde.data.pendulum(g=9.81, length=2.0, **SMALL)
    y, t = _trajectories(series), series.ts
    k = 9.81 / 2.0
    theta, omega = y[..., 0], y[..., 1]
    energy = 0.5 * omega**2 - k * np.cos(theta)
    np.testing.assert_allclose(energy - energy[:, :1], 0, atol=TOL)
    # Librating pendulum: sin(theta/2) = kappa sn(u0 + sqrt(k) t | kappa^2), with
    # kappa = sin(theta_max / 2) from the energy, and u0 from the initial state.
    kappa = np.sqrt((1 + energy[:, 0] / k) / 2)
    m = kappa**2
    phi0 = np.arcsin(np.sin(theta[:, 0] / 2) / kappa)
    u0 = scipy.special.ellipkinc(phi0, m)
    u0 = np.where(omega[:, 0] >= 0, u0, 2 * scipy.special.ellipk(m) - u0)
    sn = scipy.special.ellipj(u0[:, None] + np.sqrt(k) * t, m[:, None])[0]
    exact = 2 * np.arcsin(kappa[:, None] * sn)
    np.testing.assert_allclose(theta, exact, rtol=0, atol=TOL)


def test_double_pendulum_conserves_energy():
    p = dict(m1=1.0, m2=0.5, l1=1.0, l2=0.7, g=9.81)
    series = nde.data.double_pendulum(**p, **(SMALL | dict(t1=3.0, num_times=31)))
    th1, th2, w1, w2 = np.moveaxis(_trajectories(series), -1, 0)
    m1, m2, l1, l2, g = p.values()
    energy = (
        0.5 * (m1 + m2) * l1**2 * w1**2
        + 0.5 * m2 * l2**2 * w2**2
        + m2 * l1 * l2 * w1 * w2 * np.cos(th1 - th2)
        - (m1 + m2) * g * l1 * np.cos(th1)
        - m2 * g * l2 * np.cos(th2)
    )
    # Energies are of order (m1 + m2) g l1 ~ 15, and the chaotic motion takes
    # smaller steps and amplifies local errors: measured drift 7e-11, bound 5e-10
    # (relative 3e-11).
    np.testing.assert_allclose(energy - energy[:, :1], 0, atol=50 * TOL)
    assert np.ptp(th2, axis=1).min() > 0.1


def test_time_series_noise_seed_and_split():
    kw = dict(n_train=50, n_test=30, t1=2.0, num_times=21)
    a = nde.data.harmonic_oscillator(noise=0.1, seed=7, **kw)
    b = nde.data.harmonic_oscillator(noise=0.1, seed=7, **kw)
    quiet = nde.data.harmonic_oscillator(noise=0.0, seed=7, **kw)
    other = nde.data.harmonic_oscillator(noise=0.1, seed=8, **kw)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    ts, y_train, y_test = a
    assert ts.dtype == y_train.dtype == np.float32
    assert y_train.shape == (50, 21, 2) and y_test.shape == (30, 21, 2)
    # The clean trajectories do not depend on the noise level.
    np.testing.assert_array_equal(a.clean_train, quiet.clean_train)
    np.testing.assert_array_equal(quiet.y_test, quiet.clean_test)
    assert not np.array_equal(a.clean_train, other.clean_train)
    # 80 x 21 x 2 = 3360 noise samples: relative standard error of the standard
    # deviation 1.2%; 6% is 5 standard errors.
    residual = np.concatenate([a.y_train - a.clean_train, a.y_test - a.clean_test])
    np.testing.assert_allclose(residual.std(), 0.1, rtol=0.06)
    assert abs(residual.mean()) < 5 * 0.1 / np.sqrt(residual.size)
    # The split partitions one draw of initial states, none shared.
    whole = nde.data.harmonic_oscillator(
        noise=0.1, seed=7, n_train=80, n_test=0, t1=2.0, num_times=21
    )
    np.testing.assert_array_equal(np.concatenate([a.y_train, a.y_test]), whole.y_train)
    assert not _rows(a.clean_train[:, 0]) & _rows(a.clean_test[:, 0])


@pytest.mark.parametrize(
    "make, kwargs, match",
    [
        ("harmonic_oscillator", dict(omega=0.0), "`omega` must be a finite number > 0"),
        ("damped_oscillator", dict(zeta=-0.5), "`zeta` must be a finite number >= 0"),
        ("lotka_volterra", dict(beta=-1.0), "`beta` must be a finite number > 0"),
        ("pendulum", dict(length=np.inf), "`length` must be a finite number > 0"),
        ("double_pendulum", dict(m2=0), "`m2` must be a finite number > 0"),
        ("pendulum", dict(t1=0.0), "`t1` must be a finite number > 0"),
        ("pendulum", dict(num_times=1), "`num_times` must be at least 2"),
        ("pendulum", dict(noise=-1.0), "`noise` must be a finite number >= 0"),
        ("pendulum", dict(n_train=0), "`n_train` must be a positive integer"),
    ],
)
def test_time_series_bad_arguments(make, kwargs, match):
    with pytest.raises(ValueError, match=match):
        getattr(nde.data, make)(**kwargs)


def test_integrator_refuses_blow_up():
    # y' = y^2, y(0) = 1 has the solution 1 / (1 - t), which blows up at t = 1.
    ts = np.array([0.0, 0.5, 2.0])
    y = integrate(lambda t, y: y**2, np.ones((1, 1)), ts[:2], max_step=0.5)
    np.testing.assert_allclose(y[0, :, 0], 1 / (1 - ts[:2]), rtol=1e-12)
    with pytest.raises(
        RuntimeError, match="could not be integrated past t=1: the solution blows up"
    ):
        integrate(lambda t, y: y**2, np.ones((1, 1)), ts, max_step=0.5)


# ---------------------------------------------------------------------- real data


def test_digits():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    data = nde.data.digits(seed=0)
    again = nde.data.digits(seed=0)
    other = nde.data.digits(seed=1)
    for u, v in zip(data, again):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(data.y_train, other.y_train)
    x = np.concatenate([data.x_train, data.x_test])
    y = np.concatenate([data.y_train, data.y_test])
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32 and y.dtype == np.int32
    assert data.num_classes == 10 and data.class_names == tuple("0123456789")
    # Scaled from 0..16 to [0, 1]: every pixel is a multiple of 1/16.
    assert x.min() == 0 and x.max() == 1
    np.testing.assert_array_equal(x * 16, np.round(x * 16))
    # Disjoint and complete: train + test is exactly scikit-learn's set of
    # (image, label) pairs, each as often as there.
    raw = sklearn_datasets.load_digits()
    ours = np.c_[x.reshape(1797, 64) * 16, y]
    theirs = np.c_[raw.data, raw.target]
    np.testing.assert_array_equal(
        ours[np.lexsort(ours.T[::-1])], theirs[np.lexsort(theirs.T[::-1])]
    )
    # Stratified: round(0.2 n_c) test images per class.
    counts = np.bincount(raw.target)
    np.testing.assert_array_equal(np.bincount(data.y_test), np.round(0.2 * counts))
    small = nde.data.digits(test_fraction=0.5, dtype=np.float64)
    assert small.x_train.dtype == np.float64
    np.testing.assert_array_equal(np.bincount(small.y_test), np.round(0.5 * counts))
    with pytest.raises(ValueError, match=r"`test_fraction` must be in \[0, 1\)"):
        nde.data.digits(test_fraction=1.0)


def test_karate_club():
    nx = pytest.importorskip("networkx")
    g = nde.data.karate_club()
    assert g.num_nodes == 34 and g.num_edges == 156
    assert g.senders.dtype == g.receivers.dtype == np.int32
    edges = set(zip(g.senders.tolist(), g.receivers.tolist()))
    assert len(edges) == 156 and all((r, s) in edges for s, r in edges)
    undirected = {(min(e), max(e)) for e in edges}
    assert len(undirected) == 78
    assert undirected == {(min(e), max(e)) for e in nx.karate_club_graph().edges()}
    assert all(s != r for s, r in edges)
    # Zachary (1977): the instructor (node 0) has 16 friends, the administrator
    # (node 33) 17; each faction has 17 members.
    degree = np.bincount(g.senders, minlength=34)
    assert degree[0] == 16 and degree[33] == 17 and degree.sum() == 156
    assert g.labels[0] == 0 and g.labels[33] == 1
    np.testing.assert_array_equal(np.bincount(g.labels), [17, 17])
    assert g.class_names == ("Mr. Hi", "Officer") and g.num_classes == 2
    np.testing.assert_array_equal(g.train_index, [0, 33])
    assert not np.any(g.train_mask & g.test_mask) and np.all(g.train_mask | g.test_mask)
    np.testing.assert_array_equal(g.test_index, np.arange(1, 33))
    np.testing.assert_array_equal(g.nodes, np.eye(34, dtype=np.float32))
    features = np.arange(68.0).reshape(34, 2)
    custom = nde.data.karate_club(features=features, train_nodes=[1, 2, 3])
    np.testing.assert_array_equal(custom.nodes, features)
    assert custom.train_mask.sum() == 3
    with pytest.raises(ValueError, match=r"array \(34, num_features\).*\(33, 2\)"):
        nde.data.karate_club(features=features[:33])
    with pytest.raises(TypeError, match="`features` must be numeric"):
        nde.data.karate_club(features=np.full((34, 1), "a"))
    with pytest.raises(ValueError, match='"identity" or an array'):
        nde.data.karate_club(features="degree")
    with pytest.raises(ValueError, match="non-finite value.*row 3, column 1"):
        nde.data.karate_club(features=np.where(features == 7, np.nan, features))
    for bad in ([0, 34], [], [1, 1], [0.5]):
        with pytest.raises(ValueError, match="distinct node indices in"):
            nde.data.karate_club(train_nodes=bad)
    with pytest.raises(ValueError, match="leaves no test nodes"):
        nde.data.karate_club(train_nodes=range(34))


def test_missing_extra_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "networkx", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    monkeypatch.setitem(sys.modules, "pydoc_data.topics", None)
    with pytest.raises(ImportError, match="standard library's `pydoc_data`"):
        nde.data.text_corpus()
    with pytest.raises(ImportError, match=r"pip install 'neuralde\[data\]'"):
        nde.data.karate_club()
    with pytest.raises(ImportError, match=r"digits .* scikit-learn"):
        nde.data.digits()


# --------------------------------------------------------------------------- text


def test_text_corpus():
    corpus = nde.data.text_corpus()
    if (3, 10) <= sys.version_info[:2] <= (3, 13):
        # The text is the same on every CPython from 3.10 to 3.13 (measured on
        # 3.10.13, 3.11.2, 3.11.7, 3.12.1, 3.13.0).
        assert len(corpus.text) == 49101 and corpus.vocab_size == 92
        assert corpus.sha256 == (
            "e3fbdb5ba5b9ae14ab2ba9c6f61d87cb1c0e4de4739285d1eb71f44f42d51629"
        )
    assert len(corpus.text) > 30_000
    assert list(corpus.vocab) == sorted(set(corpus.text))
    tokens = np.concatenate([corpus.train, corpus.test])
    assert tokens.dtype == np.int32
    np.testing.assert_array_equal(tokens, corpus.encode(corpus.text))
    assert corpus.decode(tokens) == corpus.text
    assert len(corpus.test) == round(0.1 * len(corpus.text))
    assert corpus.decode(corpus.train) == corpus.text[: len(corpus.train)]
    assert 'The "assert" statement' in corpus.text
    half = nde.data.text_corpus(test_fraction=0.5)
    assert abs(len(half.train) - len(half.test)) <= 1
    windows = corpus.sequences(50, stride=25)
    assert windows.num_classes == corpus.vocab_size
    assert windows.x_train.shape[1] == 50
    assert windows.x_train.shape[0] == len(range(0, len(corpus.train) - 50, 25))
    np.testing.assert_array_equal(windows.y_train[:, :-1], windows.x_train[:, 1:])
    np.testing.assert_array_equal(windows.x_train[1], corpus.train[25:75])
    np.testing.assert_array_equal(windows.y_test[0], corpus.test[1:51])
    with pytest.raises(ValueError, match="'€' is not in the corpus' vocabulary"):
        corpus.encode("5 €")
    with pytest.raises(
        ValueError, match=r"Token 92 is outside the vocabulary \[0, 92\)"
    ):
        corpus.decode([3, corpus.vocab_size])
    with pytest.raises(ValueError, match="Tokens must be integers"):
        corpus.decode([1.0])
    with pytest.raises(ValueError, match="test part has 4910 tokens, too few"):
        corpus.sequences(10_000)
    with pytest.raises(ValueError, match="`length` must be a positive integer"):
        corpus.sequences(0)
    with pytest.raises(ValueError, match="`stride` must be a positive integer"):
        corpus.sequences(10, stride=0)
    with pytest.raises(ValueError, match=r"`test_fraction` must be in \[0, 1\)"):
        nde.data.text_corpus(test_fraction=-0.1)


# ------------------------------------------------------------------------- loader


def test_from_arrays_split():
    x = np.arange(40.0).reshape(20, 2)
    y = np.arange(20) % 4
    data = nde.data.from_arrays(x, y, test_fraction=0.25, seed=3)
    again = nde.data.from_arrays(x, y, test_fraction=0.25, seed=3)
    for u, v in zip(data, again):
        np.testing.assert_array_equal(u, v)
    assert data.x_train.shape == (15, 2) and data.x_test.shape == (5, 2)
    assert data.num_classes == 4 and data.y_train.dtype == np.int32
    assert data.x_train.dtype == np.float32
    # Disjoint and complete, and each row keeps its own label.
    ids = np.concatenate([data.x_train[:, 0], data.x_test[:, 0]]) / 2
    np.testing.assert_array_equal(np.sort(ids), np.arange(20))
    np.testing.assert_array_equal(np.concatenate([data.y_train, data.y_test]), ids % 4)
    ordered = nde.data.from_arrays(x, y, test_fraction=0.25, shuffle=False)
    np.testing.assert_array_equal(ordered.x_test, x[15:])
    strat = nde.data.from_arrays(x, y, test_fraction=0.5, stratify=True, seed=1)
    np.testing.assert_array_equal(np.bincount(strat.y_test), [2, 2, 2, 2])
    regression = nde.data.from_arrays(x, x[:, :1] * 0.5, test_fraction=0)
    assert regression.num_classes is None and regression.y_train.dtype == np.float32
    assert regression.x_test.shape == (0, 2)
    named = nde.data.from_arrays(x, y % 2, num_classes=3, class_names=["a", "b", "c"])
    assert named.num_classes == 3 and named.class_names == ("a", "b", "c")


@pytest.mark.parametrize(
    "x, y, kwargs, error, match",
    [
        (
            np.ones((5, 2)),
            np.ones(4, int),
            {},
            ValueError,
            "same number of examples.*5 and 4",
        ),
        (np.ones((0, 2)), np.ones(0, int), {}, ValueError, "The dataset is empty"),
        (np.ones((5, 0)), np.ones(5, int), {}, ValueError, "has no features"),
        (
            np.ones(5),
            np.ones(5, int),
            {},
            ValueError,
            r"for a single feature use `x\[:, None\]`",
        ),
        (
            np.array([["a"]] * 3),
            np.ones(3, int),
            {},
            TypeError,
            "`x` must hold numbers",
        ),
        (np.ones((3, 2)), -np.ones(3, int), {}, ValueError, "labels must be >= 0"),
        (
            np.ones((3, 2)),
            np.arange(3),
            dict(num_classes=2),
            ValueError,
            "too small for the label 2",
        ),
        (
            np.ones((3, 2)),
            np.arange(3),
            dict(num_classes=4, class_names="abc"),
            ValueError,
            "name each of the 4 classes, got 3 names",
        ),
        (
            np.ones((3, 2)),
            np.ones(3),
            dict(stratify=True),
            ValueError,
            "need integer class labels",
        ),
        (
            np.ones((3, 2)),
            np.ones((3, 2), int),
            {},
            ValueError,
            r"must be a vector \(n,\)",
        ),
        (
            np.ones((3, 2)),
            np.ones(3, int),
            dict(stratify=True, shuffle=False),
            ValueError,
            "needs `shuffle=True`",
        ),
        (
            np.ones((2, 2)),
            np.ones(2, int),
            dict(test_fraction=0.2),
            ValueError,
            "leaves the test set empty",
        ),
        (
            np.ones((1, 2)),
            np.ones(1, int),
            dict(test_fraction=0.6),
            ValueError,
            "leaves the training set empty",
        ),
        (
            np.ones((3, 2)),
            np.array(1),
            {},
            ValueError,
            "got 3 and a scalar",
        ),
        (
            np.ones((3, 2)),
            np.ones(3, int),
            dict(test_fraction=1),
            ValueError,
            r"in \[0, 1\)",
        ),
        (
            np.ones((3, 2)),
            np.ones(3),
            dict(dtype=int),
            TypeError,
            "floating-point dtype",
        ),
    ],
)
def test_from_arrays_bad_input(x, y, kwargs, error, match):
    with pytest.raises(error, match=match):
        nde.data.from_arrays(x, y, **kwargs)


def test_nan_is_named_by_row_and_column():
    x = np.ones((6, 3))
    x[4, 2] = np.nan
    with pytest.raises(
        ValueError, match=r"`x` holds a non-finite value \(nan\) at row 4, column 2"
    ):
        nde.data.from_arrays(x, np.zeros(6, int))
    images = np.ones((6, 1, 2, 2))
    images[1, 0, 1, 0] = np.inf
    with pytest.raises(ValueError, match=r"at row 1, entry \(0, 1, 0\) of the example"):
        nde.data.from_arrays(images, np.zeros(6, int))
    with pytest.raises(
        ValueError, match=r"`y` holds a non-finite value \(nan\) at row 0"
    ):
        nde.data.from_arrays(np.ones((6, 2)), np.r_[np.nan, np.ones(5)])


def test_load_npz_and_csv(tmp_path):
    x = np.random.default_rng(0).normal(size=(10, 3))
    y = np.arange(10) % 2
    np.savez(tmp_path / "arrays.npz", features=x, labels=y)
    data = nde.data.load(
        tmp_path / "arrays.npz", x_key="features", y_key="labels", dtype=np.float64
    )
    direct = nde.data.from_arrays(x, y, dtype=np.float64)
    for u, v in zip(data, direct):
        np.testing.assert_array_equal(u, v)
    assert data.name == "arrays"
    with pytest.raises(
        ValueError, match=r"no array named 'x'; it holds \['features', 'labels'\]"
    ):
        nde.data.load(tmp_path / "arrays.npz")

    csv = tmp_path / "flowers.csv"
    csv.write_text(
        "width,height,kind\n1.5,2,setosa\n\n2.5,3,virginica\n3.5,4,setosa\n"
        "4.5,5,versicolor\n"
    )
    data = nde.data.load(csv, test_fraction=0, dtype=np.float64)
    assert data.class_names == ("setosa", "versicolor", "virginica")
    order = np.argsort(data.x_train[:, 0])
    np.testing.assert_array_equal(
        data.x_train[order], [[1.5, 2], [2.5, 3], [3.5, 4], [4.5, 5]]
    )
    np.testing.assert_array_equal(data.y_train[order], [0, 2, 0, 1])
    numeric = tmp_path / "numbers.csv"
    numeric.write_text("a,b,c\n1,2.5,3\n4,5.5,6\n")
    by_name = nde.data.load(numeric, target="b", test_fraction=0, shuffle=False)
    assert by_name.num_classes is None
    np.testing.assert_array_equal(by_name.y_train, [2.5, 5.5])
    np.testing.assert_array_equal(by_name.x_train, [[1, 3], [4, 6]])

    tsv = tmp_path / "plain.tsv"
    tsv.write_text("0.5\t1\t0\n1.5\t2\t1\n2.5\t3\t1\n")  # no header; integer target
    data = nde.data.load(tsv, test_fraction=0, shuffle=False)
    assert data.num_classes == 2
    np.testing.assert_array_equal(data.x_train, [[0.5, 1], [1.5, 2], [2.5, 3]])

    def write(text):
        path = tmp_path / "bad.csv"
        path.write_text(text)
        return path

    with pytest.raises(
        ValueError, match=r"row 1 \(line 3 of .*bad.csv'\), column 1 \('b'\)"
    ):
        nde.data.load(write("a,b,y\n1,2,0\n3,,1\n4,5,0\n"))
    with pytest.raises(
        ValueError, match=r"Cannot read 'x' as a number: feature row 0, column 0"
    ):
        nde.data.load(write("a,b,y\nx,2,0\n"))
    with pytest.raises(ValueError, match="Line 3 of .* has 2 fields, expected 3"):
        nde.data.load(write("a,b,y\n1,2,0\n3,1\n"))
    with pytest.raises(ValueError, match="The dataset is empty"):
        nde.data.load(write("a,b,y\n"))
    with pytest.raises(ValueError, match="The dataset is empty"):
        nde.data.load(write(""))
    with pytest.raises(ValueError, match="The target of row 1 .* is empty"):
        nde.data.load(write("a,y\n1,cat\n2,\n"))
    with pytest.raises(ValueError, match=r"No column named 'z'.*\['a', 'y'\]"):
        nde.data.load(write("a,y\n1,0\n"), target="z")
    with pytest.raises(
        ValueError, match="`target=5` is out of range for the 2 columns"
    ):
        nde.data.load(write("a,y\n1,0\n"), target=5)
    with pytest.raises(ValueError, match="from its suffix '.json'"):
        nde.data.load(tmp_path / "data.json")
