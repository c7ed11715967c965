import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import neuralde as nde


# Every reference below is evaluated in float64 NumPy (conftest enables x64), so the
# layers and their references agree to a few ulps of O(1) numbers: 1e-12 leaves
# room for the different summation orders of einsum, matmul and softmax.
TOL = 1e-12

# One set of sizes for the whole file: every new parameter shape costs a compile
# of its random initialiser.
D, H, FFN, CTX, N, VOCAB, LAYERS = 4, 2, 4, 2, 5, 5, 2

call = eqx.filter_jit(lambda f, *args: f(*args))
call_rows = eqx.filter_jit(lambda f, x: jax.vmap(f)(x))
attention = jax.jit(nde.nn.dot_product_attention, static_argnames="causal")


def np_softmax(logits):
    logits = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=-1, keepdims=True)


def np_attention(q, k, v, mask=None):
    logits = q @ k.T / np.sqrt(q.shape[-1])
    if mask is not None:
        logits = np.where(mask, logits, -np.inf)
    return np_softmax(logits) @ v


def np_linear(lin, x):
    y = x @ np.asarray(lin.weight).T
    return y if lin.bias is None else y + np.asarray(lin.bias)


def np_mha(mha, xq, xkv, mask=None):
    """Multi-head attention written per head, from an `eqx.nn.MultiheadAttention`'s
    weights: head h uses rows [h d_k, (h+1) d_k) of each projection."""
    q = np_linear(mha.query_proj, xq)
    k = np_linear(mha.key_proj, xkv)
    v = np_linear(mha.value_proj, xkv)
    dk, dv = mha.qk_size, mha.vo_size
    heads = []
    for h in range(mha.num_heads):
        m = mask[h] if mask is not None and mask.ndim == 3 else mask
        sq, sv = slice(h * dk, (h + 1) * dk), slice(h * dv, (h + 1) * dv)
        heads.append(np_attention(q[:, sq], k[:, sq], v[:, sv], m))
    return np_linear(mha.output_proj, np.concatenate(heads, axis=1))


def np_layer_norm(ln, x, eps=1e-5):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * np.asarray(ln.weight) + np.asarray(ln.bias)


@pytest.fixture
def rng():
    """Seeded NumPy draws for test data and parameter perturbations: unlike
    `jax.random`, they cost no compilation per shape."""
    return np.random.default_rng(1234)


def normal(rng, *shape):
    return jnp.asarray(rng.standard_normal(shape))


def randomise(module, rng, scale=0.3):
    """Move every floating parameter off its initial value, so that LayerNorm gains
    and biases (initially 1 and 0) take part in the comparisons."""
    params, static = eqx.partition(module, eqx.is_inexact_array)
    perturb = lambda x: np.asarray(x) + scale * rng.standard_normal(x.shape)  # noqa: E731
    params = jax.tree.map(lambda x: jnp.asarray(perturb(x)), params)
    return eqx.combine(params, static)


def random_mask(rng, shape):
    mask = rng.random(shape) < 0.6
    mask[..., 0] = True  # every query may attend to something
    return jnp.asarray(mask)


def test_dot_product_attention_matches_numpy(rng):
    q = normal(rng, 3, D)
    k = normal(rng, N, D)
    v = normal(rng, N, 2)
    mask = random_mask(rng, (3, N))
    qn, kn, vn, mn = map(np.asarray, (q, k, v, mask))
    np.testing.assert_allclose(attention(q, k, v), np_attention(qn, kn, vn), rtol=TOL)
    np.testing.assert_allclose(
        attention(q, k, v, mask), np_attention(qn, kn, vn, mn), rtol=TOL
    )
    # causal: query i sees keys j <= i (top-left aligned), on top of the mask.
    causal = np.tril(np.ones((3, N), bool))
    np.testing.assert_allclose(
        attention(q, k, v, mask, causal=True),
        np_attention(qn, kn, vn, mn & causal),
        rtol=TOL,
    )


def test_causal_attention_leaks_nothing(getkey, rng):
    i = 2
    q, k, v = (normal(rng, N, D) for _ in range(3))
    # Change every input at positions after i.
    q2, k2, v2 = (x.at[i + 1 :].add(1.0) for x in (q, k, v))
    out = attention(q, k, v, causal=True)
    out2 = attention(q2, k2, v2, causal=True)
    # Masked weights are exactly zero, so earlier rows are bitwise equal.
    np.testing.assert_array_equal(out[: i + 1], out2[: i + 1])
    assert np.abs(out[i + 1 :] - out2[i + 1 :]).min() > 1e-3  # the change is seen

    block = nde.nn.TransformerBlock(D, H, width_size=FFN, causal=True, key=getkey())
    x = normal(rng, N, D)
    x2 = x.at[i + 1 :].set(normal(rng, N - i - 1, D))
    y, y2 = call(block, x), call(block, x2)
    # Exact zeros again; LayerNorm and the FFN act per position.
    np.testing.assert_array_equal(y[: i + 1], y2[: i + 1])
    assert np.abs(y[i + 1 :] - y2[i + 1 :]).min() > 1e-3


def test_self_attention_matches_numpy_per_head(getkey, rng):
    layer = nde.nn.SelfAttention(D, H, use_bias=True, key=getkey())
    layer = randomise(layer, rng)  # biases start at zero
    x = normal(rng, N, D)
    xn = np.asarray(x)
    mha = layer.attention
    np.testing.assert_allclose(call(layer, x), np_mha(mha, xn, xn), rtol=TOL, atol=TOL)
    # One mask per head, combined with the causal mask.
    mask = random_mask(rng, (H, N, N))
    causal = nde.nn.SelfAttention(D, H, causal=True, use_bias=True, key=getkey())
    causal = eqx.tree_at(lambda m: m.attention, causal, mha)
    expected = np_mha(mha, xn, xn, np.asarray(mask) & np.tril(np.ones((N, N), bool)))
    np.testing.assert_allclose(call(causal, x, mask), expected, rtol=TOL, atol=TOL)


def test_cross_attention_matches_numpy(getkey, rng):
    layer = nde.nn.CrossAttention(D, H, context_size=CTX, key=getkey())
    x = normal(rng, 3, D)
    context = normal(rng, N, CTX)
    mask = random_mask(rng, (3, N))
    expected = np_mha(layer.attention, *map(np.asarray, (x, context, mask)))
    out = call(layer, x, context, mask)
    np.testing.assert_allclose(out, expected, rtol=TOL, atol=TOL)


def test_sinusoidal_encoding_closed_form():
    length, dim = 7, 5  # an odd dim: the last column is a sine
    pe = np.asarray(nde.nn.sinusoidal_encoding(length, dim))
    expected = np.empty((length, dim))
    for p in range(length):
        for j in range(dim):
            # Vaswani et al. (2017), section 3.5.
            angle = p / 10000 ** (2 * (j // 2) / dim)
            expected[p, j] = np.sin(angle) if j % 2 == 0 else np.cos(angle)
    # Angles up to 6 rad in float64: a few ulps.
    np.testing.assert_allclose(pe, expected, rtol=0, atol=1e-14)


def test_transformer_block_post_and_pre_ln_by_hand(getkey, rng):
    x = normal(rng, N, D)
    xn = np.asarray(x)
    for norm in ("post", "pre"):
        block = nde.nn.TransformerBlock(D, H, width_size=FFN, norm=norm, key=getkey())
        block = randomise(block, rng)
        attn = lambda z: np.asarray(call(block.attention, jnp.asarray(z)))  # noqa: E731
        ffn = lambda z: np.asarray(call_rows(block.ffn, jnp.asarray(z)))  # noqa: E731
        ln1 = lambda z: np_layer_norm(block.norm1, z)  # noqa: E731
        ln2 = lambda z: np_layer_norm(block.norm2, z)  # noqa: E731
        if norm == "post":
            h = ln1(xn + attn(xn))
            expected = ln2(h + ffn(h))
        else:
            h = xn + attn(ln1(xn))
            expected = h + ffn(ln2(h))
        np.testing.assert_allclose(call(block, x), expected, rtol=TOL, atol=TOL)


def test_gpt_causal_training_and_generation(getkey):
    model = nde.nn.GPT(VOCAB, D, H, LAYERS, max_len=8, width_size=FFN, key=getkey())
    assert model.blocks.norm1.weight.shape == (LAYERS, D)  # stacked for the scan
    tokens = jnp.array([0, 1, 2, 3, 4, 0, 1, 2])

    # Causality of the logits: row i depends on tokens[: i + 1] only.
    i = 4
    changed = tokens.at[i + 1 :].set(jnp.array([3, 3, 4]))
    logits, logits2 = call(model, tokens), call(model, changed)
    assert logits.shape == (8, VOCAB)
    np.testing.assert_array_equal(logits[: i + 1], logits2[: i + 1])
    assert np.abs(logits[i + 1 :] - logits2[i + 1 :]).min() > 1e-6

    optimiser = optax.adam(5e-2)

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def step(model, state):
        loss_fn = lambda m: nde.losses.next_token(m(tokens), tokens)  # noqa: E731
        loss, grads = eqx.filter_value_and_grad(loss_fn)(model)
        updates, state = optimiser.update(grads, state, model)
        return eqx.apply_updates(model, updates), state, loss

    state = optimiser.init(eqx.filter(model, eqx.is_inexact_array))
    losses = []
    for _ in range(40):
        model, state, loss = step(model, state)  # traced once (asserted)
        losses.append(float(loss))
    # The sequence is a deterministic cycle, so the loss can go to zero; from about
    # log(5) = 1.6 at random initialisation it must fall by a clear factor (over
    # 70 on the eight seeds tried).
    assert losses[0] > 1.0
    assert losses[-1] < losses[0] / 20, losses

    # Greedy decoding continues the learnt cycle, and each generated token is the
    # argmax of the logits at the previous position (the scan's buffer is causal).
    gen = eqx.filter_jit(eqx.debug.assert_max_traces(nde.nn.generate, max_traces=1))
    out = gen(model, tokens[:3], 5, temperature=0.0, key=getkey())
    np.testing.assert_array_equal(out[:3], tokens[:3])
    np.testing.assert_array_equal(out[3:], jnp.argmax(call(model, out), -1)[2:-1])
    np.testing.assert_array_equal(out, tokens)
    # A new key does not retrace (asserted); greedy decoding does not use it.
    again = gen(model, tokens[:3], 5, temperature=0.0, key=getkey())
    np.testing.assert_array_equal(again, out)


@pytest.mark.slow
def test_generate_samples_from_the_tempered_softmax(getkey):
    # The first new token is drawn from softmax(logits / T) at the last prompt
    # position; compare frequencies over many keys.
    prompt, temperature = jnp.array([1, 2]), 2.0
    model = nde.nn.GPT(VOCAB, D, H, LAYERS, max_len=8, width_size=FFN, key=getkey())
    sample = eqx.filter_jit(
        jax.vmap(
            lambda k: nde.nn.generate(model, prompt, 1, temperature=temperature, key=k)
        )
    )
    draws = np.asarray(sample(jr.split(getkey(), 4000))[:, 2])
    p = np_softmax(np.asarray(call(model, prompt))[1] / temperature)
    freq = np.bincount(draws, minlength=VOCAB) / draws.size
    # Binomial standard error <= sqrt(0.25 / 4000) = 0.008: five of them.
    np.testing.assert_allclose(freq, p, atol=0.04)


def test_attention_field_layers_and_closed_form(getkey, rng):
    f = nde.fields.Attention(D, H, width_size=FFN, layers=LAYERS, t1=1.5, key=getkey())
    f = randomise(f, rng)
    assert f.attention.query_proj.weight.shape == (LAYERS, D, D)  # layer axis
    x = normal(rng, N, D)
    xn = np.asarray(x)

    def rate(field, t, y):  # t as an array: one compile for all times
        return call(field, jnp.asarray(t), y, None)

    for t, k in [(0.2, 0), (0.7, 0), (0.75, 1), (1.3, 1), (1.5, 1)]:
        attention, ffn, ln_a, ln_f = f.at_layer(k)
        a, h = np_layer_norm(ln_a, xn), np_layer_norm(ln_f, xn)
        w1, w2 = ffn.layers
        expected = np_mha(attention, a, a) + np_linear(w2, np.tanh(np_linear(w1, h)))
        np.testing.assert_allclose(rate(f, t, x), expected, rtol=TOL, atol=TOL)
    # Piecewise constant in time: equal within a layer, different across layers.
    np.testing.assert_array_equal(rate(f, 0.0, x), rate(f, 0.74, x))
    np.testing.assert_array_equal(rate(f, 0.75, x), rate(f, 1.5, x))
    assert np.abs(rate(f, 0.74, x) - rate(f, 0.75, x)).max() > 1e-3

    # Causal field: the rate of position i ignores later positions.
    fc = nde.fields.Attention(
        D, H, width_size=FFN, layers=LAYERS, causal=True, key=getkey()
    )
    x2 = x.at[3:].set(normal(rng, N - 3, D))  # not a shift: LN removes those
    np.testing.assert_array_equal(rate(fc, 0.0, x)[:3], rate(fc, 0.0, x2)[:3])
    assert np.abs(rate(fc, 0.0, x)[3:] - rate(fc, 0.0, x2)[3:]).min() > 1e-3


def test_attention_field_solve_gradient_matches_finite_differences(getkey, rng):
    field = nde.fields.Attention(
        D, H, seq_len=3, width_size=FFN, layers=LAYERS, key=getkey()
    )
    x0 = normal(rng, 3, D)
    w = normal(rng, 3, D)

    def loss(x):
        return jnp.sum(w * nde.solve(field, x, steps=4, solver="rk4"))

    # One compile: the gradient and the perturbed losses in one vmapped call.
    h = 1e-5
    basis = jnp.eye(x0.size).reshape(-1, *x0.shape)
    points = jnp.concatenate([x0[None], x0 + h * basis, x0 - h * basis])
    values, grads = jax.jit(jax.vmap(jax.value_and_grad(loss)))(points)
    assert np.all(np.isfinite(values))
    # Central differences in float64: truncation O(h^2) ~ 1e-10 and round-off
    # ~ 1e-16 / h ~ 1e-11, against gradient entries of O(1).
    m = x0.size
    fd = (values[1 : m + 1] - values[m + 1 :]) / (2 * h)
    np.testing.assert_allclose(grads[0].reshape(-1), fd, rtol=1e-7, atol=1e-8)


def test_bad_inputs(getkey):
    dpa = nde.nn.dot_product_attention
    q, k = jnp.ones((3, 4)), jnp.ones((5, 4))
    with pytest.raises(ValueError, match="same number of features, got 4 and 3"):
        dpa(q, jnp.ones((5, 3)), k)
    with pytest.raises(ValueError, match="same length .* got 5 and 4"):
        dpa(q, k, jnp.ones((4, 2)))
    with pytest.raises(ValueError, match=r"`mask` must have shape \(3, 5\).*\(5, 3\)"):
        dpa(q, k, k, jnp.ones((5, 3), bool))
    with pytest.raises(TypeError, match="`mask` must be boolean"):
        dpa(q, k, k, jnp.ones((3, 5)))
    with pytest.raises(ValueError, match="batch with `jax.vmap`"):
        dpa(jnp.ones((2, 3, 4)), k, k)

    # num_heads must divide the model size.
    with pytest.raises(ValueError, match="`num_heads=3` must divide .*`in_size=4`"):
        nde.nn.SelfAttention(D, 3, key=getkey())
    with pytest.raises(ValueError, match="`num_heads=3` must divide"):
        nde.nn.CrossAttention(D, 3, key=getkey())
    with pytest.raises(ValueError, match="`num_heads=3` must divide"):
        nde.nn.TransformerBlock(D, 3, key=getkey())
    with pytest.raises(ValueError, match="`num_heads=3` must divide"):
        nde.nn.GPT(VOCAB, D, 3, LAYERS, max_len=8, key=getkey())
    with pytest.raises(ValueError, match="`num_heads=3` must divide"):
        nde.fields.Attention(D, 3, key=getkey())

    # Mismatched feature sizes.
    layer = nde.nn.SelfAttention(D, H, key=getkey())
    with pytest.raises(ValueError, match=r"`x` must have shape \(seq_len, 4\)"):
        layer(jnp.ones((3, 5)))
    with pytest.raises(ValueError, match="batch with `jax.vmap`"):
        layer(jnp.ones((2, 3, D)))
    cross = nde.nn.CrossAttention(D, H, context_size=CTX, key=getkey())
    with pytest.raises(ValueError, match=r"`context` must have shape \(seq_len, 2\)"):
        cross(jnp.ones((2, D)), jnp.ones((N, D)))
    block = nde.nn.TransformerBlock(D, H, width_size=FFN, key=getkey())
    with pytest.raises(ValueError, match=r"`x` must have shape \(seq_len, 4\)"):
        block(jnp.ones((3, 6)))
    field = nde.fields.Attention(D, H, width_size=FFN, layers=LAYERS, key=getkey())
    with pytest.raises(ValueError, match=r"shape \(3, 4\), but got shape \(3, 6\)"):
        field(0.0, jnp.ones((3, 6)), None)
    with pytest.raises(ValueError, match=r"shape \(seq_len, 4\)"):
        field(0.0, jnp.ones(D), None)
    fixed = nde.fields.Attention(
        D, H, seq_len=3, width_size=FFN, layers=LAYERS, key=getkey()
    )
    with pytest.raises(ValueError, match=r"shape \(3, 4\), but got shape \(5, 4\)"):
        fixed(0.0, jnp.ones((N, D)), None)

    # Masks of the wrong shape.
    with pytest.raises(ValueError, match=r"\(3, 3\) or \(2, 3, 3\).*\(3, 4\)"):
        layer(jnp.ones((3, D)), jnp.ones((3, 4), bool))
    with pytest.raises(ValueError, match=r"\(3, 3\) or \(2, 3, 3\).*\(3, 3, 3\)"):
        layer(jnp.ones((3, D)), jnp.ones((3, 3, 3), bool))
    with pytest.raises(ValueError, match=r"\(2, 5\) or \(2, 2, 5\).*\(5, 2\)"):
        cross(jnp.ones((2, D)), jnp.ones((N, CTX)), jnp.ones((N, 2), bool))

    # Other options.
    with pytest.raises(ValueError, match="`norm` must be 'post' or 'pre'"):
        nde.nn.TransformerBlock(D, H, norm="sandwich", key=getkey())
    with pytest.raises(ValueError, match="`base` must be > 1"):
        nde.nn.sinusoidal_encoding(4, 6, base=1.0)
    with pytest.raises(ValueError, match="`dim` must be a positive integer"):
        nde.nn.sinusoidal_encoding(4, 0)
    model = nde.nn.GPT(VOCAB, D, H, LAYERS, max_len=8, width_size=FFN, key=getkey())
    with pytest.raises(ValueError, match="length 9, .* `max_len=8`"):
        model(jnp.zeros(9, int))
    with pytest.raises(ValueError, match=r"shape \(seq_len,\).*batch with `jax.vmap`"):
        model(jnp.zeros((2, 3), int))
    with pytest.raises(TypeError, match="integer token ids"):
        model(jnp.zeros(3))
    with pytest.raises(eqx.EquinoxRuntimeError, match="token ids must lie in"):
        call(model, jnp.array([0, 1, 2, 3, 4, 0, 1, VOCAB]))  # compiled already
    with pytest.raises(ValueError, match="exceeds the model's `max_len=8`"):
        nde.nn.generate(model, jnp.zeros(6, int), 3, key=getkey())
    with pytest.raises(ValueError, match="`temperature` must be >= 0"):
        nde.nn.generate(model, jnp.zeros(2, int), 1, temperature=-1.0, key=getkey())
    with pytest.raises(ValueError, match=r"`prompt` must have shape \(prompt_len,\)"):
        nde.nn.generate(model, jnp.zeros((1, 2), int), 1, key=getkey())


def test_layers_fit_sequential_with_a_key(getkey):
    # Every layer accepts (and ignores) `key=`, as `eqx.nn.Sequential` passes one.
    x = jax.random.normal(getkey(), (5, 8))
    layers = [
        nde.nn.SelfAttention(8, 2, key=getkey()),
        nde.nn.TransformerBlock(8, 2, key=getkey()),
    ]
    for layer in layers:
        seq = eqx.nn.Sequential([layer])
        np.testing.assert_allclose(seq(x, key=getkey()), layer(x), rtol=1e-12)
    gpt = nde.nn.GPT(11, 8, 2, 1, max_len=6, key=getkey())
    tokens = jnp.arange(5)
    np.testing.assert_allclose(
        eqx.nn.Sequential([gpt])(tokens, key=getkey()), gpt(tokens), rtol=1e-12
    )
