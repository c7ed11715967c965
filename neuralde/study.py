"""The stability study: train several architectures at several depths on one
problem, measure them, and write a report."""

import functools
import importlib.metadata
import re
import time
import zlib
from collections.abc import Mapping, Sequence

import equinox as eqx
import jax
import jax.random as jr
import numpy as np
import optax
from tqdm.auto import tqdm

from ._io import jsonable, write_json
from ._study._experiments import do_vs_od, example_2d
from ._study._measure import loss_fn, measure
from ._study._models import architecture_name, ARCHITECTURES, Classifier
from ._study._problems import make_problem, problem_name
from ._study._report import prepare_output, write_report
from .train import fit


DEPTHS = (4, 16, 64, 256)
EPOCHS = 60
SEEDS = 3
DO_OD_STEPS = (4, 8, 16, 32, 64, 128, 256)
# --quick: two architectures, two depths, two epochs, two step counts.
QUICK = dict(
    architectures=("MLP", "Hamiltonian"), depths=(4, 16), epochs=2, do_od=(4, 16)
)
SETTINGS = dict(
    dim=4,
    width=8,
    train=1024,
    test=1024,
    batch_size=64,
    noise=0.05,
    points=32,
    times=5,
    grid=9,
)


def study(
    *,
    problem: str = "ellipses",
    architectures: Sequence[str] | None = None,
    depths: Sequence[int] | None = None,
    steps: int | None = None,
    epochs: int | None = None,
    lr: float | Mapping[str, float] = 0.02,
    t1: float | Mapping[str, float] | None = None,
    seed: int = 0,
    seeds: int | None = None,
    out: str = "study-results",
    force: bool = False,
    quick: bool = False,
    progress: bool = True,
) -> dict:
    """Train and measure several architectures at several depths on a synthetic 2-D
    classification problem, and write a report.

    Each architecture is a field and a solver: `MLP` (explicit Euler: the plain
    ResNet), `Antisymmetric` (explicit Euler), `Hamiltonian` (symplectic Euler, both
    streams lifted from the input), `Hyperbolic` (leapfrog, zero initial velocity)
    and `Parabolic` (explicit Euler), over $[0, 4]$ by default (`Parabolic`:
    $[0, 2]$). The model is a learned linear lift of the 2-D input to 4 channels,
    the network, and a linear read-out, trained with Adam in float32. For every
    (architecture, depth) the study measures train and test accuracy, test accuracy
    under input noise, `nde.stability.flow_sensitivity`, the profile of
    `nde.stability.gradient_norms` over depth, a summary of the Jacobian spectrum
    and the wall time. It also runs
    the 2-D example of three residual networks with fixed weights (rotation,
    contraction, expansion), and compares the continuous adjoint gradient with the
    exact gradient of the discrete network as the number of RK4 steps grows.

    **Arguments:** (all keyword only)

    - `problem`: `"ellipses"` (concentric elliptic bands; default) or
        `"swiss_roll"`.
    - `architectures`: names among `MLP`, `Antisymmetric`, `Hamiltonian`,
        `Hyperbolic`, `Parabolic` (case ignored). Default: all five.
    - `depths`: numbers of layers. Default `(4, 16, 64, 256)`.
    - `steps`: solver steps of every network, a multiple of each depth so that steps
        meet the layer boundaries. Default: one step per layer, so that each network
        is the discrete residual network.
    - `epochs`: passes over the 1024 training points. Default 60.
    - `lr`: Adam's learning rate, or a mapping from architecture name to learning
        rate (the others take 0.02).
    - `t1`: the final time of every network, or a mapping from architecture name to
        final time (the others keep theirs). Default 4.0, and 2.0 for `Parabolic`, whose
        contracting flow over $[0, 4]$ often collapsed every point to one state.
    - `seed`: seeds the data, the initialisation and the minibatches.
    - `seeds`: how many times to train each (architecture, depth), with the
        initialisations and minibatch orders of `seeds` keys (the data stay those
        of `seed`). The report gives the mean and standard deviation over them.
        Default 3 (`quick`: 1).
    - `out`: the output directory. It receives `report.md`, `results.json` (also
        rewritten after every run, so that an interrupted study keeps what it
        measured) and the figures `accuracy.png`, `gradient_norms.png`,
        `spectra.png`, `trajectories.png`, `do_vs_od.png`. Each file is written to
        a temporary file and renamed into place.
    - `force`: write into `out` even if it exists and is not empty.
    - `quick`: a smoke run: `MLP` and `Hamiltonian` at depths 4 and 16, 2 epochs,
        the adjoint comparison at 4 and 16 steps. Arguments given explicitly win.
    - `progress`: show a progress bar (tqdm, on stderr).

    **Returns:** the results, as written to `results.json`.

    A run whose loss becomes NaN, or whose state becomes non-finite, is reported as
    diverged and the study goes on. Unknown names raise a `ValueError` that lists
    the valid ones; a non-empty `out` without `force` raises a `FileExistsError`.
    """
    start = time.perf_counter()
    config = configure(
        problem=problem,
        architectures=architectures,
        depths=depths,
        steps=steps,
        epochs=epochs,
        lr=lr,
        t1=t1,
        seed=seed,
        seeds=seeds,
        quick=quick,
    )
    out = prepare_output(out, force)
    archs, depths, epochs = config["architectures"], config["depths"], config["epochs"]
    t1s, lrs, do_od, s = config["t1"], config["lr"], config["do_od_steps"], SETTINGS
    data = make_problem(config["problem"], train=s["train"], test=s["test"], seed=seed)
    results = dict(
        neuralde=importlib.metadata.version("neuralde"),
        config=config,
        architectures={
            a: dict(
                solver=ARCHITECTURES[a].solver, t1=t1s[a], about=ARCHITECTURES[a].about
            )
            for a in archs
        },
        classes=data.classes,
        runs=[],
        complete=False,
    )
    key = jr.PRNGKey(seed)
    eigenvalues = {}
    # The bar counts runs, and each side experiment as one: a run's time is mostly
    # compiling and measuring (2-7 s each on two CPU cores, from depth 4 to 256), so
    # equal weights give an honest estimate of the time left from the first run on.
    runs = [(a, d, i) for a in archs for d in depths for i in range(config["seeds"])]
    total = len(runs) + 2
    bar_format = "{l_bar}{bar}| {n_fmt}/{total_fmt} runs {elapsed}<{remaining}{postfix}"
    with tqdm(total=total, disable=not progress, bar_format=bar_format) as bar:
        for a, depth, i in runs:
            bar.set_description(f"{a} depth {depth} seed {i + 1}/{config['seeds']}")
            # A run's key depends on its architecture, depth and seed index only,
            # not on the other runs of the study.
            run_key = jr.fold_in(key, zlib.crc32(a.encode()))
            run_key = jr.fold_in(jr.fold_in(run_key, depth), i)
            record, eigs = _run(
                a,
                depth,
                config["steps"] or depth,
                t1s[a],
                lrs[a],
                epochs,
                data,
                run_key,
                bar,
            )
            record["seed"] = i
            bar.update(1)
            results["runs"].append(record)
            eigenvalues.setdefault((a, depth), []).append(eigs)
            write_json(out / "results.json", results)
        bar.set_postfix_str("")
        # The side experiments fold in 1000 and 1001 (the runs, a CRC-32 of a name).
        bar.set_description("2-D example")
        example = example_2d(grid=s["grid"], key=jr.fold_in(key, 1000))
        bar.update(1)
        bar.set_description("DO vs OD")
        dood = do_vs_od(do_od, key=jr.fold_in(key, 1001))
        bar.update(1)
    results["example_2d"] = {
        k: {n: v for n, v in e.items() if n != "trajectories"}
        for k, e in example.items()
    }
    results["do_vs_od"] = dood
    results["wall_time"] = time.perf_counter() - start
    results["complete"] = True
    write_report(out, results, eigenvalues, example)
    return jsonable(results)


def configure(
    *, problem, architectures, depths, steps, epochs, lr, t1, seed, quick, seeds=None
) -> dict:
    """The validated settings of a study (see `study`), with the defaults and the
    `quick` choices filled in. Raises `ValueError` for bad arguments; does no work."""
    problem = problem_name(problem)
    if architectures is None:
        architectures = QUICK["architectures"] if quick else tuple(ARCHITECTURES)
    if isinstance(architectures, str):
        architectures = (architectures,)
    archs = list(dict.fromkeys(architecture_name(a) for a in architectures))
    if not archs:
        raise ValueError("`architectures` is empty.")
    if depths is None:
        depths = QUICK["depths"] if quick else DEPTHS
    depths = _ints(depths)
    if epochs is None:
        epochs = QUICK["epochs"] if quick else EPOCHS
    _check_int(epochs, "epochs")
    _check_int(seed, "seed", minimum=0)
    if seeds is None:
        seeds = 1 if quick else SEEDS
    _check_int(seeds, "seeds")
    if steps is not None:
        _check_int(steps, "steps")
        if any(steps % d for d in depths):
            raise ValueError(
                f"`steps` must be a multiple of every depth, so that steps meet the "
                f"layer boundaries; got steps={steps} for depths {depths}."
            )
    lrs = _per_architecture(lr, "lr", 0.02, archs)
    t1s = _per_architecture(t1, "t1", None, archs)
    t1s = {a: ARCHITECTURES[a].t1 if t1s[a] is None else t1s[a] for a in archs}
    return dict(
        problem=problem,
        architectures=archs,
        depths=depths,
        steps=steps,
        epochs=epochs,
        lr=lrs,
        t1=t1s,
        seed=seed,
        seeds=seeds,
        quick=quick,
        do_od_steps=list(QUICK["do_od"] if quick else DO_OD_STEPS),
        **SETTINGS,
    )


def _run(name, depth, steps, t1, lr, epochs, data, key, bar):
    """Train and measure one network. Returns its record and its eigenvalues."""
    start = time.perf_counter()
    mkey, tkey, skey = jr.split(key, 3)
    s = SETTINGS
    model = Classifier(
        ARCHITECTURES[name],
        dim=s["dim"],
        width=s["width"],
        layers=depth,
        steps=steps,
        t1=t1,
        classes=data.classes,
        key=mkey,
    )
    record = dict(
        architecture=name, depth=depth, steps=steps, solver=model.solver, t1=t1, lr=lr
    )

    history = []  # filled as training goes, so that it survives an error
    per_epoch = data.x_train.shape[0] // s["batch_size"]

    def on_epoch(h):
        history[:] = h["train_loss"]
        bar.set_postfix_str(f"epoch {len(history)}/{epochs}, loss {history[-1]:.3g}")

    diverged, message, eigenvalues = None, None, None
    try:
        model, _ = fit(
            model,
            loss_fn,
            (data.x_train, data.y_train),
            _optimiser(lr, epochs * per_epoch),
            key=tkey,
            epochs=epochs,
            batch_size=s["batch_size"],
            progress=False,
            callback=on_epoch,
        )
    except (eqx.EquinoxRuntimeError, jax.errors.JaxRuntimeError) as e:
        message = _nonfinite(e)
        diverged = len(history) + 1
    train_time = time.perf_counter() - start
    if diverged is None:
        try:
            m = measure(
                model,
                data.x_train,
                data.y_train,
                data.x_test,
                data.y_test,
                noise=s["noise"],
                points=s["points"],
                times=s["times"],
                key=skey,
            )
            m = jax.device_get(m)
        except (eqx.EquinoxRuntimeError, jax.errors.JaxRuntimeError) as e:
            message = f"while measuring the trained network: {_nonfinite(e)}"
            diverged = epochs
    record.update(
        status="ok" if diverged is None else "diverged",
        diverged_at=diverged,
        message=message,
        loss=history,
        train_time=train_time,
    )
    if diverged is None:
        g = m["gradient_norms"]
        eigenvalues = m["eigenvalues"]
        record.update(
            train_accuracy=float(m["train_accuracy"]),
            test_accuracy=float(m["test_accuracy"]),
            perturbed_accuracy=float(m["perturbed_accuracy"]),
            sigma_max=m["sigma_max"],
            sigma_max_median=float(np.median(m["sigma_max"])),
            lyapunov_median=float(np.median(m["lyapunov"])),
            gradient_norms=g,
            gradient_ratio=float(g[0] / g[-1]),
            spectral_abscissa=float(np.max(eigenvalues.real)),
            spectral_radius=float(np.max(np.abs(eigenvalues))),
            max_amplification=float(np.max(m["amplification"])),
        )
    record["wall_time"] = time.perf_counter() - start
    return record, eigenvalues


@functools.cache
def _optimiser(lr: float, steps: int) -> optax.GradientTransformation:
    """Adam with a cosine-decayed learning rate (to 5% of `lr`) over `steps`: one
    object for each setting, so that `fit` reuses its compiled step."""
    return optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.05))


def _nonfinite(error: Exception) -> str:
    """The message of a non-finite training loss raised by `fit`, or of a non-finite
    state raised by `neuralde.solve`; other errors propagate."""
    found = re.search(
        r"neuralde: the state became non-finite[^\n]*|The training loss is not "
        r"finite",
        str(error),
    )
    if found is None:
        raise error
    return found.group(0)


def _ints(values) -> list[int]:
    values = [values] if isinstance(values, int) else list(values)
    if not values:
        raise ValueError("`depths` is empty.")
    for v in values:
        _check_int(v, "depths")
    return sorted(set(values))


def _check_int(value, name, minimum=1) -> None:
    if not isinstance(value, int | np.integer) or isinstance(value, bool):
        raise ValueError(f"`{name}` must be an integer, got {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be at least {minimum}, got {value!r}.")


def _per_architecture(value, name, default, archs) -> dict:
    """`{architecture: value}` from one value or a mapping by architecture name."""
    if not isinstance(value, Mapping):
        values = {a: value for a in archs}
    else:
        values = {architecture_name(k): v for k, v in value.items()}
        values = {a: values.get(a, default) for a in archs}
    for a, v in values.items():
        if v is not None and not (isinstance(v, int | float) and v > 0):
            raise ValueError(f"`{name}` must be positive, got {v!r} for {a}.")
    return values
