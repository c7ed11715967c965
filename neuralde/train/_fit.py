import collections
import hashlib
import inspect
import os
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, PRNGKeyArray, PyTree
from tqdm.auto import tqdm

from .. import _checkpoint
from .._checks import positive_int
from ..data import Dataset


Metric = Callable[..., Array]


def fit(
    model: eqx.Module,
    loss_fn: Metric,
    data,
    optimizer: optax.GradientTransformation,
    *,
    key: PRNGKeyArray,
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int = 128,
    eval_data=None,
    eval_every: int | None = None,
    metrics: dict[str, Metric] | None = None,
    patience: int | None = None,
    monitor: str = "loss",
    maximize: bool = False,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: str | os.PathLike | None = None,
    devices: Sequence[jax.Device] | None = None,
    progress: bool = True,
    callback: Callable[[dict[str, list]], None] | None = None,
) -> tuple[eqx.Module, dict[str, list]]:
    """Train `model` to minimise `loss_fn` with an optax optimiser.

    Each step draws a mini-batch, computes the loss and its gradient, and applies
    the optimiser update, all in one compiled function. It is compiled once for a
    model structure, loss, optimiser, metrics and data shapes, and reused by every
    later `fit` with the same ones (`history["traces"]` counts the traces of this
    call): pass the same `loss_fn` and `optimizer` objects to train several models,
    seeds or folds, since a new `optax.adam(...)` is a new function to JAX.
    Gradient clipping and learning-rate schedules are optax's: pass e.g.
    `optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))`.

    **Arguments:**

    - `model`: an Equinox module; its floating-point arrays are trained.
    - `loss_fn`: `loss_fn(model, x, y)` for `data = (x, y)` (in general
        `loss_fn(model, *batch)` for a tuple of arrays, `loss_fn(model, batch)` for
        any other PyTree), returning the mean loss over the batch as a scalar.
        Layers act on one example, so batch inside it with `jax.vmap`. A loss with
        a `key` parameter (dropout, noise, stochastic dynamics) gets a fresh key
        each step: `fold_in(fold_in(noise_key, step), 0)`, see `key`.
    - `data`: the training set, a tuple (or PyTree) of arrays sharing their
        leading axis of examples, or a `neuralde.data.Dataset`, whose `train` pair
        is used, and whose `test` pair is the default `eval_data`.
    - `optimizer`: an `optax.GradientTransformation`.
    - `key`: PRNG key, split into `order_key, noise_key = jax.random.split(key)`.
        (Keyword only, as are the rest.)
    - `steps` or `epochs`: how long to train (exactly one of them). An epoch is
        `len(data) // batch_size` steps: each epoch is a fresh permutation of the
        examples, `jax.random.permutation(fold_in(order_key, epoch), n)`, cut into
        consecutive batches; the incomplete last batch is dropped so that every
        step has the same shape.
    - `batch_size`: examples per step.
    - `eval_data`: data to evaluate on, like `data`.
    - `eval_every`: evaluate (and record the history) every this many steps;
        default once per epoch, and always after the last step.
    - `metrics`: `{name: fn}` with `fn` like `loss_fn`, a mean over a batch, e.g.
        `{"accuracy": lambda m, x, y: jnp.mean(jax.vmap(m)(x).argmax(-1) == y)}`.
        The loss is always included, as `"loss"`. Metrics run on the whole
        `eval_data` at once; one with a `key` parameter gets
        `fold_in(fold_in(noise_key, step), 1)`.
    - `patience`: stop early after this many evaluations without improving the
        monitored metric; the returned model is then the best one evaluated.
    - `monitor`, `maximize`: the eval metric that early stopping follows, and
        whether larger is better.
    - `checkpoint`: a file to save to, atomically, every `checkpoint_every` steps
        (default: at every evaluation) and at the end: model, optimiser state, step,
        PRNG key and history.
    - `resume`: a checkpoint file to continue from. The continued run takes exactly
        the steps that the uninterrupted run would have taken, and on CPU ends with
        bit-identical parameters.
    - `devices`: data parallelism. The batch is split over these devices (a
        `jax.sharding.Mesh` with one axis, `"batch"`), parameters and optimiser
        state are replicated, and the same jitted step runs. `batch_size` must be
        a multiple of the number of devices. For many hosts, call
        `jax.distributed.initialize()` first and pass `jax.devices()`.
    - `progress`: show a tqdm progress bar with the loss and throughput.
    - `callback`: called as `callback(history)` after each evaluation, with the
        history so far (e.g. to report progress, or to keep the losses of a run
        that then raises).

    **Returns:** `(model, history)`. `history` maps `"step"`, `"train_loss"` (mean
    since the previous record), `"eval_<metric>"` and `"time_s"` to lists, one entry
    per evaluation, and `"traces"` to the number of times the step was traced.
    """
    if not _is_key(key):
        raise TypeError(
            "`key` must be a JAX PRNG key, e.g. `key=jax.random.key(0)`: it fixes the "
            f"order of the batches (and any noise of the loss); got {key!r}."
        )
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            f"`optimizer` must be an optax.GradientTransformation (e.g. "
            f"`optax.adam(1e-3)`), got {type(optimizer).__name__}."
        )
    if isinstance(data, Dataset):
        if eval_data is None:
            eval_data = data.test
        data = data.train
    n = _num_examples(data, "data")
    positive_int(batch_size, "batch_size")
    if batch_size > n:
        raise ValueError(
            f"`batch_size={batch_size}` is larger than the {n} training examples."
        )
    per_epoch = n // batch_size
    total = _total_steps(steps, epochs, per_epoch)
    eval_every = (
        per_epoch if eval_every is None else positive_int(eval_every, "eval_every")
    )
    if checkpoint_every is not None:
        positive_int(checkpoint_every, "checkpoint_every")
    if patience is not None:
        positive_int(patience, "patience")
        if eval_data is None:
            raise ValueError("Early stopping (`patience=`) needs `eval_data`.")
    metrics = {"loss": loss_fn, **(metrics or {})}
    if eval_data is not None:
        _num_examples(eval_data, "eval_data")
        if monitor not in metrics:
            raise ValueError(
                f"`monitor={monitor!r}` is not one of the metrics {sorted(metrics)}."
            )

    if checkpoint is not None:
        _checkpoint.check(checkpoint)
    place, sharding = _parallel(devices, batch_size)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    data = place(jax.tree.map(jnp.asarray, data))
    eval_data = (
        None if eval_data is None else place(jax.tree.map(jnp.asarray, eval_data))
    )
    # Typed keys are stored as their raw data, which serialises like any array.
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    spec = _Spec(
        static=static,
        loss_fn=loss_fn,
        metrics=metrics,
        optimizer=optimizer,
        batch_size=batch_size,
        per_epoch=per_epoch,
        num_examples=n,
        impl=jr.key_impl(key) if typed else None,
        sharding=sharding,
    )
    traces = _TRACES["train_step"]

    # Everything a resumed run needs to take the same steps as an uninterrupted one.
    state = {
        "params": params,
        "opt_state": optimizer.init(params),
        "key": jr.key_data(key) if typed else key,
        "best": params,
        "loss_sum": jnp.zeros((), jnp.result_type(float)),
    }
    meta = {"step": 0, "since": 0, "best_value": None, "bad": 0, "stopped": False}
    history = {"step": [], "train_loss": [], "time_s": []}
    history.update({f"eval_{name}": [] for name in metrics if eval_data is not None})
    config = {"batch_size": batch_size, "num_examples": n, "total_steps": total}
    if checkpoint is not None or resume is not None:
        # What the run's steps depend on, so that a resume with other ones is refused.
        config["key"] = _fingerprint(state["key"])
        config["data"] = _fingerprint(data)
    if resume is not None:
        state, saved = _checkpoint.load(resume, state)
        _check_resume(resume, saved["config"], config)
        meta, history = saved["meta"], saved["history"]
    state = place(state)

    def save():
        if checkpoint is not None:
            meta_out = {"config": config, "meta": meta, "history": history}
            _checkpoint.save(checkpoint, jax.tree.map(_host_copy, state), meta_out)

    start = time.perf_counter() - (history["time_s"][-1] if history["time_s"] else 0)
    bar = tqdm(total=total, initial=meta["step"], disable=not progress, unit="step")
    order, order_epoch = None, None
    window = (time.perf_counter(), meta["step"])
    while meta["step"] < total and not meta["stopped"]:
        step = meta["step"]
        epoch = step // per_epoch
        if epoch != order_epoch:
            order = _permutation(spec, state["key"], jnp.asarray(epoch))
            order_epoch = epoch
        state["params"], state["opt_state"], state["loss_sum"] = _train_step(
            spec,
            state["params"],
            state["opt_state"],
            state["loss_sum"],
            data,
            order,
            state["key"],
            jnp.asarray(step),
        )
        meta["step"], meta["since"] = step + 1, meta["since"] + 1
        bar.update()
        last = meta["step"] == total
        if meta["step"] % eval_every == 0 or last:
            _record(history, meta, state, start)
            if eval_data is not None:
                values = _evaluate(
                    spec, state["params"], eval_data, state["key"], jnp.asarray(step)
                )
                for name, value in values.items():
                    history[f"eval_{name}"].append(float(value))
                _early_stopping(meta, state, float(values[monitor]), maximize, patience)
            now = time.perf_counter()
            rate = (meta["step"] - window[1]) * batch_size / (now - window[0])
            window = (now, meta["step"])
            bar.set_postfix(loss=f"{history['train_loss'][-1]:.4g}", ex_s=f"{rate:.0f}")
            if callback is not None:
                callback(history)
            if checkpoint_every is None:
                save()
        if checkpoint_every is not None and meta["step"] % checkpoint_every == 0:
            save()
    bar.close()
    save()
    history["traces"] = _TRACES["train_step"] - traces
    params = state["best"] if patience is not None else state["params"]
    return eqx.combine(params, static), history


# How often each compiled function of `fit` was traced, in this process.
_TRACES: collections.Counter = collections.Counter()


class _Spec(NamedTuple):
    """Everything static about a training run. `fit`'s compiled functions take it
    as their first argument: equinox caches them on it, so a second `fit` with the
    same model structure, loss, optimiser, metrics and shapes compiles nothing."""

    static: PyTree
    loss_fn: Metric
    metrics: dict[str, Metric]
    optimizer: optax.GradientTransformation
    batch_size: int
    per_epoch: int
    num_examples: int
    impl: str | None
    sharding: NamedSharding | None


def _keys(spec: _Spec, key_data):
    """The keys of the batch order and of the loss's own randomness."""
    key = key_data if spec.impl is None else jr.wrap_key_data(key_data, impl=spec.impl)
    order_key, noise_key = jr.split(key)
    return order_key, noise_key


def _call(spec: _Spec, fn, params, batch, noise_key, step, stream):
    model = eqx.combine(params, spec.static)
    kwargs = {}
    if _takes_key(fn):
        kwargs["key"] = jr.fold_in(jr.fold_in(noise_key, step), stream)
    if isinstance(batch, tuple):
        return fn(model, *batch, **kwargs)
    return fn(model, batch, **kwargs)


@eqx.filter_jit
def _train_step(spec: _Spec, params, opt_state, loss_sum, data, order, key_data, step):
    _TRACES["train_step"] += 1
    i = step % spec.per_epoch
    idx = jax.lax.dynamic_slice_in_dim(order, i * spec.batch_size, spec.batch_size)
    batch = jax.tree.map(lambda a: a[idx], data)
    if spec.sharding is not None:
        batch = jax.lax.with_sharding_constraint(batch, spec.sharding)
    _, noise_key = _keys(spec, key_data)
    loss, grads = jax.value_and_grad(
        lambda p: _call(spec, spec.loss_fn, p, batch, noise_key, step, 0)
    )(params)
    loss = eqx.error_if(
        loss,
        ~jnp.isfinite(loss),
        "The training loss is not finite. Lower the learning rate, clip the "
        "gradients (optax.clip_by_global_norm), or check the data.",
    )
    updates, opt_state = spec.optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, loss_sum + loss


@eqx.filter_jit
def _evaluate(spec: _Spec, params, batch, key_data, step):
    _, noise_key = _keys(spec, key_data)
    return {
        name: _call(spec, fn, params, batch, noise_key, step, 1)
        for name, fn in spec.metrics.items()
    }


@eqx.filter_jit
def _permutation(spec: _Spec, key_data, epoch):
    order_key, _ = _keys(spec, key_data)
    return jr.permutation(jr.fold_in(order_key, epoch), spec.num_examples)


def _fingerprint(tree: PyTree) -> str:
    """A SHA-256 of a PyTree's structure, dtypes, shapes and values."""
    digest = hashlib.sha256(str(jax.tree.structure(tree)).encode())
    for leaf in jax.tree.leaves(tree):
        leaf = np.asarray(_host_copy(leaf))
        digest.update(f"{leaf.dtype}{leaf.shape}".encode())
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


def _check_resume(path, saved: dict, config: dict) -> None:
    """Refuse to resume a run whose steps would differ from the saved run's."""
    where = f"The checkpoint {str(path)!r} was written by a run with"
    for name in ("batch_size", "num_examples"):
        if saved[name] != config[name]:
            raise ValueError(
                f"{where} {name}={saved[name]}, but this run has {name}="
                f"{config[name]}; resume with the same data and batch size."
            )
    if saved["key"] != config["key"]:
        raise ValueError(
            f"{where} another PRNG `key`, so this run would not take the same "
            "batches. Resume with the key of that run."
        )
    if saved["data"] != config["data"]:
        raise ValueError(
            f"{where} other training data (same size, different values). Resume "
            "with the data of that run."
        )


def _host_copy(x):
    """A NumPy copy of a (replicated) array; on many hosts, of this host's replica."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        x = x.addressable_data(0)
    return np.asarray(x)


def _is_key(key) -> bool:
    """A typed key, or a raw `jax.random.PRNGKey`."""
    if not isinstance(key, jax.Array):
        return False
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key.shape == ()
    return key.dtype == jnp.uint32 and key.shape == (2,)


def _takes_key(fn) -> bool:
    try:
        return "key" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _record(history, meta, state, start):
    history["step"].append(meta["step"])
    history["train_loss"].append(float(state["loss_sum"]) / meta["since"])
    history["time_s"].append(time.perf_counter() - start)
    state["loss_sum"] = jnp.zeros_like(state["loss_sum"])
    meta["since"] = 0


def _early_stopping(meta, state, value, maximize, patience):
    best = meta["best_value"]
    if best is None or (value > best if maximize else value < best):
        meta["best_value"], meta["bad"] = value, 0
        state["best"] = state["params"]
    else:
        meta["bad"] += 1
        meta["stopped"] = patience is not None and meta["bad"] >= patience


def _num_examples(data: PyTree, name: str) -> int:
    leaves = jax.tree.leaves(data)
    if not leaves:
        raise ValueError(f"`{name}` has no arrays.")
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            f"Every array of `{name}` must have the same leading axis of examples; "
            f"got leading sizes {sorted(sizes, key=str)}."
        )
    n = sizes.pop()
    if n == 0:
        raise ValueError(f"`{name}` is empty.")
    return n


def _total_steps(steps, epochs, per_epoch) -> int:
    if (steps is None) == (epochs is None):
        raise ValueError("Pass exactly one of `steps` and `epochs`.")
    if steps is not None:
        return positive_int(steps, "steps")
    return positive_int(epochs, "epochs") * per_epoch


def _parallel(devices, batch_size):
    """`(place, sharding)`: put arrays on the devices (replicated), and the sharding
    of a batch's leading axis over them. Identity and `None` for one device."""
    if devices is None:
        return (lambda tree: tree), None
    devices = list(devices)
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
        raise TypeError("`devices` must be a non-empty list of `jax.Device`s.")
    if batch_size % len(devices):
        raise ValueError(
            f"`batch_size={batch_size}` must be a multiple of the number of devices, "
            f"{len(devices)}, to split the batch evenly."
        )
    mesh = Mesh(np.asarray(devices), ("batch",))
    replicated = NamedSharding(mesh, PartitionSpec())

    def place(tree):
        return jax.device_put(tree, replicated)

    return place, NamedSharding(mesh, PartitionSpec("batch"))
