import math

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.linalg
from jax.flatten_util import ravel_pytree

import neuralde as nde


S = nde.stability


def _linear(A):
    return lambda t, y, args: A @ y


def _with_weight(field, W):
    """`field` with the same weight matrix `W` in every layer."""
    return eqx.tree_at(
        lambda f: f.operator.weight, field, jnp.tile(W, (field.layers, 1, 1))
    )


def _sorted(ev):
    """Sorted by decreasing real part, then imaginary part; real parts that differ
    by round-off only count as equal."""
    ev = np.asarray(ev)
    return ev[np.lexsort((ev.imag, -np.round(ev.real, 9)))]


# --- Jacobian spectra -----------------------------------------------------------------


def _mlp_jacobian(f, t, y):
    """dF/dy = diag(tanh'(W y + b)) W of an MLP field, in numpy."""
    k = min(int(t * f.layers / f.t1), f.layers - 1)
    W, b = np.asarray(f.operator.weight[k]), np.asarray(f.bias[k])
    return (1 - np.tanh(W @ y + b) ** 2)[:, None] * W


def test_jacobian_spectrum_dense_matches_numpy(getkey):
    f = nde.fields.MLP(5, layers=3, key=getkey())
    h = nde.fields.Hamiltonian(3, 4, layers=2, key=getkey())
    y = np.asarray(jr.normal(getkey(), (5,)))
    s = tuple(np.asarray(jr.normal(getkey(), (2, 3))))
    spectrum = eqx.filter_jit(S.jacobian_spectrum)
    ev = spectrum(f, 0.4, y)
    np.testing.assert_allclose(
        ev, _sorted(np.linalg.eigvals(_mlp_jacobian(f, 0.4, y))), atol=1e-12
    )
    assert np.all(np.diff(np.asarray(ev.real)) <= 0)
    # Two streams: the Jacobian [[0, K^T D_z K], [-K^T D_y K, 0]] of the whole state.
    K, b = np.asarray(h.operator.weight[1]), np.asarray(h.bias[1])
    D = [1 - np.tanh(K @ x + b) ** 2 for x in s]
    zero = np.zeros((3, 3))
    J = np.block(
        [[zero, K.T @ (D[1][:, None] * K)], [-K.T @ (D[0][:, None] * K), zero]]
    )
    ev = spectrum(h, 0.7, s)
    np.testing.assert_allclose(_sorted(ev), _sorted(np.linalg.eigvals(J)), atol=1e-12)
    # It is similar to an antisymmetric matrix here (both blocks are positive
    # definite): the spectrum lies on the imaginary axis.
    np.testing.assert_allclose(ev.real, 0, atol=1e-12)

    # Along a trajectory, at the initial and the final state; and over a batch, by
    # vmap, the same as one by one.
    @eqx.filter_jit
    def along(f, y, ts):
        spectra = S.trajectory_spectrum(f, y, ts, steps=6, solver="euler")
        y1 = nde.solve(f, y, steps=6, solver="euler")
        ys = jnp.stack([y, y1])
        return spectra, y1, jax.vmap(lambda y: S.jacobian_spectrum(f, 0.4, y))(ys)

    ts = jnp.array([0.0, 0.35, 1.0])
    spectra, y1, batch = along(f, y, ts)
    for i, state in [(0, y), (2, np.asarray(y1))]:
        ev = _sorted(np.linalg.eigvals(_mlp_jacobian(f, float(ts[i]), state)))
        np.testing.assert_allclose(spectra[i], ev, atol=1e-12)
    np.testing.assert_allclose(batch[0], spectrum(f, 0.4, y), atol=1e-12)


def test_arnoldi_matches_dense_on_40_dim_state(getkey):
    n = 40
    # A random 40x40 matrix (spectrum filling a disk of radius ~1) plus an outlier
    # eigenvalue ~3: the Jacobian's rightmost eigenvalue, 2.71, stands apart from the
    # rest (|lambda| <= 0.90). Arnoldi's Ritz value for an isolated extreme
    # eigenvalue converges geometrically in the Krylov dimension (measured error
    # 9e-10 at k=15, 4e-11 at k=20, 3e-15 at k=25): 1e-6 at k=20 is a wide margin.
    u = jr.normal(getkey(), (n,))
    u = u / jnp.linalg.norm(u)
    W = jr.normal(getkey(), (n, n)) / np.sqrt(n) + 3 * jnp.outer(u, u)
    f = _with_weight(nde.fields.MLP(n, key=getkey()), W)
    y = 0.3 * jr.normal(getkey(), (n,))
    key = getkey()

    @eqx.filter_jit
    def spectra(field, y):
        dense = S.jacobian_spectrum(field, 0.0, y)
        ritz = S.jacobian_spectrum(field, 0.0, y, method="arnoldi", krylov=20, key=key)
        full = S.jacobian_spectrum(field, 0.0, y, method="arnoldi", krylov=n, key=key)
        return dense, ritz, full

    dense, ritz, full = spectra(f, y)
    assert ritz.shape == (20,)
    assert dense[0].real > 2 and abs(dense[0].imag) == 0
    assert abs(ritz[0] - dense[0]) < 1e-6  # the spectral abscissa
    assert abs(jnp.max(jnp.abs(ritz)) - jnp.max(jnp.abs(dense))) < 1e-6
    # With a full Krylov space, H is J in an orthonormal basis: every eigenvalue.
    np.testing.assert_allclose(full, dense, atol=1e-9)


def test_arnoldi_breakdown_adds_no_spurious_eigenvalues(getkey):
    # Three distinct eigenvalues: the Krylov space is invariant after 3 steps. The
    # basis continues from fresh directions, and every Ritz value stays inside the
    # spectrum [-3, -1] (an unguarded breakdown would add zeros).
    d = jnp.array([-1.0, -1, -1, -2, -2, -2, -3, -3, -3, -3, -1, -2])
    Q, _ = jnp.linalg.qr(jr.normal(getkey(), (12, 12)))
    A = Q @ jnp.diag(d) @ Q.T
    y = jnp.ones(12)
    key = getkey()

    @eqx.filter_jit
    def ritz_values(A):
        linear = lambda t, y, A: A @ y  # noqa: E731
        return S.jacobian_spectrum(
            linear, 0.0, y, A, method="arnoldi", krylov=8, key=key
        )

    ritz = ritz_values(A)
    np.testing.assert_allclose(ritz[jnp.array([0, -1])], [-1, -3], atol=1e-12)
    assert jnp.all((ritz.real <= -1 + 1e-12) & (ritz.real >= -3 - 1e-12))
    # J = 0: every product is zero, and so is every Ritz value.
    np.testing.assert_array_equal(ritz_values(0 * A), 0)


# --- Flow sensitivity -----------------------------------------------------------------


@pytest.mark.slow
def test_flow_sensitivity_matches_svd_of_flow_jacobian(getkey):
    key = getkey()

    @eqx.filter_jit
    def both(field, state, solver, steps, iterations):
        x, unravel = ravel_pytree(state)
        flow = lambda x: ravel_pytree(  # noqa: E731
            nde.solve(field, unravel(x), steps=steps, solver=solver)
        )[0]
        out = S.flow_sensitivity(
            field, state, steps=steps, solver=solver, iterations=iterations, key=key
        )
        return out, jax.jacfwd(flow)(x)

    # A two-stream state is perturbed as a whole. With `iterations` >= the size of
    # the state, the Krylov space is everything, and the estimate is exact.
    h = nde.fields.Hamiltonian(2, 3, layers=2, key=getkey())
    s = tuple(jr.normal(getkey(), (2, 2)))
    out, J = both(h, s, "leapfrog", 10, 20)
    svals = np.linalg.svd(J, compute_uv=False)
    np.testing.assert_allclose(out.sigma_max, svals[0], rtol=1e-12)
    np.testing.assert_allclose(out.lyapunov, np.log(svals[0]) / h.t1, rtol=1e-12)
    assert isinstance(out.direction, tuple) and out.direction[0].shape == (2,)
    v = jnp.concatenate(out.direction)
    np.testing.assert_allclose(jnp.linalg.norm(J @ v), svals[0], rtol=1e-12)

    # A 30-dimensional state with close singular values (s2/s1 = 0.96) and 16
    # products: Lanczos converges fast (measured relative error 5e-13; plain power
    # iteration with as many products: 2e-2).
    g = nde.fields.MLP(30, layers=2, key=getkey())
    out, J = both(g, jr.normal(getkey(), (30,)), "euler", 4, 16)
    svals = np.linalg.svd(J, compute_uv=False)
    assert out.sigma_max <= svals[0] * (1 + 1e-14)
    np.testing.assert_allclose(out.sigma_max, svals[0], rtol=1e-8)


def _rk4_matrix(A, h):
    """One RK4 step of y' = A y: the matrix sum_{k <= 4} (hA)^k / k!."""
    hA = h * np.asarray(A)
    return sum(np.linalg.matrix_power(hA, k) / math.factorial(k) for k in range(5))


def test_flow_sensitivity_of_linear_field_is_norm_of_expm(getkey):
    A = jnp.array([[-0.5, 2.0, 0.0], [-1.0, 0.1, 0.3], [0.2, 0.0, -1.0]])
    T, n = 1.5, 60
    out = eqx.filter_jit(S.flow_sensitivity)(
        _linear(A), jnp.ones(3), t1=T, steps=n, solver="rk4", key=getkey()
    )
    # The discrete flow map is exactly P^n, P the RK4 step matrix: this checks the
    # JVP/VJP path through a Runge-Kutta solve.
    discrete = np.linalg.matrix_power(_rk4_matrix(A, T / n), n)
    np.testing.assert_allclose(out.sigma_max, np.linalg.svd(discrete)[1][0], rtol=1e-12)
    expected = np.linalg.svd(scipy.linalg.expm(T * A), compute_uv=False)[0]
    # RK4's global error is O(h^4 T |A|^5 / 120) with h = 0.025: a few 1e-8
    # (measured 2e-8 relative).
    np.testing.assert_allclose(out.sigma_max, expected, rtol=2e-7)
    np.testing.assert_allclose(out.lyapunov, np.log(expected) / T, rtol=2e-6)


# Haber & Ruthotto's 2-D example: 20 residual layers h + 0.1 tanh(W h), b = 0, with a
# rotation, a contracting and an expanding W.
RESNET_2D = {
    "layers": 20,
    "alpha": 0.1,
    "weights": {
        "rotation": [[0, -1], [1, 0]],
        "contracting": [[-2, 0], [2, -2]],
        "expanding": [[2, -2], [0, 2]],
    },
}


def test_resnet_2d_stability_constants(getkey):
    alpha = RESNET_2D["alpha"]
    key = getkey()

    @eqx.filter_jit
    def constant(W, layers, h0):
        f = nde.fields.MLP(2, layers=layers, t1=layers * alpha, key=key)
        f = _with_weight(f, W)
        # Two Lanczos iterations span the 2-D state: exact.
        out = S.flow_sensitivity(f, h0, steps=layers, solver="euler", key=key)
        jac = jax.jacfwd(lambda h: nde.resnet(f, h))(h0)
        return out.sigma_max, jnp.linalg.svd(jac, compute_uv=False)[0]

    h0 = jnp.array([0.3, -0.2])
    zero = jnp.zeros(2)
    M = {}
    for kind, W in RESNET_2D["weights"].items():
        W = jnp.array(W, dtype=float)
        m, ref = constant(W, RESNET_2D["layers"], h0)
        np.testing.assert_allclose(m, ref, rtol=1e-12)
        # At the fixed point h = 0 every layer is I + alpha W: M is closed-form.
        M[kind] = [constant(W, L, zero)[0] for L in (10, 20, 40)]
        for L, m in zip((10, 20, 40), M[kind]):
            step = np.eye(2) + alpha * np.asarray(W)
            power = np.linalg.matrix_power(step, L)
            np.testing.assert_allclose(m, np.linalg.svd(power)[1][0], rtol=1e-12)
        M[kind + "@h0"] = m
    # Rotation: forward Euler on an imaginary spectrum, |1 + 0.1 i|^20 = 1.105.
    assert 1 < M["rotation@h0"] < 1.25 and 1 < M["rotation"][1] < 1.11
    assert M["contracting@h0"] < 0.5
    assert M["contracting"][0] > M["contracting"][1] > M["contracting"][2]
    assert M["expanding@h0"] > 2
    assert 1 < M["expanding"][0] < M["expanding"][1] < M["expanding"][2]


# --- Perturbations and gradients ------------------------------------------------------


def test_perturbation_growth_bounded_by_sigma_max(getkey):
    f = nde.fields.MLP(4, layers=4, key=getkey())
    y = jr.normal(getkey(), (4,))
    growth = eqx.filter_jit(S.perturbation_growth)
    # `eps` as an array is traced: one compilation for both sizes.
    eps = jnp.asarray(1e-6)
    out = growth(f, y, eps=eps, samples=32, steps=8, solver="euler", key=getkey())
    assert out.random.shape == (32,)
    # To first order every ratio is |J d| / |d| <= sigma_max, attained by the
    # adversarial direction; the O(eps) nonlinear terms are ~5e-8 relative.
    assert jnp.all(out.random <= out.adversarial * (1 + 1e-6))
    assert jnp.all(out.random > 0.1)
    np.testing.assert_allclose(out.adversarial, out.sigma_max, rtol=1e-5)
    # For a large perturbation the nonlinearity shows.
    eps = jnp.asarray(0.3)
    big = growth(f, y, eps=eps, samples=32, steps=8, solver="euler", key=getkey())
    assert abs(big.adversarial - big.sigma_max) > 1e-4 * big.sigma_max


def test_gradient_norms_match_direct_computation(getkey):
    # Linear field, RK4: one step is the matrix P = sum_{k<=4} (hA)^k/k!, so
    # dL/dy_j = (P^T)^(n-j) dL/dy_n exactly, and exp((T - t_j) A)^T dL/dy_n up to
    # RK4's error.
    A = jnp.array([[-0.5, 2.0, 0.0], [-1.0, 0.1, 0.3], [0.2, 0.0, -1.0]])
    T, n = 1.5, 30
    y0 = jnp.array([1.0, -0.5, 0.25])

    def loss(y):
        return jnp.sum(jnp.sin(y))

    norms = eqx.filter_jit(S.gradient_norms)(
        _linear(A), y0, loss, t1=T, steps=n, solver="rk4"
    )
    assert norms.shape == (n + 1,)
    P = _rk4_matrix(A, T / n)
    g = np.cos(np.linalg.matrix_power(P, n) @ y0)
    exact = [
        np.linalg.norm(np.linalg.matrix_power(P.T, n - j) @ g) for j in range(n + 1)
    ]
    np.testing.assert_allclose(norms, exact, rtol=1e-12)
    ts = np.linspace(0, T, n + 1)
    flow = [np.linalg.norm(scipy.linalg.expm((T - t) * A).T @ g) for t in ts]
    np.testing.assert_allclose(norms, flow, rtol=1e-6)  # measured 3.4e-7

    # A ResNet: the gradient with respect to each layer's input, by hand.
    f = nde.fields.MLP(3, layers=5, key=getkey())
    ys = jr.normal(getkey(), (2, 3))

    def manual(y0):
        def from_layer(j, h):
            for k in range(j, 5):
                h = h + 0.2 * f(k * 0.2, h, None)
            return loss(h)

        hs = [y0]
        for k in range(5):
            hs.append(hs[-1] + 0.2 * f(k * 0.2, hs[-1], None))
        grads = [jax.grad(lambda h: from_layer(j, h))(hs[j]) for j in range(6)]
        return jnp.stack([jnp.linalg.norm(g) for g in grads])

    @jax.jit
    def compare(ys):
        norms = jax.vmap(
            lambda y: S.gradient_norms(f, y, loss, steps=5, solver="euler")
        )
        return norms(ys), jax.vmap(manual)(ys)

    batched, expected = compare(ys)
    np.testing.assert_allclose(batched, expected, rtol=1e-12)


# --- Step stability -------------------------------------------------------------------


def test_stability_function_closed_forms():
    z = jnp.array([0.3 + 0.2j, -1.5, 2j, -2.785])
    np.testing.assert_allclose(S.stability_function("euler", z), 1 + z, atol=1e-15)
    for name in ("midpoint", "heun"):
        np.testing.assert_allclose(
            S.stability_function(name, z), 1 + z + z**2 / 2, atol=1e-15
        )
    rk4 = 1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24
    np.testing.assert_allclose(S.stability_function("rk4", z), rk4, atol=1e-14)
    # RK4's real stability interval is [-2.785, 0].
    amp = jnp.abs(S.stability_function("rk4", jnp.array([-2.78, -2.79])))
    assert amp[0] < 1 < amp[1]
    # Leapfrog and symplectic Euler: stable on the imaginary segment [-2i, 2i].
    for name in ("leapfrog", "symplectic_euler"):
        amp = jnp.abs(S.stability_function(name, jnp.array([0, 1j, 1.99j, 2.01j, 0.1])))
        np.testing.assert_allclose(amp[:3], 1, atol=1e-15)
        assert amp[3] > 1 and amp[4] > 1
    # McCallum & Foster's coupling c = 0.999 leaves a parasitic root ~ c e^(-z),
    # which grows on decaying modes.
    amp = jnp.abs(S.stability_function(nde.ReversibleRK("rk4"), -0.1))
    np.testing.assert_allclose(amp, 1.10406566, rtol=1e-8)
    # Reversible Heun: stable on [-i, i] (Kidger et al. 2021).
    amp = jnp.abs(S.stability_function("reversible_heun", jnp.array([0.99j, 1.01j])))
    np.testing.assert_allclose(amp[0], 1, atol=1e-15)
    assert amp[1] > 1


def _step_matrix(solver, z, h=0.5):
    """The real matrix of one step of `solver` on the linear test problem of `z`, with
    the solver's own state where it carries one."""
    lam = z / h
    if isinstance(solver, dfx.SemiImplicitEuler | nde.Leapfrog):
        # y' = v, v' = mu y with mu = lam^2 (real here).
        mu = jnp.real(lam**2)
        terms = (dfx.ODETerm(lambda t, v, a: v), dfx.ODETerm(lambda t, y, a: mu * y))

        def step(x):
            return jnp.stack(solver.step(terms, 0.0, h, (x[0], x[1]), None, None, 0)[0])

        return jax.vmap(step, out_axes=1)(jnp.eye(2))
    L = jnp.array([[lam.real, -lam.imag], [lam.imag, lam.real]])
    term = dfx.ODETerm(lambda t, y, a: L @ y)
    if isinstance(solver, dfx.ReversibleHeun | nde.ReversibleRK):

        def step(x):
            y, w = x[:2], x[2:]
            state = (w, L @ w) if isinstance(solver, dfx.ReversibleHeun) else w
            y1, _, _, state1, _ = solver.step(term, 0.0, h, y, None, state, False)
            w1 = state1[0] if isinstance(solver, dfx.ReversibleHeun) else state1
            return jnp.concatenate([y1, w1])

        return jax.vmap(step, out_axes=1)(jnp.eye(4))

    def step(y):
        state = solver.init(term, 0.0, h, y, None)
        return solver.step(term, 0.0, h, y, None, state, False)[0]

    return jax.vmap(step, out_axes=1)(jnp.eye(2))


SOLVERS = {
    "euler": dfx.Euler(),
    "heun": dfx.Heun(),
    "rk4": nde.RK4(),
    "tsit5": dfx.Tsit5(),
    "leapfrog": nde.Leapfrog(),
    "symplectic_euler": dfx.SemiImplicitEuler(),
    "reversible_heun": dfx.ReversibleHeun(),
    "Reversible(rk4)": nde.ReversibleRK("rk4"),
}


@pytest.mark.parametrize("name", list(SOLVERS))
def test_stability_function_is_the_solver_step(name):
    # |R(z)| is the spectral radius of the actual diffrax step on the linear test
    # problem (for the reversible solvers, of the step of `(y, solver state)`).
    solver = SOLVERS[name]
    two_stream = name in ("leapfrog", "symplectic_euler")
    zs = [1.5j, 2.5j, 0.3] if two_stream else [-0.4 + 0.9j, -2.0, 0.9j, -0.1]
    step_matrix = eqx.filter_jit(_step_matrix)
    for z in zs:
        M = step_matrix(solver, jnp.asarray(z, complex))
        radius = np.max(np.abs(np.linalg.eigvals(M)))
        R = S.stability_function(solver, z)
        np.testing.assert_allclose(jnp.abs(R), radius, rtol=1e-12)


def test_step_stability_boundaries(getkey):
    y1 = jnp.ones(1)
    decay = lambda t, y, args: -y  # noqa: E731
    jitted = eqx.filter_jit(S.step_stability)

    def check(field, state, solver, dt):
        # A traced `dt`: one compilation per field and solver.
        return jitted(field, 0.0, state, solver=solver, dt=jnp.asarray(dt))

    # Euler: |1 + z| <= 1, so dt < 2 for the eigenvalue -1.
    assert check(decay, y1, "euler", 1.9).stable
    assert not check(decay, y1, "euler", 2.1).stable
    # RK4 on the real axis: dt |lambda| < 2.785.
    assert check(decay, y1, "rk4", 2.78).stable
    assert not check(decay, y1, "rk4", 2.79).stable

    # Leapfrog and symplectic Euler on a harmonic oscillator y'' = -omega^2 y,
    # omega = 3: stable iff dt omega <= 2.
    osc = nde.fields.Hyperbolic(1, 1, activation=jax.nn.identity, key=getkey())
    osc = _with_weight(osc, jnp.array([[3.0]]))
    state = (jnp.ones(1), jnp.zeros(1))
    for solver in ("leapfrog", "symplectic_euler"):
        out = check(osc, state, solver, 1.99 / 3)
        np.testing.assert_allclose(out.eigenvalues, [-3j, 3j], atol=1e-12)
        assert out.stable
        np.testing.assert_allclose(out.amplification, 1, atol=1e-12)
        assert not check(osc, state, solver, 2.01 / 3).stable

    # Forward Euler on an antisymmetric field: gamma = 0 gives an imaginary
    # spectrum and |1 + i dt omega| > 1 for every dt > 0; gamma > 0 makes small
    # steps stable. `dt` may be traced: vmap over step sizes.
    key = getkey()
    y = jr.normal(getkey(), (4,))
    dts = jnp.array([1e-3, 0.1, 1.0])

    @eqx.filter_jit
    def sweep(field, y, dts):
        return jax.vmap(
            lambda dt: S.step_stability(field, 0.0, y, solver="euler", dt=dt)
        )(dts)

    for gamma, expected in [(0.0, [False] * 3), (1.0, [True] * 3)]:
        field = nde.fields.Antisymmetric(4, gamma=gamma, key=key)
        out = sweep(field, y, dts)
        assert out.stable.tolist() == expected
        if gamma == 0:
            np.testing.assert_allclose(out.eigenvalues.real, 0, atol=1e-12)
            omega = jnp.abs(out.eigenvalues[0])
            np.testing.assert_allclose(
                out.amplification[:, 0], jnp.sqrt(1 + (dts * omega[0]) ** 2)
            )
    # The round-off allowance scales with the step: float32 resolves dt omega ~ 1e-2.
    f32 = nde.fields.Antisymmetric(4, gamma=0.0, dtype=jnp.float32, key=key)
    single = check(f32, y.astype(jnp.float32), "euler", 0.01)
    assert not single.stable and single.amplification.dtype == jnp.float32
    # ... and too large a step is unstable again: |1 + z| >= |z| - 1 > 1 once every
    # |z| = dt |lambda| exceeds 2.
    dt = 2.5 / jnp.min(jnp.abs(out.eigenvalues[0]))
    assert not check(field, y, "euler", dt).stable


# --- Energy ---------------------------------------------------------------------------


def test_energy_is_conserved_by_the_flow(getkey):
    y, z = jr.normal(getkey(), (2, 3))

    @eqx.filter_jit
    def rate_of_change(f, s):
        # dH/dt = grad H . F along the exact flow.
        grad = jax.grad(lambda s: S.energy(f, 0.0, s))(s)
        return sum(jnp.vdot(g, r) for g, r in zip(grad, f(0.0, s, None)))

    for activation in (jnp.tanh, jax.nn.relu, jax.nn.identity):
        for cls in (nde.fields.Hamiltonian, nde.fields.Hyperbolic):
            f = cls(3, 4, activation=activation, key=getkey())
            f = eqx.tree_at(lambda f: f.bias, f, jr.normal(getkey(), (1, 4)))
            assert abs(rate_of_change(f, (y, z))) < 1e-12
    f = nde.fields.Hamiltonian(3, 4, key=getkey())
    K = f.operator.weight[0]
    expected = jnp.sum(jnp.log(jnp.cosh(K @ y))) + jnp.sum(jnp.log(jnp.cosh(K @ z)))
    np.testing.assert_allclose(S.energy(f, 0.0, (y, z)), expected, rtol=1e-14)
    # log cosh does not overflow.
    big = S.energy(f, 0.0, (1e4 * y, z))
    assert jnp.isfinite(big) and big > 1e3


def test_energy_drift(getkey):
    f = nde.fields.Hamiltonian(3, 4, t1=4.0, key=getkey())
    s = tuple(jr.normal(getkey(), (2, 3)))
    drift = eqx.filter_jit(S.energy_drift)
    leapfrog = [drift(f, s, steps=n) for n in (40, 80, 160)]
    assert leapfrog[-1] < 1e-3  # measured 2.6e-4
    # Leapfrog is second order: halving the step divides the drift by 4.
    slopes = np.log2(np.array(leapfrog[:-1]) / np.array(leapfrog[1:]))
    np.testing.assert_allclose(slopes, 2, atol=0.05)
    assert drift(f, s, steps=4, solver="rk4") > 0.1
    hyperbolic = nde.fields.Hyperbolic(3, 4, t1=4.0, key=getkey())
    assert drift(hyperbolic, s, steps=160) < 1e-3


# --- jit, dtypes, errors --------------------------------------------------------------


def test_jit_does_not_retrace_and_float32(getkey):
    f = nde.fields.MLP(3, layers=2, key=getkey())

    # One trace for the float64 calls, and one for the float32 call that follows.
    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=2)
    def diagnose(field, y, key):
        out = S.flow_sensitivity(field, y, steps=4, solver="euler", key=key)
        ritz = S.jacobian_spectrum(field, 0.0, y, method="arnoldi", krylov=2, key=key)
        return out.sigma_max, ritz

    ys = jr.normal(getkey(), (2, 3))
    for y in ys:
        diagnose(f, y, getkey())
    # A float32 state stays float32 under jax_enable_x64.
    f32 = nde.fields.MLP(3, layers=2, dtype=jnp.float32, key=getkey())
    sigma, ritz = diagnose(f32, ys[0].astype(jnp.float32), getkey())
    assert sigma.dtype == jnp.float32
    assert ritz.dtype == jnp.complex64


def test_bad_inputs(getkey):
    f = nde.fields.MLP(3, key=getkey())
    h = nde.fields.Hamiltonian(3, 4, key=getkey())
    y = jnp.ones(3)
    s = (y, y)
    key = getkey()
    with pytest.raises(ValueError, match="Unknown method 'eig'"):
        S.jacobian_spectrum(f, 0.0, y, method="eig")
    with pytest.raises(ValueError, match="pass a PRNG `key=`"):
        S.jacobian_spectrum(f, 0.0, y, method="arnoldi")
    with pytest.raises(ValueError, match="`key` is used by"):
        S.jacobian_spectrum(f, 0.0, y, key=key)
    with pytest.raises(ValueError, match="`krylov` must be a positive integer"):
        S.jacobian_spectrum(f, 0.0, y, method="arnoldi", krylov=0, key=key)
    with pytest.raises(TypeError, match="floating point"):
        S.jacobian_spectrum(f, 0.0, jnp.ones(3, int))
    with pytest.raises(ValueError, match="expects a state of shape"):
        S.jacobian_spectrum(f, 0.0, jnp.ones(4))
    with pytest.raises(ValueError, match="Unknown method"):
        S.trajectory_spectrum(f, y, jnp.array([0.5]), steps=2, method="qr")

    with pytest.raises(ValueError, match="fixed steps: pass `steps=` or `dt0=`"):
        S.flow_sensitivity(f, y, solver="tsit5", key=key)
    with pytest.raises(ValueError, match="fixed steps: pass `steps=` or `dt0=`"):
        S.flow_sensitivity(f, y, solver="rk4", key=key)
    with pytest.raises(ValueError, match="Unknown solver 'rk5'. Use one of euler"):
        S.flow_sensitivity(f, y, steps=2, solver="rk5", key=key)
    with pytest.raises(ValueError, match="`iterations` must be a positive integer"):
        S.flow_sensitivity(f, y, steps=2, iterations=0, key=key)
    with pytest.raises(ValueError, match="`eps` must be positive"):
        S.perturbation_growth(f, y, eps=0.0, steps=2, key=key)
    with pytest.raises(ValueError, match="`samples` must be a positive integer"):
        S.perturbation_growth(f, y, eps=1e-3, samples=0, steps=2, key=key)

    with pytest.raises(ValueError, match="`loss` must return a scalar"):
        S.gradient_norms(f, y, lambda y: y, steps=2)
    with pytest.raises(TypeError, match="`loss` must be a function"):
        S.gradient_norms(f, y, 1.0, steps=2)
    with pytest.raises(ValueError, match="fixed steps"):
        S.gradient_norms(f, y, jnp.sum, solver="dopri5")

    with pytest.raises(ValueError, match="Unknown solver 'rk45'. Use one of euler"):
        S.stability_function("rk45", 0.1)
    with pytest.raises(ValueError, match="No stability function is known for Kvae"):
        S.step_stability(f, 0.0, y, solver=dfx.Kvaerno3(), dt=0.1)
    with pytest.raises(TypeError, match="needs a `neuralde.fields.AbstractTwoStream"):
        S.step_stability(f, 0.0, y, solver="leapfrog", dt=0.1)
    with pytest.raises(ValueError, match="`dt` must be positive"):
        S.step_stability(f, 0.0, y, solver="euler", dt=-0.1)
    with pytest.raises(ValueError, match="`tol` must be >= 0"):
        S.step_stability(f, 0.0, y, solver="euler", dt=0.1, tol=-1.0)

    with pytest.raises(TypeError, match="needs a field that conserves an energy"):
        S.energy_drift(f, y, steps=2)
    with pytest.raises(TypeError, match="needs a field that conserves one"):
        S.energy(f, 0.0, y)
    with pytest.raises(TypeError, match="two-stream field"):
        S.energy(h, 0.0, y)
    gelu = nde.fields.Hamiltonian(3, 4, activation=jax.nn.gelu, key=getkey())
    with pytest.raises(ValueError, match="No antiderivative is known .* `potential="):
        S.energy_drift(gelu, s, steps=2)
    with pytest.raises(TypeError, match="`potential` must be a function"):
        S.energy(gelu, 0.0, s, potential=1.0)


class Oscillator(nde.fields.AbstractConservativeField):
    """A user's conservative field: the harmonic oscillator y' = z, z' = -w^2 y, with
    energy (z^2 + w^2 y^2) / 2. Its energy is all that the diagnostics need."""

    omega: float = 2.0
    layers: int = 1
    t1: float = 1.0

    def dy(self, t, z, args):
        return z

    def dz(self, t, y, args):
        return -(self.omega**2) * y

    def energy(self, t, y, *, potential=None):
        y_, z_ = y
        return 0.5 * jnp.sum(z_**2 + self.omega**2 * y_**2)


def test_energy_of_a_user_conservative_field():
    f = Oscillator()
    y = (jnp.array([1.0]), jnp.array([0.0]))
    assert S.energy(f, 0.0, y) == 2.0
    # Leapfrog's energy error on the oscillator is O(h^2) and bounded.
    drifts = [
        float(S.energy_drift(f, y, steps=n, solver="leapfrog")) for n in (50, 100)
    ]
    assert drifts[1] < 0.3 * drifts[0] and drifts[0] < 0.05
