import functools
import inspect
import types

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.test_util
import numpy as np
import pytest
import scipy.special as sp
import scipy.stats as st

import neuralde.losses as losses


# The losses compiled whole (`J.mse`, ...): on CPU one compilation is several times
# faster than eager dispatch, which compiles each operation anew at each shape.
J = types.SimpleNamespace(
    **{n: eqx.filter_jit(f) for n, f in vars(losses).items() if inspect.isfunction(f)}
)


def _normal(rng, shape, scale=1.0):
    # NumPy's generator: JAX's would compile anew for each shape, slowly.
    return jnp.asarray(scale * rng.normal(size=shape))


def _close(a, b, rtol=1e-12, atol=1e-12):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


# Fixtures from the literature (values copied here; the tests read no files).


def test_binary_cross_entropy_fixture():
    p = jnp.array([0.6882, 0.4268, 0.6981, 0.6192])
    y = jnp.array([1, 0, 1, 0])
    assert abs(J.binary_cross_entropy(p, y, from_logits=False) - 0.5638) < 5e-4
    assert abs(J.binary_cross_entropy(jnp.log(p / (1 - p)), y) - 0.5638) < 5e-4


def test_softmax_cross_entropy_fixture():
    x = jnp.array([[1.5, 0.5, -0.5], [-0.5, 1.5, 0.5], [0.5, -0.5, 1.5]])
    y = jnp.array([0, 1, 2])
    assert abs(J.cross_entropy(x, y) - 0.40761) < 5e-5
    assert abs(J.cross_entropy(x, jax.nn.one_hot(y, 3)) - 0.40761) < 5e-5


def test_mae_rmse_fixture():
    e = jnp.array([0.0, 1.0, -2.0, -0.5, 1.5])
    assert abs(J.mae(e, jnp.zeros(5)) - 1.0) < 5e-5
    assert abs(J.rmse(e + 3.0, jnp.full(5, 3.0)) - 1.2247) < 5e-5


def test_cox_hand_example():
    # Subjects (time, event, eta): (1, 1, 0), (2, 1, log 2), (2, 1, 0), (3, 0, log 3),
    # so exp(eta) = 1, 2, 1, 3. Breslow risk sets: at t = 1 all four, sum 7; at t = 2
    # (both tied events) subjects 2-4, sum 2 + 1 + 3 = 6. The censored subject 4 only
    # enters risk sets. log L = (0 - log 7) + (log 2 - log 6) + (0 - log 6)
    # = -log(7 * 3 * 6) = -log 126, so -log L = 4.836282, and 1.612094 per event.
    eta = jnp.array([0.0, np.log(2), 0.0, np.log(3)])
    t, d = jnp.array([1.0, 2.0, 2.0, 3.0]), jnp.array([1, 1, 1, 0])
    _close(J.cox_partial_likelihood(eta, t, d, reduction="sum"), np.log(126))
    _close(J.cox_partial_likelihood(eta, t, d), np.log(126) / 3)
    _close(
        J.cox_partial_likelihood(eta, t, d, reduction="none"),
        [np.log(7), np.log(3), np.log(6), 0],
    )


# Against direct NumPy / SciPy evaluations.


def _cox_reference(eta, t, d, w):
    total = 0.0
    for i in range(len(t)):
        if d[i] and w[i] > 0:
            at_risk = t >= t[i]
            total += w[i] * (np.log(np.sum(w[at_risk] * np.exp(eta[at_risk]))) - eta[i])
    return total


def test_cox_against_loop_with_ties_weights_mask():
    rng = np.random.default_rng(1)
    eta = np.asarray(_normal(rng, (9,)))
    t = np.array([3, 1, 4, 1, 5, 2, 6, 5, 3.0])
    d = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0])
    w = np.array([1, 2, 0.5, 1, 1, 3, 1, 1, 2.0])
    keep = np.arange(9) != 2
    rep = np.repeat(np.arange(9), [1, 2, 1, 1, 1, 3, 1, 1, 2])
    w_int = np.bincount(rep).astype(float)

    @jax.jit
    def cox(eta):
        cox = losses.cox_partial_likelihood
        return (
            cox(eta, t, d, reduction="sum"),
            cox(eta, t, d, weights=w),
            cox(eta, t, d, mask=keep, reduction="sum"),
            # An integer weight counts a subject that many times.
            cox(eta, t, d, weights=w_int, reduction="sum"),
            cox(eta[rep], t[rep], d[rep], reduction="sum"),
        )

    plain, weighted, masked, repeated, copied = cox(eta)
    _close(plain, _cox_reference(eta, t, d, np.ones(9)))
    _close(weighted, _cox_reference(eta, t, d, w) / np.sum(w * d))
    _close(masked, _cox_reference(eta[keep], t[keep], d[keep], np.ones(8)))
    _close(repeated, copied)


def _barron_formula(x, a, c):
    z = (x / c) ** 2
    b = abs(a - 2)
    return b / a * (np.power(z / b + 1, a / 2) - 1)


def _tukey(e, c):
    return np.where(np.abs(e) <= c, c**2 / 6 * (1 - (1 - (e / c) ** 2) ** 3), c**2 / 6)


REGRESSION = [  # the losses of e = f - y
    (losses.mse, {}, lambda e: e**2),
    (losses.mae, {}, np.abs),
    (
        losses.huber,
        {"delta": 0.7},
        lambda e: np.where(np.abs(e) <= 0.7, e**2 / 2, 0.7 * (np.abs(e) - 0.35)),
    ),
    (losses.tukey_biweight, {"delta": 1.3}, lambda e: _tukey(e, 1.3)),
    (losses.barron, dict(alpha=1.5, scale=0.8), lambda e: _barron_formula(e, 1.5, 0.8)),
    (losses.barron, {"alpha": -0.7}, lambda e: _barron_formula(e, -0.7, 1.0)),
    (losses.barron, {"alpha": 3.0}, lambda e: _barron_formula(e, 3.0, 1.0)),
    # Pinball's error is y - f = -e: over-prediction (e > 0) costs 1 - tau per unit.
    (losses.pinball, {"tau": 0.3}, lambda e: np.maximum(-0.3 * e, 0.7 * e)),
]


@pytest.mark.parametrize("loss, kwargs, reference", REGRESSION)
def test_regression_against_numpy(loss, kwargs, reference):
    rng = np.random.default_rng(2)
    f, y = _normal(rng, (4, 3), 2.0), _normal(rng, (4, 3))
    expected = reference(np.asarray(f - y))

    @jax.jit
    def reductions(f, y):
        return [loss(f, y, **kwargs, reduction=r) for r in ("none", "mean", "sum")]

    for got, want in zip(reductions(f, y), [expected, expected.mean(), expected.sum()]):
        _close(got, want)


@pytest.mark.parametrize(
    "alpha, closed_form, near",
    [
        (2.0, lambda z: z / 2, [2 - 1e-7, 2 + 1e-7]),
        (0.0, lambda z: np.log(z / 2 + 1), [-1e-7, 1e-7]),
        (1.0, lambda z: np.sqrt(z + 1) - 1, [1.0]),
        (-2.0, lambda z: 2 * z / (z + 4), [-2.0]),
        (-np.inf, lambda z: 1 - np.exp(-z / 2), [-1e8]),
        (np.inf, lambda z: np.exp(z / 2) - 1, [1e8]),
    ],
)
def test_barron_special_cases(alpha, closed_form, near):
    x = np.array([-3.0, -0.5, 0.0, 1e-3, 0.9, 2.5])
    value = J.barron(x, np.zeros(6), alpha=alpha, scale=0.7, reduction="none")
    _close(value, closed_form((x / 0.7) ** 2), rtol=1e-13)
    for a in near:  # the general formula tends to the special case
        _close(value, _barron_formula(x, a, 0.7), rtol=3e-6, atol=1e-7)


def test_barron_array_alpha_has_finite_gradients():
    # Unselected branches (e.g. e^{z/2} for alpha = +inf) must not leak nan.
    alpha = jnp.array([2.0, 0.0, -jnp.inf, 1.0, -2.0, 1.5, 4.0], jnp.float32)
    f = jnp.full(7, 40.0, jnp.float32)
    loss = lambda f, a: losses.barron(f, jnp.zeros_like(f), alpha=a)  # noqa: E731
    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(f, alpha)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)


def test_pinball_sign_and_quantile_heads():
    rng = np.random.default_rng(3)
    # Under-predicting the 0.9-quantile costs 0.9 per unit, over-predicting 0.1.
    _close(J.pinball(jnp.zeros(1), jnp.ones(1), tau=0.9), 0.9)
    _close(J.pinball(jnp.ones(1), jnp.zeros(1), tau=0.9), 0.1)
    taus = jnp.array([0.1, 0.5, 0.9])
    f, y = _normal(rng, (5, 3)), _normal(rng, (5,))
    e = np.asarray(y)[:, None] - np.asarray(f)
    expected = np.maximum(taus * e, (taus - 1) * e).mean(-1)
    _close(J.pinball(f, y, tau=taus, reduction="none"), expected)
    # Its minimiser over constants is the empirical quantile.
    samples, grid = jnp.arange(11.0), jnp.linspace(0, 10, 101)
    risk = jax.vmap(lambda c: J.pinball(jnp.full(11, c), samples, tau=0.3))(grid)
    assert grid[jnp.argmin(risk)] == 3.0


def test_likelihoods_against_scipy():
    rng = np.random.default_rng(4)
    mu, y = _normal(rng, (3, 4)), _normal(rng, (3, 4))
    log_s = _normal(rng, (3, 4), 0.5)
    s, m, yy = np.exp(np.asarray(log_s)), np.asarray(mu), np.asarray(y)
    counts, bits, labels = jnp.array([[0, 1, 2, 7]] * 3), yy > 0, jnp.array([3, 0, 2])

    @jax.jit
    def nlls(mu, y, log_s):
        kw = {"reduction": "none"}
        return [
            losses.gaussian_nll(mu, y, scale=jnp.exp(log_s), **kw),
            losses.gaussian_nll(mu, y, log_scale=log_s, **kw),
            losses.laplace_nll(mu, y, scale=jnp.exp(log_s), **kw),
            losses.student_t_nll(mu, y, df=3.5, log_scale=log_s, **kw),
            losses.poisson_nll(mu, counts, **kw),
            losses.bernoulli_nll(mu, bits, **kw),
            losses.categorical_nll(mu, labels, **kw),
        ]

    expected = [
        -st.norm.logpdf(yy, m, s),
        -st.norm.logpdf(yy, m, s),
        -st.laplace.logpdf(yy, m, s),
        -st.t.logpdf(yy, 3.5, m, s),
        -st.poisson.logpmf(np.asarray(counts), np.exp(m)),
        -st.bernoulli.logpmf(bits, sp.expit(m)),
        -sp.log_softmax(m, -1)[np.arange(3), labels],
    ]
    for got, want in zip(nlls(mu, y, log_s), expected):
        _close(got, want)


@pytest.mark.parametrize("dim", [None, 2])
def test_gaussian_mixture_against_scipy(dim):
    rng = np.random.default_rng(5)
    extra = () if dim is None else (dim,)
    logits = _normal(rng, (4, 3))
    means = _normal(rng, (4, 3, *extra))
    log_s = _normal(rng, (4, 3, *extra), 0.3)
    y = _normal(rng, (4, *extra))
    got = J.gaussian_mixture_nll(logits, means, y, log_scale=log_s, reduction="none")
    y_ = np.asarray(y)[:, None] if dim is None else np.asarray(y)[:, None, :]
    comp = st.norm.logpdf(y_, np.asarray(means), np.exp(np.asarray(log_s)))
    comp = comp if dim is None else comp.sum(-1)
    _close(got, -sp.logsumexp(comp + sp.log_softmax(np.asarray(logits), -1), axis=-1))


def test_cross_entropy_and_kl_options():
    rng = np.random.default_rng(6)
    x = _normal(rng, (5, 4))
    y = jnp.array([0, 3, 1, 1, 2])
    probs = jax.nn.softmax(_normal(rng, (5, 4)))
    cw = jnp.array([1.0, 2.0, 0.5, 4.0])
    mask = jnp.array([True, True, False, True, True])
    y_pad = y.at[2].set(-100)  # padding labels out of range are fine where masked

    @jax.jit
    def values(x):
        ce, kl = losses.cross_entropy, losses.kl_divergence
        return [
            ce(x, y, label_smoothing=0.1, reduction="none"),
            ce(x, y, class_weights=cw),
            ce(x, probs, reduction="none"),
            ce(x, y_pad, mask=mask),
            kl(x, y, reduction="none"),
            kl(x, probs, reduction="none"),
        ]

    logp = sp.log_softmax(np.asarray(x), -1)
    onehot = np.eye(4)[np.asarray(y)]
    ce = -np.sum(onehot * logp, -1)
    w = np.asarray(cw)[np.asarray(y)]
    expected = [
        -np.sum((0.9 * onehot + 0.1 / 4) * logp, -1),
        np.sum(w * ce) / np.sum(w),
        -np.sum(np.asarray(probs) * logp, -1),
        np.mean(ce[np.asarray(mask)]),
        ce,
        st.entropy(np.asarray(probs), np.exp(logp), axis=-1),
    ]
    for got, want in zip(values(x), expected):
        _close(got, want)


def test_binary_and_focal_against_numpy():
    rng = np.random.default_rng(7)
    x = _normal(rng, (6, 3), 2.0)
    t = (np.asarray(_normal(rng, (6, 3))) > 0).astype(float)
    labels = jnp.array([0, 2, 1, 1, 0, 2])
    onehot, cw = jax.nn.one_hot(labels, 3), jnp.array([0.5, 1.0, 3.0])

    @jax.jit
    def values(x):
        bce, focal = losses.binary_cross_entropy, losses.focal
        kw = {"reduction": "none"}
        return [
            bce(x, t, **kw),
            bce(jax.nn.sigmoid(x), t, from_logits=False, **kw),
            bce(x, t, label_smoothing=0.2, **kw),
            focal(x, t, **kw),
            # Integer labels are one-hot targets; class weights weigh each example.
            focal(x, labels, gamma=1.5) - focal(x, onehot, gamma=1.5),
            focal(x, labels, class_weights=cw),
            focal(x, labels, **kw),
        ]

    got = values(x)
    p = sp.expit(np.asarray(x))
    t_s = 0.8 * t + 0.1
    p_t, a_t = np.where(t == 1, p, 1 - p), np.where(t == 1, 0.25, 0.75)
    w = np.broadcast_to(np.asarray(cw)[np.asarray(labels)][:, None], (6, 3))
    expected = [
        -(t * np.log(p) + (1 - t) * np.log1p(-p)),
        -(t * np.log(p) + (1 - t) * np.log1p(-p)),
        -(t_s * np.log(p) + (1 - t_s) * np.log1p(-p)),
        -a_t * (1 - p_t) ** 2 * np.log(p_t),
        0.0,
        np.sum(w * np.asarray(got[-1])) / np.sum(w),
    ]
    for value, want in zip(got, expected):
        _close(value, want)


def test_class_balanced_weights():
    n = np.array([1000, 100, 10, 1])
    w = (1 - 0.99) / (1 - 0.99**n)
    _close(J.class_balanced_weights(n, beta=0.99), w * 4 / w.sum())
    _close(J.class_balanced_weights(n, beta=0.0), np.ones(4))


def test_dice():
    rng = np.random.default_rng(8)
    x = _normal(rng, (2, 3, 4, 3))
    labels = jnp.asarray(rng.integers(0, 3, (2, 3, 4)))
    p = sp.softmax(np.asarray(x), -1)
    t = np.eye(3)[np.asarray(labels)]
    inter, total = (p * t).sum((1, 2)), (p + t).sum((1, 2))
    expected = (1 - (2 * inter + 1) / (total + 1)).mean(-1)
    _close(J.dice(x, labels, reduction="none"), expected)
    _close(J.dice(x, jnp.asarray(t), reduction="none"), expected)
    _close(J.dice(jnp.asarray(p), labels, from_logits=False), expected.mean())
    # Binary segmentation with one sigmoid channel; a perfect prediction costs ~0.
    masks = jnp.asarray(np.asarray(labels) == 1)
    perfect = jnp.where(masks, 30.0, -30.0)[..., None]
    assert J.dice(perfect, masks.astype(int), smooth=0.0) < 1e-12


def test_next_token():
    rng = np.random.default_rng(9)
    logits = _normal(rng, (2, 5, 7))
    tokens = jnp.array([[1, 4, 6, 2, 0], [3, 3, 5, -1, -1]])  # row 2 right-padded
    mask = tokens >= 0
    logp = sp.log_softmax(np.asarray(logits), -1)
    terms = [-logp[b, i, tokens[b, i + 1]] for b, i in np.argwhere(mask[:, 1:])]
    _close(J.next_token(logits, tokens, mask=mask), np.mean(terms))
    _close(J.next_token(logits, tokens, mask=mask, reduction="sum"), np.sum(terms))
    assert J.next_token(logits, tokens, mask=mask, reduction="none").shape == (2, 4)


def test_autoencoder_losses():
    rng = np.random.default_rng(10)
    x_hat, x = _normal(rng, (3, 2, 2)), jnp.asarray(rng.uniform(size=(3, 2, 2)))
    mu, log_var = _normal(rng, (3, 4)), _normal(rng, (3, 4), 0.5)
    L = np.tril(np.asarray(_normal(rng, (3, 4, 4)))) + 2 * np.eye(4)
    diag = jnp.exp(log_var / 2)[..., None] * jnp.eye(4)

    @jax.jit
    def values(x_hat, mu, log_var):
        kw = {"reduction": "none"}
        return [
            losses.reconstruction(x_hat, x, **kw),
            losses.reconstruction(x_hat, x, kind="bernoulli", **kw),
            losses.gaussian_kl(mu, scale_tril=L, **kw),
            losses.gaussian_kl(mu, log_var, **kw),
            losses.gaussian_kl(mu, scale_tril=diag, **kw),
            losses.vae_elbo(x_hat, x, mu, log_var, scale=0.5, beta=2.0, **kw),
            losses.vae_elbo(x_hat, x, mu, log_var, likelihood="bernoulli", **kw),
        ]

    got = values(x_hat, mu, log_var)
    xh, xx, m = np.asarray(x_hat), np.asarray(x), np.asarray(mu)
    bce = -(xx * np.log(sp.expit(xh)) + (1 - xx) * np.log(sp.expit(-xh))).sum((1, 2))
    # KL(N(mu, Sigma) || N(0, I)) with Sigma = L L^T, against NumPy's log-determinant.
    sigma = L @ np.swapaxes(L, -1, -2)
    tr, logdet = np.trace(sigma, axis1=-2, axis2=-1), np.linalg.slogdet(sigma)[1]
    kl_diag = 0.5 * (m**2 + np.exp(log_var) - log_var - 1).sum(-1)
    expected = [
        ((xh - xx) ** 2).sum((1, 2)),
        bce,
        0.5 * ((m**2).sum(-1) + tr - logdet - 4),
        kl_diag,
        kl_diag,
        -st.norm.logpdf(xx, xh, 0.5).sum((1, 2)) + 2 * kl_diag,
        bce + kl_diag,
    ]
    for value, want in zip(got, expected):
        _close(value, want)


def test_gan_losses():
    rng = np.random.default_rng(11)
    r, f = _normal(rng, (4,)), _normal(rng, (6,))
    d_r, d_f = sp.expit(np.asarray(r)), sp.expit(np.asarray(f))
    _close(J.gan_discriminator(r, f), -np.log(d_r).mean() - np.log1p(-d_f).mean())
    smooth = -(0.9 * np.log(d_r) + 0.1 * np.log1p(-d_r)).sum() - np.log1p(-d_f).sum()
    _close(J.gan_discriminator(r, f, label_smoothing=0.1, reduction="sum"), smooth)
    _close(J.gan_generator(f), -np.log(d_f).mean())
    _close(J.gan_generator(f, kind="minimax"), np.log1p(-d_f).mean())


def test_denoising_score_matching():
    rng = np.random.default_rng(12)
    x0, eps, W = _normal(rng, (3, 2)), _normal(rng, (3, 2)), jnp.eye(2) / 2
    alpha_bar, t = jnp.array([0.99, 0.7, 0.3, 0.05]), jnp.array([0, 2, 3])
    key = jr.PRNGKey(0)

    def model(x, t):
        return x @ W.T + t[:, None]

    def score(x, t):  # s = -eps_hat / sigma has the same loss
        return -model(x, t) / jnp.sqrt(1 - alpha_bar[t])[:, None]

    @jax.jit
    def values(x0):
        dsm, kw = losses.denoising_score_matching, {"alpha_bar": alpha_bar}
        return [
            dsm(model, x0, t, noise=eps, reduction="none", **kw),
            dsm(score, x0, t, noise=eps, prediction="score", reduction="none", **kw),
            # A key draws the noise; a callable schedule takes continuous times.
            dsm(model, x0, t, key=key, **kw)
            - dsm(model, x0, t, noise=jr.normal(key, (3, 2)), **kw),
            dsm(model, x0, t / 4, noise=eps, alpha_bar=lambda s: jnp.cos(s) ** 2),
        ]

    eps_loss, score_loss, key_difference, cosine = values(x0)
    a = np.asarray(alpha_bar)[np.asarray(t)][:, None]
    x_t = np.sqrt(a) * np.asarray(x0) + np.sqrt(1 - a) * np.asarray(eps)
    expected = ((x_t / 2 + np.asarray(t)[:, None] - np.asarray(eps)) ** 2).mean(1)
    _close(eps_loss, expected)
    _close(score_loss, expected)
    assert key_difference == 0 and jnp.isfinite(cosine)


def test_pinn():
    kappa = 0.1
    pts = jnp.array([[0.1, 0.2], [0.5, 0.7], [0.9, 0.4]])

    def heat(u, x):  # u_t - kappa u_xx at x = (t, x)
        return jax.jacfwd(u)(x)[0] - kappa * jax.hessian(u)(x)[1, 1]

    def exact(x):
        return jnp.exp(-kappa * jnp.pi**2 * x[0]) * jnp.sin(jnp.pi * x[1])

    def poly(x):  # residual 2t - 6 kappa x
        return x[0] ** 2 + x[1] ** 3

    data = jax.vmap(exact)(pts)
    assert J.pinn(exact, heat, pts, pts, data) < 1e-25
    p = np.asarray(pts)
    res, miss = 2 * p[:, 0] - 6 * kappa * p[:, 1], p[:, 0] ** 2 + p[:, 1] ** 3 - data
    got = J.pinn(poly, heat, pts, pts, data, data_weight=3.0, residual_weight=0.5)
    _close(got, 3.0 * np.mean(miss**2) + 0.5 * np.mean(res**2))


def test_weights_mask_and_reductions():
    f, y = jnp.array([[1.0, 2.0], [3.0, jnp.nan]]), jnp.zeros((2, 2))
    w = jnp.array([1.0, 3.0])
    mask = jnp.array([[True, True], [True, False]])
    # Weighted mean sum(w m e^2) / sum(w m) = (1 + 3 * 4 + 9) / (1 + 3 + 1); the nan
    # is masked out.
    _close(J.mse(f, y, weights=w, mask=mask), 22 / 5)
    _close(J.mse(f, y, weights=w, mask=mask, reduction="none"), [[1, 12], [9, 0]])
    _close(J.mse(f, y, mask=mask, reduction="sum"), 14.0)
    _close(J.mse(f, y, mask=jnp.zeros((2, 2), bool)), 0.0)  # nothing left: 0, not nan
    assert J.mse(jnp.zeros(0), jnp.zeros(0), reduction="sum") == 0


def test_jitted_loss_does_not_retrace():
    rng = np.random.default_rng(13)

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def step(x, y):
        return jax.grad(losses.cross_entropy)(x, y, label_smoothing=0.1)

    x, y = _normal(rng, (4, 3)), jnp.array([0, 1, 2, 1])
    step(x, y)
    step(x + 1, y)


# Gradients against finite differences (float64). Each function returns several
# losses, to compile once per group; forward mode compares every loss separately.


def _grad_groups():
    rng = np.random.default_rng(0)
    x, y, ls, eps = (_normal(rng, (3, 4)) for _ in range(4))
    labels, probs, bits = jnp.array([1, 3, 0]), jax.nn.softmax(y), (y > 0) * 1.0
    times, events = jnp.array([1.0, 2, 2, 3, 4, 4]), jnp.array([1, 1, 0, 1, 1, 1])
    L = jnp.tril(x[..., None] * y[..., None, :]) + 2 * jnp.eye(4)

    def heat(u, z):
        return jax.jacfwd(u)(z)[0] - 0.1 * jax.hessian(u)(z)[1, 1]

    def regression(f, a, c):
        return {
            "mse": losses.mse(f, y),
            "mae": losses.mae(f, y),
            "rmse": losses.rmse(f, y),
            "huber": losses.huber(f, y, delta=0.5),
            "tukey_biweight": losses.tukey_biweight(f, y, delta=2.0),
            "barron": losses.barron(f, y, alpha=a, scale=c),
            "pinball": losses.pinball(f, y, tau=0.3),
            "quantiles": losses.pinball(
                f, y[:, 0], tau=jnp.array([0.1, 0.4, 0.6, 0.9])
            ),
        }

    def likelihood(m, s, df):
        return {
            "gaussian": losses.gaussian_nll(m, y, log_scale=s),
            "laplace": losses.laplace_nll(m, y, scale=jnp.exp(s)),
            "student_t": losses.student_t_nll(m, y, df=df, log_scale=s),
            "poisson": losses.poisson_nll(m, jnp.abs(3 * y).round()),
            "bernoulli": losses.bernoulli_nll(m, bits),
            "categorical": losses.categorical_nll(m, labels),
            "mixture": losses.gaussian_mixture_nll(m, s, y[:, 0], log_scale=m),
        }

    def classification(z, p):
        ce = losses.cross_entropy
        return {
            "cross_entropy": ce(z, labels, class_weights=jnp.arange(1.0, 5)),
            "smoothed": ce(z, probs, label_smoothing=0.1),
            "binary_cross_entropy": losses.binary_cross_entropy(z, bits),
            "from_probs": losses.binary_cross_entropy(p, bits, from_logits=False),
            "focal": losses.focal(z, labels, gamma=1.5),
            "kl_divergence": losses.kl_divergence(z, probs),
            "dice": losses.dice(z[:, :2, None], bits[:, :2] > 0),
            "next_token": losses.next_token(z[None], labels[None]),
        }

    def generative(z, m, s, L, W):
        dsm = losses.denoising_score_matching
        return {
            "reconstruction": losses.reconstruction(z, y),
            "gaussian_kl": losses.gaussian_kl(m, scale_tril=L),
            "vae_elbo": losses.vae_elbo(z, y, m, s),
            "gan_discriminator": losses.gan_discriminator(z[0], m[1]),
            "gan_generator": losses.gan_generator(z, kind="minimax"),
            "dsm": dsm(
                lambda u, t: u @ W, y, labels, alpha_bar=jax.nn.sigmoid(s[0]), noise=eps
            ),
        }

    def survival_and_physics(eta, c):
        return {
            "cox": losses.cox_partial_likelihood(eta, times, events),
            "pinn": losses.pinn(lambda u: c[0] * u[0] ** 2 + c[1] * u[1] ** 3, heat, y),
        }

    return {
        "regression": (regression, (x, 0.6, 2.0)),
        "likelihood": (likelihood, (x, ls, 2.5)),
        "classification": (classification, (x, probs)),
        "generative": (generative, (x, y, ls, L, L[0])),
        "survival_and_physics": (survival_and_physics, (x[0, :3].repeat(2), x[:2, 0])),
    }


@pytest.mark.parametrize("group", list(_grad_groups()))
def test_gradients_against_finite_differences(group):
    fn, args = _grad_groups()[group]
    jax.test_util.check_grads(jax.jit(fn), args, order=1, modes=["fwd", "rev"])


# Stability at extreme logits, in float32.

EXTREME = jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [0.0, 0.0, -1e4]], jnp.float32)
LABELS = jnp.array([1, 0, 2])
BITS = jnp.array([[1, 1, 0], [0, 1, 0], [1, 0, 1]], jnp.float32)

STABLE = {
    "cross_entropy": lambda z: losses.cross_entropy(z, LABELS, label_smoothing=0.1),
    "cross_entropy_probs": lambda z: losses.cross_entropy(z, jax.nn.one_hot(LABELS, 3)),
    "categorical_nll": lambda z: losses.categorical_nll(z, LABELS),
    "binary_cross_entropy": lambda z: losses.binary_cross_entropy(z, BITS),
    "bernoulli_nll": lambda z: losses.bernoulli_nll(z, BITS),
    "focal": lambda z: losses.focal(z, LABELS),
    "kl_divergence": lambda z: losses.kl_divergence(z, jnp.full((3, 3), 1 / 3)),
    "dice": lambda z: losses.dice(z[None], LABELS[None]),
    "next_token": lambda z: losses.next_token(z[None], LABELS[None]),
    "gan_discriminator": lambda z: losses.gan_discriminator(z[0], z[1]),
    "gan_generator": lambda z: losses.gan_generator(z),
    "gan_generator_minimax": lambda z: losses.gan_generator(z, kind="minimax"),
    "reconstruction": lambda z: losses.reconstruction(z, BITS, kind="bernoulli"),
    "mixture": lambda z: losses.gaussian_mixture_nll(z, 0 * z, LABELS, scale=1.0),
    "cox": lambda z: losses.cox_partial_likelihood(z[0], jnp.arange(3.0), BITS[0]),
}


@functools.cache
def _extreme_values_and_grads():  # all compiled at once
    return jax.jit(lambda z: {n: jax.value_and_grad(f)(z) for n, f in STABLE.items()})(
        EXTREME
    )


@pytest.mark.parametrize("name", list(STABLE))
def test_extreme_logits_float32(name):
    value, grad = _extreme_values_and_grads()[name]
    assert value.dtype == jnp.float32
    assert jnp.isfinite(value) and jnp.all(jnp.isfinite(grad)), (value, grad)


# Bad input: a ValueError or TypeError now, for concrete arrays.

L, X, Y, V, T = losses, jnp.zeros((3, 4)), jnp.array([0, 1, 2]), ValueError, TypeError


def _dsm(t=Y, model=lambda z, t: z, **kwargs):
    kwargs = {"alpha_bar": jnp.ones(3), "noise": X} | kwargs
    return L.denoising_score_matching(model, X, t, **kwargs)


def _bce_probs(p):
    return L.binary_cross_entropy(p, X, from_logits=False)


ERRORS = [
    (V, "must be equal", lambda: L.mse(jnp.zeros(3), jnp.zeros((3, 1)))),
    (T, "floating point", lambda: L.mse(jnp.arange(3), jnp.zeros(3))),
    (V, "one of 'mean'", lambda: L.mae(X, X, reduction="avg")),
    (V, r"weights\[:, None\]", lambda: L.mse(X, X, weights=jnp.ones(3))),
    (V, "batch is empty", lambda: L.mse(jnp.zeros(0), jnp.zeros(0))),
    (V, "batch is empty", lambda: L.cross_entropy(jnp.zeros((0, 3)), Y[:0])),
    (V, "batch is empty", lambda: L.cox_partial_likelihood(*3 * [jnp.zeros(0)])),
    (V, r"\[0, 3\] for 4 classes; got \[4\]", lambda: L.cross_entropy(X, Y + 2)),
    (V, "excluded with `mask=`", lambda: L.cross_entropy(X, Y - 1)),
    (T, "must be integers", lambda: L.cross_entropy(X, Y * 1.0)),
    (V, r"shape \(3,\) \(integer", lambda: L.cross_entropy(X, X[:, :2])),
    (V, "one weight per class", lambda: L.cross_entropy(X, Y, class_weights=1.0 * Y)),
    (V, "smoothing` must lie in", lambda: L.cross_entropy(X, Y, label_smoothing=2)),
    (V, r"alpha` must lie in \[0, 1\]", lambda: L.focal(X, Y, alpha=2.0)),
    (V, r"predictions` must lie in \[0, 1\]", lambda: _bce_probs(X + 2)),
    (V, r"targets` must lie in \[0, 1\]", lambda: L.binary_cross_entropy(X, X - 1)),
    (V, r"tau` must lie in \(0, 1\)", lambda: L.pinball(X, X, tau=1.0)),
    (V, "got tau=0.0", lambda: L.pinball(X, X, tau=0.0)),
    (
        V,
        r"outside, e.g. \[1.2",
        lambda: L.pinball(X, Y, tau=jnp.array([0.5, 0.2, 1.2, 0.7])),
    ),
    (V, "trailing quantile axis", lambda: L.pinball(X, X, tau=jnp.array([0.1, 0.9]))),
    (V, "delta` must lie in", lambda: L.huber(X, X, delta=-1.0)),
    (V, "got delta=-2.0", lambda: L.tukey_biweight(X, X, delta=-2.0)),
    (V, "scale` must lie", lambda: L.barron(X, X, alpha=1.0, scale=-1.0)),
    (V, "scale` must lie", lambda: L.gaussian_nll(X, X, scale=-1.0)),
    (T, "exactly one of `scale=", lambda: L.gaussian_nll(X, X)),
    (V, "df` must lie", lambda: L.student_t_nll(X, X, df=-1.0, scale=1.0)),
    (V, "They are counts", lambda: L.poisson_nll(X, X - 1)),
    (V, "need integer class labels", lambda: L.focal(X, X, class_weights=X[0])),
    (V, "gamma` must lie", lambda: L.focal(X, X, gamma=-1.0)),
    (V, "needs an example", lambda: L.class_balanced_weights(jnp.array([3, 0]))),
    (
        V,
        r"beta` must lie in \[0, 1\)",
        lambda: L.class_balanced_weights(Y + 1, beta=1.0),
    ),
    (V, "shape of the predictions", lambda: L.dice(X, X[:, :2])),
    (V, "length >= 2", lambda: L.next_token(X[None, :1], Y[None, :1])),
    (V, r"shape \(..., length\)", lambda: L.next_token(X, Y[:2])),
    (T, "exactly one", lambda: L.gaussian_kl(X, X, scale_tril=jnp.zeros((3, 4, 4)))),
    (V, "batch of `predictions`", lambda: L.vae_elbo(X, X, X[:2], X[:2])),
    (V, "no common per-example", lambda: L.gan_discriminator(X, X, reduction="none")),
    (V, "'non_saturating' or", lambda: L.gan_generator(X, kind="wasserstein")),
    (T, "exactly one of `key", lambda: _dsm(noise=None)),
    (V, r"`t` must lie in \[0, 2\]", lambda: _dsm(t=Y + 1)),
    (T, "function of `t`", lambda: _dsm(t=Y * 0.5)),
    (V, r"alpha_bar` must lie in \(0, 1\]", lambda: _dsm(alpha_bar=jnp.zeros(3))),
    (V, "jax.vmap", lambda: _dsm(model=lambda z, t: z[:, 0])),
    (T, "both `x_data` and `u_data`", lambda: L.pinn(jnp.sum, jnp.sum, X, x_data=X)),
    (V, "must be vectors", lambda: L.cox_partial_likelihood(X, X, X)),
]


@pytest.mark.parametrize("error, match, call", ERRORS)
def test_bad_input(error, match, call):
    with pytest.raises(error, match=match):
        call()


JIT_ERRORS = [  # the same values, traced: equinox raises when the function runs
    (r"lie in \[0, 3\] for 4", lambda y: L.cross_entropy(X, y), Y + 2),
    (r"predictions` must lie in \[0, 1\]", _bce_probs, X + 2),
    (r"tau` must lie in \(0, 1\)", lambda t: L.pinball(X, X, tau=t), jnp.array(1.5)),
    (r"delta` must lie in", lambda d: L.huber(X, X, delta=d), jnp.array(-1.0)),
]


@pytest.mark.parametrize("match, fn, arg", JIT_ERRORS)
def test_bad_values_under_jit(match, fn, arg):
    with pytest.raises(RuntimeError, match=match):
        jax.block_until_ready(jax.jit(fn)(arg))


def test_cross_entropy_probability_rows_must_sum_to_one():
    logits = jnp.zeros((2, 3))
    good = jnp.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    bad = jnp.array([[0.2, 0.3, 0.4], [1.0, 0.0, 0.0]])
    assert jnp.isfinite(losses.cross_entropy(logits, good))
    with pytest.raises(ValueError, match=r"sum to one.*index \(0,\) sums to 0\.9"):
        losses.cross_entropy(logits, bad)
    with pytest.raises(Exception, match="must sum to one"):
        jax.jit(losses.cross_entropy)(logits, bad)
    # A masked-out row is not read.
    mask = jnp.array([False, True])
    assert jnp.isfinite(losses.cross_entropy(logits, bad, mask=mask))
