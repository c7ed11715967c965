import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import networkx as nx
import numpy as np
import pytest
import scipy.linalg

import neuralde as nde
from neuralde.nn import Graph


# Fixture `graph8`: an 8-node undirected graph, its degrees and Laplacian L = D - A.
GRAPH8_ADJACENCY = np.array(
    [
        [0, 1, 0, 0, 0, 0, 0, 0],
        [1, 0, 1, 0, 0, 1, 0, 0],
        [0, 1, 0, 1, 0, 1, 1, 0],
        [0, 0, 1, 0, 1, 0, 0, 0],
        [0, 0, 0, 1, 0, 1, 0, 0],
        [0, 1, 1, 0, 1, 0, 1, 0],
        [0, 0, 1, 0, 0, 1, 0, 1],
        [0, 0, 0, 0, 0, 0, 1, 0],
    ]
)
GRAPH8_DEGREE = np.array([1, 3, 4, 2, 2, 4, 3, 1])
GRAPH8_LAPLACIAN = np.array(
    [
        [1, -1, 0, 0, 0, 0, 0, 0],
        [-1, 3, -1, 0, 0, -1, 0, 0],
        [0, -1, 4, -1, 0, -1, -1, 0],
        [0, 0, -1, 2, -1, 0, 0, 0],
        [0, 0, 0, -1, 2, -1, 0, 0],
        [0, -1, -1, 0, -1, 4, -1, 0],
        [0, 0, -1, 0, 0, -1, 3, -1],
        [0, 0, 0, 0, 0, 0, -1, 1],
    ]
)


def matrix(op, n):
    """The dense matrix of a linear map on node vectors, column by column."""
    return np.asarray(op(jnp.eye(n)))


@pytest.fixture
def graph8():
    return Graph.from_dense(GRAPH8_ADJACENCY)


def random_graph(key, n=7, p=0.5):
    a = np.asarray(jr.bernoulli(key, p, (n, n)), float)
    a = np.triu(a, 1)
    return a + a.T


def test_graph8_fixture(graph8):
    assert graph8.num_edges == GRAPH8_ADJACENCY.sum() == 2 * 10
    assert graph8.weights is None
    assert np.array_equal(graph8.degree(), GRAPH8_DEGREE)
    assert np.array_equal(graph8.to_dense(), GRAPH8_ADJACENCY)
    assert np.array_equal(matrix(graph8.laplacian, 8), GRAPH8_LAPLACIAN)
    g = Graph.from_networkx(nx.from_numpy_array(GRAPH8_ADJACENCY))
    assert np.array_equal(g.degree(), GRAPH8_DEGREE)
    assert np.array_equal(matrix(g.laplacian, 8), GRAPH8_LAPLACIAN)


def test_propagation_matrices(graph8):
    a, d = GRAPH8_ADJACENCY, GRAPH8_DEGREE
    L = matrix(graph8.laplacian, 8)
    Ln = matrix(lambda x: graph8.laplacian(x, normalized=True), 8)
    # Both Laplacians are symmetric positive semi-definite; the normalised one has
    # its spectrum in [0, 2], with one zero per connected component (here one).
    for M in (L, Ln):
        assert np.allclose(M, M.T, atol=1e-15)
    assert np.linalg.eigvalsh(L).min() > -1e-12
    ev = np.linalg.eigvalsh(Ln)
    assert ev.min() > -1e-12 and ev.max() < 2 + 1e-12 and np.sum(ev < 1e-12) == 1
    r = 1 / np.sqrt(d)
    assert np.allclose(Ln, np.eye(8) - r[:, None] * a * r, atol=1e-15)
    rt = 1 / np.sqrt(d + 1)
    gcn = rt[:, None] * (a + np.eye(8)) * rt
    assert np.allclose(matrix(graph8.gcn, 8), gcn, atol=1e-15)
    assert np.allclose(matrix(graph8.mean, 8), a / d[:, None], atol=1e-15)
    # The gradient's transpose is the divergence, and G^T G = 2L with both
    # directions of every edge stored.
    G = matrix(graph8.gradient, 8)
    assert np.allclose(matrix(graph8.divergence, graph8.num_edges), G.T, atol=0)
    assert np.allclose(G.T @ G, 2 * GRAPH8_LAPLACIAN, atol=1e-14)


def test_weighted_graph_round_trip(getkey):
    w = np.asarray(jr.uniform(getkey(), (5, 5), minval=0.5, maxval=2.0))
    a = np.triu(w, 1) * (np.asarray(jr.bernoulli(getkey(), 0.6, (5, 5))))
    a = a + a.T
    g = Graph.from_dense(a)
    assert np.allclose(g.to_dense(), a, atol=0)
    L = np.diag(a.sum(1)) - a
    assert np.allclose(matrix(g.laplacian, 5), L, atol=1e-14)
    G = matrix(g.gradient, 5)
    assert np.allclose(G.T @ G, 2 * L, atol=1e-14)
    nxg = nx.from_numpy_array(a)
    h = Graph.from_networkx(nxg, weight="weight")
    assert np.allclose(h.to_dense(), a, atol=0)


def dense_gat(layer, x, a):
    """GAT written densely: masked softmax over in-neighbours and self."""
    heads, out = layer.weight.shape[:2]
    z = np.einsum("hoi,ni->nho", layer.weight, x)
    mask = (a + np.eye(len(a))) > 0
    result = []
    for h in range(heads):
        dst = z[:, h] @ layer.attention[h, :out]
        src = z[:, h] @ layer.attention[h, out:]
        e = dst[:, None] + src[None, :]
        e = np.where(e > 0, e, layer.negative_slope * e)
        e = np.where(mask, e, -np.inf)
        p = np.exp(e - e.max(1, keepdims=True))
        p = p / p.sum(1, keepdims=True)
        result.append(p @ z[:, h])
    return np.concatenate(result, axis=1) + np.asarray(layer.bias)


def test_gcn_and_gat_match_dense_formulas(getkey):
    a = random_graph(getkey())
    g = Graph.from_dense(a)
    x = jr.normal(getkey(), (7, 3))
    gcn = nde.nn.GCN(3, 4, key=getkey())
    d = a.sum(1) + 1
    a_hat = (a + np.eye(7)) / np.sqrt(d[:, None] * d[None, :])
    expected = np.maximum(a_hat @ x @ gcn.linear.weight.T + gcn.linear.bias, 0)
    assert np.allclose(gcn(x, g), expected, atol=1e-14)
    gat = nde.nn.GAT(3, 2, num_heads=3, key=getkey())
    assert np.allclose(gat(x, g), dense_gat(gat, np.asarray(x), a), atol=1e-13)
    # `key=` is accepted and ignored, as by every layer.
    for layer in (gcn, gat, nde.nn.MessagePassing(3, 2, key=getkey())):
        np.testing.assert_array_equal(layer(x, g, key=getkey()), layer(x, g))


@pytest.mark.parametrize("aggregation", ["sum", "mean", "max"])
def test_permutation_equivariance(getkey, aggregation):
    a = random_graph(getkey())
    x = jr.normal(getkey(), (7, 3))
    perm = np.asarray(jr.permutation(getkey(), 7))
    g, gp = Graph.from_dense(a), Graph.from_dense(a[perm][:, perm])
    layers = [
        nde.nn.MessagePassing(3, 2, width_size=5, aggregation=aggregation, key=getkey())
    ]
    if aggregation == "sum":
        layers += [nde.nn.GCN(3, 2, key=getkey()), nde.nn.GAT(3, 2, key=getkey())]
    for layer in layers:
        assert np.allclose(layer(x, g)[perm], layer(x[perm], gp), atol=1e-13)


def test_message_passing_matches_definition(getkey):
    a = random_graph(getkey(), n=5)
    g = Graph.from_dense(a)
    x = np.asarray(jr.normal(getkey(), (5, 2)))
    layer = nde.nn.MessagePassing(2, 3, aggregation="mean", key=getkey())
    expected = []
    for u in range(5):
        nbrs = np.nonzero(a[u])[0]
        msgs = [layer.message(jnp.concatenate([x[u], x[v]])) for v in nbrs]
        m = np.mean(msgs, axis=0) if len(nbrs) else np.zeros(3)
        expected.append(layer.update(jnp.concatenate([x[u], m])))
    assert np.allclose(layer(jnp.asarray(x), g), np.stack(expected), atol=1e-13)


def test_padding_and_batching_leave_real_nodes_unchanged(getkey):
    gcn = nde.nn.GCN(3, 2, key=getkey())
    g1, g2 = (
        Graph.from_dense(random_graph(getkey(), 4)),
        Graph.from_dense(random_graph(getkey(), 6)),
    )
    x1, x2 = jr.normal(getkey(), (4, 3)), jr.normal(getkey(), (6, 3))
    padded, mask = g1.pad(8, g1.num_edges + 5)
    xp = jnp.zeros((8, 3)).at[:4].set(x1)
    assert mask.tolist() == [True] * 4 + [False] * 4
    assert np.allclose(gcn(xp, padded)[:4], gcn(x1, g1), atol=1e-14)
    both, index = nde.nn.batch([g1, g2])
    out = gcn(jnp.concatenate([x1, x2]), both)
    assert index.tolist() == [0] * 4 + [1] * 6
    assert np.allclose(out, jnp.concatenate([gcn(x1, g1), gcn(x2, g2)]), atol=1e-14)


def test_graph_gradient_adjoint(getkey, graph8):
    K = nde.operators.GraphGradient(graph8, 3, 5, key=getkey())
    x = jr.normal(getkey(), (8, 3))
    y = jr.normal(getkey(), (graph8.num_edges, 5))
    lhs, rhs = jnp.vdot(K(x), y), jnp.vdot(x, K.T(y))
    assert abs(lhs - rhs) < 1e-14 * abs(lhs)
    # K^T is the divergence of the mixed edge values.
    assert np.allclose(K.T(y), graph8.divergence(y) @ K.weight, atol=1e-14)


def test_graph_heat_equation(getkey, graph8):
    # Parabolic field on the graph gradient with W = I and linear activation is the
    # heat equation dX/dt = -2 L X: exact solution expm(-2 L t) X0, and the
    # Dirichlet energy tr(X^T L X) decreases.
    make = lambda k: nde.operators.GraphGradient(graph8, 2, 2, key=k)  # noqa: E731
    K = nde.operators.stack(make, layers=1, key=getkey())
    K = eqx.tree_at(lambda op: op.weight, K, jnp.eye(2)[None])
    field = nde.fields.Parabolic(operator=K, activation=lambda s: s)
    x0 = jr.normal(getkey(), (8, 2))
    ts = jnp.linspace(0.0, 1.0, 6)
    xs = nde.solve(field, x0, steps=200, ts=ts)
    L = GRAPH8_LAPLACIAN
    for t, x in zip(ts, xs):
        exact = scipy.linalg.expm(-2 * L * float(t)) @ np.asarray(x0)
        # RK4 error at dt = 1/200 with ||2L|| ~ 12: (12 dt)^4 / 120 ~ 1e-7.
        assert np.allclose(x, exact, atol=1e-7)
    energy = [float(jnp.trace(x.T @ graph8.laplacian(x))) for x in xs]
    assert all(e1 < e0 for e0, e1 in zip(energy, energy[1:]))


def test_graph_fields_keep_stability(getkey, graph8):
    make = lambda k: nde.operators.GraphGradient(graph8, 2, 3, key=k)  # noqa: E731
    K = nde.operators.stack(make, layers=2, key=getkey())
    # Parabolic: the Jacobian -K^T diag(sigma') K is symmetric negative semi-definite.
    par = nde.fields.Parabolic(operator=K, layers=2)
    par = eqx.tree_at(lambda f: f.bias, par, jr.normal(getkey(), par.bias.shape))
    assert par.bias.shape == (2, 3)
    x = jr.normal(getkey(), (8, 2))
    J = np.asarray(jax.jacfwd(lambda y: par(0.7, y, None))(x)).reshape(16, 16)
    assert np.allclose(J, J.T, atol=1e-14)
    assert np.linalg.eigvalsh(J).max() < 1e-12
    # Hamiltonian: symplectic Euler on it preserves volume, det(d flow) = 1.
    ham = nde.fields.Hamiltonian(operator=K, layers=2)

    def flow(state):
        y, z = state[:16].reshape(8, 2), state[16:].reshape(8, 2)
        y1, z1 = nde.solve(ham, (y, z), steps=6, solver="symplectic_euler")
        return jnp.concatenate([y1.ravel(), z1.ravel()])

    state = jr.normal(getkey(), (32,))
    det = np.linalg.det(np.asarray(jax.jacrev(flow)(state)))
    assert abs(det - 1) < 1e-12


def test_grand(getkey, graph8):
    field = nde.fields.GRAND(graph8, 3, key_size=4, layers=2, key=getkey())
    x = jr.normal(getkey(), (8, 3))
    # Dense reference: row-wise softmax of (W_K x_u)^T (W_Q x_v) / d_k over
    # neighbours, then (A - I) X.
    k, q = np.asarray(field.key_weight[1]), np.asarray(field.query_weight[1])
    xn = np.asarray(x)
    logits = (xn @ k.T) @ (xn @ q.T).T / 4
    logits = np.where(GRAPH8_ADJACENCY > 0, logits, -np.inf)
    A = np.exp(logits - logits.max(1, keepdims=True))
    A = A / A.sum(1, keepdims=True)
    assert np.allclose(field(0.6, x, None), (A - np.eye(8)) @ xn, atol=1e-14)
    # Maximum principle: each feature's range over the nodes shrinks in time.
    xs = nde.solve(field, x, steps=40, ts=jnp.linspace(0, 1, 5))
    top, bottom = xs.max(axis=1), xs.min(axis=1)
    assert np.all(np.diff(top, axis=0) <= 1e-14)
    assert np.all(np.diff(bottom, axis=0) >= -1e-14)
    assert np.all(top[-1] < top[0]) and np.all(bottom[-1] > bottom[0])


def test_graphcon(getkey, graph8):
    gamma, alpha = 2.0, 0.5
    field = nde.fields.GraphCON(graph8, 3, gamma=gamma, alpha=alpha, key=getkey())
    x, v = jr.normal(getkey(), (8, 3)), jr.normal(getkey(), (8, 3))
    W = np.asarray(field.weight[0])
    d = GRAPH8_DEGREE + 1
    a_hat = (GRAPH8_ADJACENCY + np.eye(8)) / np.sqrt(d[:, None] * d[None, :])
    dx, dv = field(0.0, (x, v), None)
    assert np.allclose(dx, v, atol=0)
    expected = np.tanh(a_hat @ np.asarray(x) @ W) - gamma * x - alpha * v
    assert np.allclose(dv, expected, atol=1e-14)
    # With W = 0 each feature is a damped oscillator x'' = -gamma x - alpha x'.
    still = eqx.tree_at(lambda f: f.weight, field, jnp.zeros_like(field.weight))
    x1, _ = nde.solve(still, (x, jnp.zeros_like(x)), t1=2.0, steps=100)
    w = np.sqrt(gamma - alpha**2 / 4)
    exact = np.exp(-alpha) * (np.cos(2 * w) + alpha / (2 * w) * np.sin(2 * w)) * x
    assert np.allclose(x1, exact, atol=1e-8)


def test_ode_block(getkey):
    field = nde.fields.Hamiltonian(3, 5, layers=4, key=getkey())
    block = nde.nn.ODEBlock(field, steps=8, solver="leapfrog", gradient="reversible")
    y = (jr.normal(getkey(), (3,)), jr.normal(getkey(), (3,)))
    expected = nde.solve(field, y, steps=8, solver="leapfrog")
    out = eqx.nn.Sequential([block])(y, key=getkey())
    assert all(np.allclose(a, b, atol=1e-15) for a, b in zip(out, expected))

    def loss(model):
        return jnp.sum(model(y)[0] ** 2)

    plain = nde.nn.ODEBlock(field, steps=8, solver="leapfrog")
    g_rev, g_dis = eqx.filter_grad(loss)(block), eqx.filter_grad(loss)(plain)
    for a, b in zip(jax.tree.leaves(g_rev), jax.tree.leaves(g_dis)):
        assert np.allclose(a, b, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="Unknown gradient"):
        nde.nn.ODEBlock(field, steps=8, gradient="backprop")
    with pytest.raises(ValueError, match="solver"):
        nde.nn.ODEBlock(field, steps=8, solver="rk45")


def test_bad_graph_input(getkey, graph8):
    with pytest.raises(ValueError, match="out of range"):
        Graph(np.array([0, 8]), np.array([1, 2]), 8)
    with pytest.raises(ValueError, match="negative"):
        Graph(np.array([0, -1]), np.array([1, 2]), 8)
    with pytest.raises(ValueError, match="non-integer"):
        Graph(np.array([0.0, 1.5]), np.array([1, 2]), 8)
    with pytest.raises(ValueError, match="integer dtype"):
        Graph(np.array([0.0, 1.0]), np.array([1, 2]), 8)
    with pytest.raises(ValueError, match="same length"):
        Graph(np.array([0, 1]), np.array([1, 2, 3]), 8)
    with pytest.raises(ValueError, match="square"):
        Graph.from_dense(np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"\(8, 3\)"):
        nde.nn.GCN(3, 2, key=getkey())(jnp.ones((7, 3)), graph8)
    with pytest.raises(ValueError, match=r"\(8, 3\)"):
        nde.nn.GAT(3, 2, key=getkey())(jnp.ones((8, 4)), graph8)
    with pytest.raises(ValueError, match="aggregation"):
        nde.nn.MessagePassing(3, 2, aggregation="min", key=getkey())
    with pytest.raises(TypeError, match="Graph"):
        nde.nn.GCN(3, 2, key=getkey())(jnp.ones((8, 3)), GRAPH8_ADJACENCY)
    with pytest.raises(ValueError, match="shape"):
        nde.fields.GRAND(graph8, 3, key=getkey())(0.0, jnp.ones((8, 2)), None)
    for graph in (graph8, Graph.from_dense(2.0 * GRAPH8_ADJACENCY)):
        unstacked = nde.operators.GraphGradient(graph, 3, 4, key=getkey())
        with pytest.raises(ValueError, match="unstacked.*operators.stack"):
            nde.fields.Parabolic(operator=unstacked, layers=4)


def test_torus_is_the_periodic_grid_graph():
    g = Graph.torus(3)
    adjacency = np.zeros((9, 9), int)
    np.add.at(adjacency, (np.asarray(g.receivers), np.asarray(g.senders)), 1)
    assert np.array_equal(adjacency, adjacency.T)  # undirected
    assert np.all(adjacency.sum(axis=1) == 4) and np.all(np.diag(adjacency) == 0)
    # Node (0, 0) neighbours (0, 1), (1, 0), (0, 2) and (2, 0), wrapping around.
    assert set(np.flatnonzero(adjacency[0])) == {1, 3, 2, 6}
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="side"):
            Graph.torus(bad)
