import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import neuralde as nde
from neuralde import _checkpoint, _io


def mse(model, x, y):
    return jnp.mean((jax.vmap(model)(x) - y) ** 2)


def regression(key, n=64):
    xkey, nkey = jr.split(key)
    x = jr.normal(xkey, (n, 3))
    y = x @ jnp.array([[1.0], [-2.0], [0.5]]) + 0.3 + 0.01 * jr.normal(nkey, (n, 1))
    return x, y


def test_fit_takes_the_documented_steps(getkey):
    # fit equals a hand-written loop over the documented batch order, bit for bit,
    # with clipping and a schedule from optax, and traces its step once.
    x, y = regression(getkey())
    model = eqx.nn.Linear(3, 1, key=getkey())
    # A piecewise-constant schedule: optax evaluates schedules in float32, and XLA
    # fuses e.g. `linear_schedule`'s arithmetic under jit differently from eager
    # evaluation (values differing by ~1e-9), which is not what this test is about.
    schedule = optax.piecewise_constant_schedule(0.1, {8: 0.5, 14: 0.2})
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(schedule))
    key = getkey()
    trained, history = nde.train.fit(
        model, mse, (x, y), opt, key=key, steps=20, batch_size=16, progress=False
    )
    assert history["traces"] == 1
    assert history["step"] == [4, 8, 12, 16, 20]

    params, static = eqx.partition(model, eqx.is_inexact_array)
    state = opt.init(params)
    losses = []
    for step in range(20):
        epoch, i = divmod(step, 4)
        order_key, _ = jr.split(key)
        idx = jr.permutation(jr.fold_in(order_key, epoch), 64)[16 * i : 16 * (i + 1)]
        loss, grads = jax.value_and_grad(
            lambda p: mse(eqx.combine(p, static), x[idx], y[idx])
        )(params)
        updates, state = opt.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        losses.append(float(loss))
    for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(params)):
        assert np.allclose(a, b, rtol=1e-14, atol=0)
    assert np.allclose(history["train_loss"], np.mean(np.reshape(losses, (5, 4)), 1))


def test_fit_converges_and_evaluates(getkey):
    x, y = regression(getkey(), n=128)
    data = (x[:96], y[:96])
    model = eqx.nn.Linear(3, 1, key=getkey())
    metrics = {"mae": lambda m, x, y: jnp.mean(jnp.abs(jax.vmap(m)(x) - y))}
    trained, history = nde.train.fit(
        model, mse, data, optax.adam(0.05), key=getkey(), epochs=60, batch_size=32,
        eval_data=(x[96:], y[96:]), metrics=metrics, eval_every=30, progress=False,
    )  # fmt: skip
    assert history["traces"] == 1
    # Least squares on the training set, the closed form adam approaches.
    design = np.hstack([np.asarray(data[0]), np.ones((96, 1))])
    solution = np.linalg.lstsq(design, np.asarray(data[1]), rcond=None)[0]
    assert np.allclose(trained.weight.T, solution[:3], atol=2e-3)
    assert np.allclose(trained.bias, solution[3], atol=2e-3)
    assert history["eval_loss"][-1] < 1e-3 * history["eval_loss"][0]
    assert len(history["eval_mae"]) == len(history["step"]) == 6


def test_early_stopping_returns_the_best_model(getkey):
    # The eval targets have the opposite sign, so the eval loss only gets worse
    # after the first evaluation: training stops after `patience` more.
    x, y = regression(getkey())
    model = eqx.nn.Linear(3, 1, key=getkey())
    kwargs = dict(key=getkey(), batch_size=16, progress=False)
    best, history = nde.train.fit(
        model, mse, (x, y), optax.sgd(0.05), epochs=50, eval_data=(x, -y),
        patience=2, **kwargs,
    )  # fmt: skip
    assert history["step"] == [4, 8, 12]
    assert history["eval_loss"][1] > history["eval_loss"][0]
    first, _ = nde.train.fit(model, mse, (x, y), optax.sgd(0.05), steps=4, **kwargs)
    assert all(
        jnp.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(best), jax.tree.leaves(first))
    )


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.eqx"
    _checkpoint.save(path, {"w": jnp.arange(3.0)}, {"step": 1})
    like = {"w": jnp.zeros(3)}

    def interrupted(f):
        raise KeyboardInterrupt

    # neuralde's own sync, not `os.fsync`: patching the `os` module would interrupt
    # any other thread that syncs a file meanwhile.
    monkeypatch.setattr(_io, "_sync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _checkpoint.save(path, {"w": jnp.full(3, 7.0)}, {"step": 2})
    monkeypatch.undo()
    state, meta = _checkpoint.load(path, like)
    assert meta == {"step": 1} and np.array_equal(state["w"], [0.0, 1.0, 2.0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.eqx", "ckpt.eqx.json"]
    with pytest.raises(ValueError, match="does not match"):
        _checkpoint.load(path, {"w": jnp.zeros(4)})


def saved_checkpoint(tmp_path):
    path = tmp_path / "ckpt.eqx"
    _checkpoint.save(path, {"w": jnp.arange(4.0), "b": jnp.ones(2)}, {"step": 3})
    return path, {"w": jnp.zeros(4), "b": jnp.zeros(2)}


@pytest.mark.parametrize(
    "damage",
    [
        "flip a bit of the arrays",
        "flip a bit of the header",
        "append bytes",
        "truncate the arrays",
        "truncate to the header",
        "corrupt the header length",
    ],
)
def test_a_damaged_checkpoint_is_refused(tmp_path, damage):
    path, like = saved_checkpoint(tmp_path)
    data = bytearray(path.read_bytes())
    header_at = len(_checkpoint._MAGIC) + 8
    if damage == "flip a bit of the arrays":
        data[-40] ^= 0x01
    elif damage == "flip a bit of the header":
        data[header_at + 2] ^= 0x04
    elif damage == "append bytes":
        data += b"\0\0\0\0"
    elif damage == "truncate the arrays":
        data = data[:-10]
    elif damage == "truncate to the header":
        data = data[: header_at + 5]
    else:
        data[len(_checkpoint._MAGIC)] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="is damaged: its checksum does not match"):
        _checkpoint.load(path, like)


def test_checkpoint_round_trip_and_foreign_files(tmp_path):
    path, like = saved_checkpoint(tmp_path)
    state, meta = _checkpoint.load(path, like)
    assert meta == {"step": 3} and np.array_equal(state["w"], np.arange(4.0))
    with pytest.raises(ValueError, match="does not match this model"):
        _checkpoint.load(path, {"w": jnp.zeros(4)})
    other = tmp_path / "other.eqx"
    other.write_bytes(b"neuralde checkpoint v1\n" + bytes(40))
    with pytest.raises(ValueError, match="format v1, which this version"):
        _checkpoint.load(other, like)
    other.write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(ValueError, match="is not a neuralde checkpoint"):
        _checkpoint.load(other, like)


def test_a_write_removes_the_temporaries_of_killed_writers(tmp_path, monkeypatch):
    path, like = saved_checkpoint(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = _io.socket.gethostname()
    stale = tmp_path / f".ckpt.eqx.{host}.{dead.pid}.0123abcd.tmp"
    live = tmp_path / f".ckpt.eqx.{host}.{os.getpid()}.4567abcd.tmp"
    elsewhere = tmp_path / f".ckpt.eqx.another-host.{dead.pid}.89abcdef.tmp"
    for tmp in (stale, live, elsewhere):
        tmp.write_bytes(bytes(100))
    synced = []
    monkeypatch.setattr(_io, "_sync_directory", synced.append)
    _checkpoint.save(path, {"w": jnp.arange(4.0), "b": jnp.ones(2)}, {"step": 4})
    # A writer still running, or on another host, may still rename its file.
    assert not stale.exists() and live.exists() and elsewhere.exists()
    # Both files' renames were made durable by syncing their directory.
    assert synced == [tmp_path, tmp_path]
    assert _checkpoint.load(path, like)[1] == {"step": 4}


def test_an_unwritable_checkpoint_is_refused_before_training(getkey, tmp_path):
    x, y = regression(getkey())
    model = eqx.nn.Linear(3, 1, key=getkey())
    calls = []

    def loss(m, x, y):
        calls.append(None)
        return mse(m, x, y)

    (tmp_path / "a_file").write_text("")
    kwargs = dict(key=getkey(), steps=2, batch_size=8, progress=False)
    with pytest.raises(PermissionError, match="Cannot write the checkpoint"):
        nde.train.fit(
            model, loss, (x, y), optax.sgd(0.1),
            checkpoint=tmp_path / "a_file" / "ckpt.eqx", **kwargs,
        )  # fmt: skip
    with pytest.raises(IsADirectoryError, match="is a directory"):
        nde.train.fit(
            model, loss, (x, y), optax.sgd(0.1), checkpoint=tmp_path, **kwargs
        )
    assert calls == []


def test_a_resume_with_another_key_or_data_is_refused(getkey, tmp_path):
    x, y = regression(getkey())
    model = eqx.nn.Linear(3, 1, key=getkey())
    key, path = getkey(), tmp_path / "c.eqx"

    def fit(**kw):
        kw = {"key": key, "data": (x, y), **kw}
        return nde.train.fit(
            model, mse, kw.pop("data"), optax.sgd(0.1), steps=4, batch_size=8,
            progress=False, **kw,
        )  # fmt: skip

    fit(checkpoint=path)
    with pytest.raises(ValueError, match="another PRNG `key`"):
        fit(resume=path, key=getkey())
    with pytest.raises(ValueError, match="other training data"):
        fit(resume=path, data=(x.at[0, 0].add(1.0), y))
    fit(resume=path)


def test_a_second_fit_compiles_nothing(getkey):
    x, y = regression(getkey())
    opt = optax.adam(1e-2)
    kwargs = dict(steps=8, batch_size=16, eval_data=(x, y), progress=False)
    seen = []
    _, first = nde.train.fit(
        eqx.nn.MLP(3, 1, 8, 2, key=getkey()), mse, (x, y), opt, key=getkey(),
        callback=lambda h: seen.append(list(h["step"])), **kwargs,
    )  # fmt: skip
    assert first["traces"] == 1
    assert seen == [[4], [4, 8]]
    # Another initialisation, key and data of the same shapes: nothing is traced.
    x2, y2 = regression(getkey())
    _, second = nde.train.fit(
        eqx.nn.MLP(3, 1, 8, 2, key=getkey()), mse, (x2, y2), opt, key=getkey(),
        **kwargs,
    )  # fmt: skip
    assert second["traces"] == 0
    # Another batch size is another shape: one new trace.
    _, third = nde.train.fit(
        eqx.nn.MLP(3, 1, 8, 2, key=getkey()), mse, (x, y), opt, key=getkey(),
        **{**kwargs, "batch_size": 8},
    )  # fmt: skip
    assert third["traces"] == 1


def test_fit_needs_a_key(getkey):
    x, y = regression(getkey())
    model = eqx.nn.Linear(3, 1, key=getkey())
    for key in (None, 0, jnp.zeros(3)):
        with pytest.raises(TypeError, match="`key` must be a JAX PRNG key"):
            nde.train.fit(model, mse, (x, y), optax.sgd(0.1), key=key, steps=1)


SCRIPT = """
import sys, time
import jax
jax.config.update("jax_enable_x64", True)
import equinox as eqx, jax.numpy as jnp, jax.random as jr, numpy as np, optax
import neuralde as nde

mode, path = sys.argv[1], sys.argv[2]
x = jr.normal(jr.PRNGKey(0), (96, 3))
y = jnp.sin(x @ jnp.array([1.0, -2.0, 0.5]))[:, None]
model = eqx.nn.MLP(3, 1, 16, 2, key=jr.PRNGKey(1))

def loss(m, x, y):
    if mode == "slow":
        jax.debug.callback(lambda: time.sleep(0.05))
    return jnp.mean((jax.vmap(m)(x) - y) ** 2)

kwargs = dict(key=jr.PRNGKey(2), steps=60, batch_size=16, checkpoint_every=3,
              eval_every=6, eval_data=(x, y), progress=False)
if mode == "resume":
    kwargs["resume"] = path
model, history = nde.train.fit(model, loss, (x, y), optax.adam(1e-2),
                               checkpoint=path, **kwargs)
np.save(path + ".params.npy", np.concatenate(
    [np.ravel(a) for a in jax.tree.leaves(eqx.filter(model, eqx.is_array))]))
"""


def run(script, *args, **kwargs):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, str(script), *args], env=env, **kwargs)


def test_killed_run_resumes_bit_identically(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    full, part = str(tmp_path / "full.eqx"), str(tmp_path / "part.eqx")
    reference = run(script, "fast", full)
    killed = run(script, "slow", part)
    # Kill the slow run once it has checkpointed past step 9 (of 60).
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        meta = tmp_path / "part.eqx.json"
        if meta.exists() and saved_step(meta) >= 9:
            break
        assert killed.poll() is None, "the run finished before it could be killed"
        time.sleep(0.05)
    killed.kill()
    killed.wait()
    saved = saved_step(tmp_path / "part.eqx.json")
    assert 9 <= saved < 60
    assert reference.wait() == 0
    resumed = run(script, "resume", part)
    assert resumed.wait() == 0
    a = np.load(full + ".params.npy")
    b = np.load(part + ".params.npy")
    assert a.dtype == np.float64 and np.array_equal(a, b)


def saved_step(path):
    return json.loads(path.read_text())["meta"]["step"]


def test_data_parallel_matches_one_device(tmp_path):
    script = textwrap.dedent(
        """
        import jax
        jax.config.update("jax_enable_x64", True)
        import equinox as eqx, jax.numpy as jnp, jax.random as jr, numpy as np, optax
        import neuralde as nde

        assert len(jax.devices()) == 4
        x = jr.normal(jr.PRNGKey(0), (128, 3))
        y = jnp.sin(x @ jnp.array([1.0, -2.0, 0.5]))[:, None]
        model = eqx.nn.MLP(3, 1, 16, 2, key=jr.PRNGKey(1))
        loss = lambda m, x, y: jnp.mean((jax.vmap(m)(x) - y) ** 2)
        kwargs = dict(key=jr.PRNGKey(2), steps=40, batch_size=32, eval_every=4,
                      eval_data=(x, y), progress=False)
        _, one = nde.train.fit(model, loss, (x, y), optax.adam(1e-2), **kwargs)
        _, four = nde.train.fit(model, loss, (x, y), optax.adam(1e-2),
                                devices=jax.devices(), **kwargs)
        assert four["traces"] == 1
        np.testing.assert_allclose(four["train_loss"], one["train_loss"], rtol=1e-12)
        np.testing.assert_allclose(four["eval_loss"], one["eval_loss"], rtol=1e-12)
        try:
            nde.train.fit(model, loss, (x, y), optax.adam(1e-2), devices=jax.devices(),
                          **{**kwargs, "batch_size": 30})
        except ValueError as e:
            assert "multiple of the number of devices" in str(e)
        else:
            raise AssertionError("batch_size=30 on 4 devices was accepted")
        print("ok")
        """
    )
    path = tmp_path / "parallel.py"
    path.write_text(script)
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
    }
    out = subprocess.run(
        [sys.executable, str(path)], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


def test_bad_input(getkey, tmp_path):
    x, y = regression(getkey())
    model = eqx.nn.Linear(3, 1, key=getkey())
    fit = lambda data, **kw: nde.train.fit(  # noqa: E731
        model, mse, data, kw.pop("opt", optax.sgd(0.1)), key=getkey(),
        progress=False, **{"steps": 2, "batch_size": 8, **kw},
    )  # fmt: skip
    with pytest.raises(ValueError, match="same leading axis"):
        fit((x, y[:10]))
    with pytest.raises(ValueError, match="empty"):
        fit((x[:0], y[:0]))
    with pytest.raises(ValueError, match="exactly one of"):
        fit((x, y), epochs=2)
    with pytest.raises(ValueError, match="larger than the 64"):
        fit((x, y), batch_size=65)
    with pytest.raises(TypeError, match="optax"):
        fit((x, y), opt=lambda g: g)
    with pytest.raises(ValueError, match="monitor"):
        fit((x, y), eval_data=(x, y), monitor="accuracy")
    with pytest.raises(ValueError, match="needs `eval_data`"):
        fit((x, y), patience=3)
    path = tmp_path / "c.eqx"
    fit((x, y), checkpoint=path)
    with pytest.raises(ValueError, match="batch_size=8, but this run has batch_size=4"):
        fit((x, y), resume=path, batch_size=4)
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        fit((x, y), resume=tmp_path / "missing.eqx")
    nan = x.at[3, 1].set(jnp.nan)
    with pytest.raises(Exception, match="not finite"):
        fit((nan, y), batch_size=64)


def test_fit_takes_a_dataset(getkey):
    # A `neuralde.data.Dataset` trains on its training pair and evaluates on its
    # test pair; the logistic regression of the two moons beats chance clearly.
    data = nde.data.moons(n_train=256, n_test=128, seed=0, dtype=np.float64)
    model = eqx.nn.Linear(2, 2, key=getkey())

    def loss(m, x, y):
        return jnp.mean(
            optax.softmax_cross_entropy_with_integer_labels(jax.vmap(m)(x), y)
        )

    def accuracy(m, x, y):
        return jnp.mean(jax.vmap(m)(x).argmax(-1) == y)

    _, history = nde.train.fit(
        model, loss, data, optax.adam(0.05), key=getkey(), epochs=20, batch_size=32,
        metrics={"accuracy": accuracy}, progress=False,
    )  # fmt: skip
    assert history["eval_accuracy"][-1] > 0.8
    assert history["eval_loss"][-1] < history["eval_loss"][0]
    assert len(history["eval_loss"]) == 20


def test_loss_with_a_key_gets_a_fresh_one_each_step(getkey):
    # Noise injected in the loss: the keys are the documented ones, one per step.
    x, y = regression(getkey(), n=32)
    model = eqx.nn.Linear(3, 1, key=getkey())
    seen = []

    def noisy(m, x, y, *, key):
        jax.debug.callback(lambda k: seen.append(np.asarray(k)), jr.key_data(key))
        return mse(m, x + 0.1 * jr.normal(key, x.shape), y)

    key = jr.key(7)
    nde.train.fit(
        model, noisy, (x, y), optax.sgd(0.1), key=key, steps=3, batch_size=16,
        progress=False,
    )  # fmt: skip
    _, noise_key = jr.split(key)
    expected = [jr.key_data(jr.fold_in(jr.fold_in(noise_key, s), 0)) for s in range(3)]
    assert len(seen) == 3
    assert all(np.array_equal(a, b) for a, b in zip(seen, expected))


MANY_HOSTS = """
import sys
import jax
jax.config.update("jax_enable_x64", True)
mode, out = sys.argv[1], sys.argv[2]
if mode == "many":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        f"localhost:{sys.argv[4]}", num_processes=2, process_id=int(sys.argv[3])
    )
import equinox as eqx, jax.numpy as jnp, jax.random as jr, numpy as np, optax
import neuralde as nde

assert len(jax.devices()) == 4
assert len(jax.local_devices()) == (2 if mode == "many" else 4)
x = jr.normal(jr.PRNGKey(0), (128, 3))
y = jnp.sin(x @ jnp.array([1.0, -2.0, 0.5]))[:, None]
model = eqx.nn.MLP(3, 1, 16, 2, key=jr.PRNGKey(1))
loss = lambda m, x, y: jnp.mean((jax.vmap(m)(x) - y) ** 2)
model, history = nde.train.fit(
    model, loss, (x, y), optax.adam(1e-2), key=jr.PRNGKey(2), steps=30,
    batch_size=32, eval_every=10, eval_data=(x, y), devices=jax.devices(),
    progress=False,
)
leaves = [
    a if a.is_fully_addressable else a.addressable_data(0)
    for a in jax.tree.leaves(eqx.filter(model, eqx.is_array))
]
np.save(out, np.concatenate([np.ravel(np.asarray(a)) for a in leaves]))
print("ok")
"""


def test_two_processes_train_the_model_of_one(tmp_path):
    """`jax.distributed` as the docs promise: 2 processes x 2 CPU devices, with gloo
    collectives on localhost, train the model of 1 process x 4 devices."""
    script = tmp_path / "hosts.py"
    script.write_text(MANY_HOSTS)
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = str(s.getsockname()[1])

    def start(devices, *args):
        env = {
            **os.environ,
            "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        }
        return subprocess.Popen(
            [sys.executable, str(script), *args], env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip

    one = start(4, "one", str(tmp_path / "one.npy"))
    hosts = [
        start(2, "many", str(tmp_path / f"host{i}.npy"), str(i), port) for i in (0, 1)
    ]
    for p in (one, *hosts):
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0 and out.strip().endswith("ok"), out[-3000:]
    reference = np.load(tmp_path / "one.npy")
    for i in (0, 1):
        np.testing.assert_allclose(
            np.load(tmp_path / f"host{i}.npy"), reference, rtol=0, atol=1e-12
        )
