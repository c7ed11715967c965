import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import neuralde as nde
from neuralde.fields import layer_index


def _weights(field):
    return field.operator.weight


def test_dense_transpose_is_exact_adjoint(getkey):
    K = nde.operators.Dense(5, 3, key=getkey())
    x = jax.random.normal(getkey(), (5,))
    y = jax.random.normal(getkey(), (3,))
    # <Kx, y> = <x, K^T y>, and K^T is the matrix transpose, to round-off.
    assert jnp.allclose(jnp.dot(K(x), y), jnp.dot(x, K.T(y)), rtol=1e-14)
    assert jnp.allclose(K.T(y), K.weight.T @ y, rtol=1e-14)
    assert K.out_structure().shape == (3,)


def test_layer_index_boundaries():
    # Right-continuous: layer k owns [k/10, (k+1)/10); round-off below a boundary
    # (3 * 0.1 = 0.30000000000000004, 0.7 * 1 from 0.1 * 7) counts as the later layer.
    assert int(layer_index(0.0, 10, 1.0)) == 0
    assert int(layer_index(0.05, 10, 1.0)) == 0
    assert int(layer_index(3 * 0.1, 10, 1.0)) == 3
    assert int(layer_index(0.3 - 1e-15, 10, 1.0)) == 3
    assert int(layer_index(0.3 - 1e-6, 10, 1.0)) == 2
    assert int(layer_index(1.0, 10, 1.0)) == 9  # t1 belongs to the last layer
    assert int(layer_index(-1.0, 10, 1.0)) == 0
    assert int(layer_index(0.75, 4, 3.0)) == 1


def test_mlp_closed_form_and_layers(getkey):
    f = nde.fields.MLP(4, layers=3, t1=1.5, key=getkey())
    f = eqx.tree_at(lambda f: f.bias, f, jax.random.normal(getkey(), (3, 4)))
    y = jax.random.normal(getkey(), (4,))
    W, b = _weights(f), f.bias
    for t, k in [(0.0, 0), (0.49, 0), (0.5, 1), (1.2, 2), (1.5, 2)]:
        expected = jnp.tanh(W[k] @ y + b[k])
        assert jnp.allclose(f(t, y, None), expected, rtol=1e-14)


def test_antisymmetric_spectrum(getkey):
    dim = 6
    f0 = nde.fields.Antisymmetric(dim, gamma=0.0, key=getkey())
    W = _weights(f0)[0]
    # W^T - W is antisymmetric: its eigenvalues are purely imaginary.
    eig = np.linalg.eigvals(np.asarray(W.T - W))
    assert np.max(np.abs(eig.real)) < 1e-12
    assert np.max(np.abs(eig.imag)) > 0.1
    # gamma > 0: the field's Jacobian diag(sigma')(W - W^T - gamma I) has spectrum in
    # Re <= -gamma min(sigma') < 0, at any state.
    f = nde.fields.Antisymmetric(dim, gamma=0.1, key=getkey())
    for _ in range(5):
        y = 2 * jax.random.normal(getkey(), (dim,))
        J = jax.jacfwd(f, argnums=1)(0.0, y, None)
        assert np.max(np.linalg.eigvals(np.asarray(J)).real) < 0
    # gamma = 0: Jacobian similar to an antisymmetric matrix, eigenvalues imaginary.
    J = jax.jacfwd(f0, argnums=1)(0.0, jax.random.normal(getkey(), (dim,)), None)
    assert np.max(np.abs(np.linalg.eigvals(np.asarray(J)).real)) < 1e-12


def test_hamiltonian_is_hamiltonian(getkey):
    dim, width = 3, 5
    f = nde.fields.Hamiltonian(dim, width, layers=2, key=getkey())
    f = eqx.tree_at(lambda f: f.bias, f, jax.random.normal(getkey(), (2, width)))
    y, z = jax.random.normal(getkey(), (2, dim))
    t = 0.7
    K, b = _weights(f)[1], f.bias[1]

    def H(y, z):  # sum log cosh, the antiderivative of tanh
        return jnp.sum(jnp.log(jnp.cosh(K @ y + b))) + jnp.sum(
            jnp.log(jnp.cosh(K @ z + b))
        )

    dy, dz = f(t, (y, z), None)
    assert jnp.allclose(dy, jax.grad(H, argnums=1)(y, z), rtol=1e-13)
    assert jnp.allclose(dz, -jax.grad(H, argnums=0)(y, z), rtol=1e-13)
    # Divergence free: the Jacobian of the full field has zero trace.
    J = jax.jacfwd(lambda s: jnp.concatenate(f(t, (s[:dim], s[dim:]), None)))(
        jnp.concatenate([y, z])
    )
    assert abs(jnp.trace(J)) < 1e-13


def test_hyperbolic_and_parabolic_closed_forms(getkey):
    dim, width = 4, 6
    hyp = nde.fields.Hyperbolic(dim, width, key=getkey())
    par = nde.fields.Parabolic(dim, width, key=getkey())
    y, v = jax.random.normal(getkey(), (2, dim))
    K = _weights(hyp)[0]
    dy, dv = hyp(0.0, (y, v), None)
    assert jnp.array_equal(dy, v)
    assert jnp.allclose(dv, -K.T @ jnp.tanh(K @ y), rtol=1e-14)
    K = _weights(par)[0]
    assert jnp.allclose(par(0.0, y, None), -K.T @ jnp.tanh(K @ y), rtol=1e-14)
    # Parabolic Jacobian -K^T diag(sigma') K: symmetric negative semi-definite.
    J = np.asarray(jax.jacfwd(par, argnums=1)(0.0, y, None))
    assert np.allclose(J, J.T, atol=1e-14)
    assert np.max(np.linalg.eigvalsh(J)) < 1e-12


def test_custom_operator_and_activation(getkey):
    # Any stacked AbstractOperator can stand in for K.
    K = nde.operators.stack(
        lambda k: nde.operators.Dense(3, 7, key=k), layers=2, key=getkey()
    )
    f = nde.fields.Parabolic(operator=K, layers=2, activation=jax.nn.relu)
    y = jax.random.normal(getkey(), (3,))
    W = K.weight[0]
    assert jnp.allclose(f(0.1, y, None), -W.T @ jax.nn.relu(W @ y), rtol=1e-14)
    assert f.bias.shape == (2, 7)


def test_dtype_float32(getkey):
    f = nde.fields.Hamiltonian(3, 4, dtype=jnp.float32, key=getkey())
    y = jnp.ones(3, jnp.float32)
    dy, dz = f(jnp.float32(0.0), (y, y), None)
    assert dy.dtype == dz.dtype == jnp.float32


@pytest.mark.parametrize("layers", [0, -2, 1.5])
def test_bad_layers(getkey, layers):
    with pytest.raises(ValueError, match="layers"):
        nde.fields.MLP(3, layers=layers, key=getkey())


def test_bad_state_shapes(getkey):
    f = nde.fields.MLP(3, key=getkey())
    with pytest.raises(ValueError, match=r"shape \(3,\).*vmap"):
        f(0.0, jnp.ones((5, 3)), None)
    with pytest.raises(TypeError, match="single array"):
        f(0.0, (jnp.ones(3), jnp.ones(3)), None)
    h = nde.fields.Hamiltonian(3, 4, key=getkey())
    with pytest.raises(TypeError, match=r"tuple `\(y, z\)`"):
        h(0.0, jnp.ones(3), None)
    with pytest.raises(ValueError, match="operator"):
        nde.fields.MLP(3, layers=2, operator=nde.operators.Dense(3, 3, key=getkey()))
    with pytest.raises(ValueError, match="square"):
        K = nde.operators.stack(
            lambda k: nde.operators.Dense(3, 4, key=k), layers=1, key=getkey()
        )
        nde.fields.MLP(operator=K)
    with pytest.raises(ValueError, match="gamma"):
        nde.fields.Antisymmetric(3, gamma=-1.0, key=getkey())


@pytest.mark.parametrize("dtype, layers", [(jnp.float16, 64), (jnp.bfloat16, 16)])
def test_layer_index_half_precision(dtype, layers):
    t = jnp.array([0.001, 0.251, 0.501], dtype)
    expected = [0, layers // 4, layers // 2]
    assert layer_index(t, layers, 1.0).tolist() == expected


def test_unstacked_operator_is_rejected(getkey):
    with pytest.raises(ValueError, match="unstacked.*operators.stack"):
        nde.fields.Hamiltonian(
            operator=nde.operators.Dense(4, 8, key=getkey()), layers=8
        )


def test_sizes_and_activation_are_checked(getkey):
    with pytest.raises(ValueError, match="MLP: sizes must be positive integers"):
        nde.fields.MLP(0, key=getkey())
    with pytest.raises(ValueError, match="Hamiltonian: sizes must be positive"):
        nde.fields.Hamiltonian(4, -1, key=getkey())
    # A zero-width K would make the field silently the zero map.
    with pytest.raises(ValueError, match="Hamiltonian: sizes must be positive"):
        nde.fields.Hamiltonian(4, 0, key=getkey())
    with pytest.raises(ValueError, match="`in_size` must be a positive integer"):
        nde.operators.Dense(0, 3, key=getkey())
    with pytest.raises(TypeError, match="`activation` must be a function"):
        nde.fields.Antisymmetric(3, activation="tanh", key=getkey())
    with pytest.raises(TypeError, match="Attention: `activation` must be"):
        nde.fields.Attention(8, 2, activation=None, key=getkey())


def test_import_loads_the_library_only():
    # `import neuralde` loads neither the commands' modules nor matplotlib, and the
    # public modules are packages that export their names only.
    import subprocess
    import sys

    code = (
        "import sys, neuralde as nde\n"
        "bad = [m for m in sys.modules if m.startswith(('matplotlib', "
        "'neuralde.study', 'neuralde._study', 'neuralde.bench', 'neuralde._bench'))]\n"
        "assert not bad, bad\n"
        "import neuralde.study as m\n"
        "assert m.__name__ == 'neuralde.study' and callable(m.study)\n"
        "assert nde.bench.bench\n"
        "for mod in (nde.train, nde.penalties, nde.regularizers, nde.gradients):\n"
        "    assert not {'tqdm', 'positive_int', 'jnp', 'jax'} & set(vars(mod)), mod\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_import_graph_flows_one_way():
    # Nothing in `fields/` or `operators/` imports from `nn/`, the gradient modes
    # import no solve, and the benchmark's modules form no cycle.
    import ast
    import pathlib

    root = pathlib.Path(nde.__file__).parent

    def imports(path):
        tree = ast.parse(path.read_text())
        package = ".".join(path.relative_to(root.parent).with_suffix("").parts[:-1])
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
                found.add(name)
                found.update(f"{name}.{a.name}" for a in node.names)
        return found

    for sub, banned in [
        ("fields", ("neuralde.nn", "neuralde._solve", "neuralde.gradients")),
        ("operators", ("neuralde.nn", "neuralde.fields", "neuralde._solve")),
        ("gradients", ("neuralde._solve", "neuralde.nn", "neuralde.train")),
    ]:
        for path in (root / sub).glob("*.py"):
            bad = [
                m
                for m in imports(path)
                if any(m == b or m.startswith(b + ".") for b in banned)
            ]
            assert not bad, (path.name, bad)
    bench = {p.stem: imports(p) for p in (root / "_bench").glob("*.py")}
    edges = {
        a: {b for b in bench if f"neuralde._bench.{b}" in deps}
        for a, deps in bench.items()
    }

    def reaches(a, b, seen=()):
        return any(
            c == b or (c not in seen and reaches(c, b, (*seen, c))) for c in edges[a]
        )

    assert not [a for a in edges if reaches(a, a)]
