"""The study's output: the JSON results, the Markdown report and the matplotlib
figures."""

import io
import math
import os
import pathlib

import numpy as np

from .. import _io
from .._io import write_atomic, write_json


FIGURES = (
    "accuracy.png",
    "gradient_norms.png",
    "spectra.png",
    "trajectories.png",
    "do_vs_od.png",
)


def check_output(out: str | os.PathLike, force: bool) -> pathlib.Path:
    return _io.check_output(out, force, what="the study's files")


def prepare_output(out: str | os.PathLike, force: bool) -> pathlib.Path:
    """Check the output directory (`check_output`), and create it."""
    path = check_output(out, force)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _fmt(x, spec=".3f"):
    # `+ 0.0` turns -0.0 into 0.0.
    return "—" if x is None or not math.isfinite(x) else format(x + 0.0, spec)


def runs_table(runs: list[dict]) -> str:
    """The main table of the report, one row per (architecture, depth)."""
    head = (
        "| architecture | depth | steps | train acc | test acc | perturbed acc "
        "| M (median) | ‖∂L/∂y₀‖ / ‖∂L/∂y_L‖ | max Re λ | max \\|R(hλ)\\| "
        "| time (s) | status |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in runs:
        ok = r["status"] == "ok"
        get = (lambda k: r[k]) if ok else (lambda k: None)
        status = "ok" if ok else f"**diverged** (epoch {r['diverged_at']})"
        lines.append(
            f"| {r['architecture']} | {r['depth']} | {r['steps']} "
            f"| {_fmt(get('train_accuracy'))} | {_fmt(get('test_accuracy'))} "
            f"| {_fmt(get('perturbed_accuracy'))} "
            f"| {_fmt(get('sigma_max_median'), '.3g')} "
            f"| {_fmt(get('gradient_ratio'), '.3g')} "
            f"| {_fmt(get('spectral_abscissa'), '.3g')} "
            f"| {_fmt(get('max_amplification'), '.3g')} "
            f"| {r['wall_time']:.1f} | {status} |"
        )
    return "\n".join(lines)


def markdown(results: dict) -> str:
    c = results["config"]
    runs = results["runs"]
    example = results["example_2d"]
    dood = results["do_vs_od"]
    archs = results["architectures"]
    lines = [
        "# neuralde stability study",
        "",
        f"Problem `{c['problem']}`: {c['train']} training and {c['test']} test points "
        f"in 2-D, two classes, lifted by a learned linear map to {c['dim']} "
        f"channels (two streams of {c['dim']} for two-stream fields), classified by "
        "a linear read-out of the network's final state. "
        f"Adam with a cosine-decayed learning rate, {c['epochs']} epochs of "
        f"minibatches of {c['batch_size']}, seed {c['seed']}, float32. "
        f"Total wall time {results['wall_time']:.0f} s"
        f"{' (`--quick`)' if c['quick'] else ''}.",
        "",
        "## Architectures",
        "",
        "| architecture | field and solver | t1 | learning rate |",
        "|---|---|---|---|",
    ]
    for name, a in archs.items():
        lines.append(f"| {name} | {a['about']} | {a['t1']:g} | {c['lr'][name]:g} |")
    lines += [
        "",
        "Depth is the number of layers (piecewise-constant parameters over "
        "`[0, t1]`); each network takes `steps` equal steps (one per layer unless "
        "`steps` is given), of size h = t1 / steps.",
        "",
        "## Results",
        "",
        runs_table(runs),
        "",
        f"- *perturbed acc*: test accuracy with Gaussian noise of standard "
        f"deviation {c['noise']} added to the 2-D inputs.",
        "- *M*: `nde.stability.flow_sensitivity`, the largest singular value of the "
        "Jacobian of the network's flow map (lifted state to final state), median "
        f"over {c['points']} test points. M > 1: the network amplifies some "
        "perturbation of its input.",
        "- *‖∂L/∂y₀‖ / ‖∂L/∂y_L‖*: `nde.stability.gradient_norms` of the "
        "cross-entropy, mean over the same points: the gradient at the input over "
        "the gradient at the output. Far above 1: exploding; far below: vanishing.",
        "- *max Re λ*: the largest real part of the eigenvalues of ∂F/∂y "
        "(`nde.stability.trajectory_spectrum`) along the trajectories of those "
        f"points, at {c['times']} step times. *max |R(hλ)|*: the largest "
        "amplification of one step of the solver on those eigenvalues "
        "(`nde.stability.stability_function`); above 1, the step is not linearly "
        "stable.",
        "- *time*: wall time of training and measuring, JAX compilation included.",
        "- *diverged*: the loss became NaN, or a state non-finite; the run stops "
        "there and the study goes on.",
        *(
            f"    - {r['architecture']}, depth {r['depth']}: {r['message']}"
            for r in runs
            if r["status"] != "ok"
        ),
        "",
        "![test accuracy against depth](accuracy.png)",
        "",
        "![gradient norms over depth](gradient_norms.png)",
        "",
        "![eigenvalues times step](spectra.png)",
        "",
        "## The 2-D example",
        "",
        "Twenty residual layers h ← h + 0.1 tanh(W h), zero bias (an `MLP(2, "
        "layers=20, t1=2.0)` with W in every layer, explicit Euler), from a "
        f"{c['grid']} × {c['grid']} lattice of points in [-1, 1]².",
        "",
        "| W | name | M (median) | M (max) |",
        "|---|---|---|---|",
    ]
    for name, e in example.items():
        w = e["weight"]
        lines.append(
            f"| [[{w[0][0]:g}, {w[0][1]:g}], [{w[1][0]:g}, {w[1][1]:g}]] | {name} "
            f"| {e['sigma_max_median']:.3g} | {e['sigma_max_max']:.3g} |"
        )
    names = list(dood["relative_error"])
    lines += [
        "",
        "![trajectories of the 2-D example](trajectories.png)",
        "",
        "## Discretize-optimize against optimize-discretize",
        "",
        "Relative error ‖g_adjoint − g_discretize‖ / ‖g_discretize‖ of the gradient "
        "of ½‖y(T)‖² with respect to the field's parameters: the continuous "
        '`gradient="adjoint"` against the exact gradient of the discrete network, '
        f"`{dood['solver']}` with the given number of steps over [0, 2], float64 "
        "(Onken & Ruthotto 2020; Gholami et al. 2019). The adjoint re-integrates the "
        "state backwards in time, which amplifies errors where the forward flow "
        "contracts.",
        "",
        "| steps | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for i, n in enumerate(dood["steps"]):
        errs = " | ".join(_fmt(dood["relative_error"][k][i], ".2e") for k in names)
        lines.append(f"| {n} | {errs} |")
    lines += ["", "![DO against OD](do_vs_od.png)", ""]
    return "\n".join(lines)


def Figure(**kwargs):
    # Imported here, so that `import neuralde` does not load matplotlib. A bare
    # `Figure` (no pyplot) keeps no global state and needs no GUI backend.
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _legend(fig, axes, **kwargs) -> None:
    """One legend for all panels, of the labels that any panel drew."""
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(
            entries.values(),
            entries.keys(),
            loc="outside right upper",
            fontsize="small",
            **kwargs,
        )


def _finite(values):
    return [np.nan if v is None else v for v in values]


def accuracy_figure(runs: list[dict], archs: list[str]) -> bytes:
    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    for i, name in enumerate(archs):
        rs = [r for r in runs if r["architecture"] == name]
        depths = [r["depth"] for r in rs]
        color = f"C{i}"
        ax.plot(
            depths,
            _finite([r.get("test_accuracy") for r in rs]),
            "o-",
            c=color,
            label=name,
        )
        ax.plot(
            depths, _finite([r.get("perturbed_accuracy") for r in rs]), "x--", c=color
        )
    ax.set_xscale("log", base=2)
    depths = sorted({r["depth"] for r in runs})
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.minorticks_off()
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("test accuracy (dashed: perturbed inputs)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _png(fig)


def gradient_figure(runs: list[dict], archs: list[str], depths: list[int]) -> bytes:
    fig = Figure(figsize=(3.2 * len(depths), 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(depths), sharey=True))
    for ax, depth in zip(axes, depths):
        for i, name in enumerate(archs):
            for r in runs:
                if r["architecture"] == name and r["depth"] == depth and r["ok"]:
                    g = np.asarray(r["gradient_norms"])
                    ax.plot(np.linspace(0, 1, g.size), g, c=f"C{i}", label=name)
        ax.set_yscale("log")
        ax.set_title(f"depth {depth}")
        ax.set_xlabel("layer / depth (0: input)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("‖∂L/∂y_j‖")
    _legend(fig, axes)
    return _png(fig)


def spectra_figure(runs, eigenvalues, solvers, depths) -> bytes:
    """h λ for every run, one panel per architecture, with the boundary of the
    solver's region of absolute stability."""
    fig = Figure(figsize=(3.3 * len(solvers), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(solvers)))
    for ax, (name, solver) in zip(axes, solvers.items()):
        points = []
        for j, depth in enumerate(depths):
            for r in runs:
                if r["architecture"] == name and r["depth"] == depth and r["ok"]:
                    z = eigenvalues[(name, depth)].ravel() * r["t1"] / r["steps"]
                    ax.scatter(z.real, z.imag, s=4, c=f"C{j}", label=f"depth {depth}")
                    points.append(z)
        # The region |R(z)| <= 1: Euler's disc |1 + z| <= 1; for symplectic Euler and
        # leapfrog the segment [-2i, 2i] (`nde.stability.stability_function`).
        if solver == "euler":
            theta = np.linspace(0, 2 * np.pi, 200)
            ax.plot(np.cos(theta) - 1, np.sin(theta), "k-", lw=0.8)
            points.append(np.array([-2.1 + 1.1j, 0.1 - 1.1j]))
        else:  # symplectic_euler, leapfrog
            ax.plot([0, 0], [-2, 2], "k-", lw=2)
            points.append(np.array([-1 + 2.2j, 1 - 2.2j]))
        z = np.concatenate(points)
        x0, x1, y = z.real.min(), z.real.max(), np.abs(z.imag).max()
        ax.set_xlim(x0 - 0.05 * (x1 - x0), x1 + 0.05 * (x1 - x0))
        ax.set_ylim(-1.05 * y, 1.05 * y)
        ax.set_title(f"{name} ({solver})", fontsize="medium")
        ax.set_xlabel("Re hλ")
        ax.axhline(0, c="0.8", lw=0.5)
        ax.axvline(0, c="0.8", lw=0.5)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Im hλ")
    _legend(fig, axes, markerscale=3)
    fig.suptitle("eigenvalues of ∂F/∂y times the step h; black: |R(hλ)| ≤ 1")
    return _png(fig)


def trajectories_figure(example: dict) -> bytes:
    fig = Figure(figsize=(11, 4), layout="constrained")
    axes = fig.subplots(1, len(example))
    for ax, (name, e) in zip(axes, example.items()):
        paths = e["trajectories"]
        for p in paths:
            ax.plot(p[:, 0], p[:, 1], c="C0", lw=0.7, alpha=0.7)
        ax.plot(paths[:, 0, 0], paths[:, 0, 1], "k.", ms=3)
        ax.plot(paths[:, -1, 0], paths[:, -1, 1], "o", c="C3", ms=3)
        ax.set_title(
            f"{name}: median M = {e['sigma_max_median']:.3g}", fontsize="medium"
        )
        ax.set_aspect("equal", "datalim")
        ax.grid(alpha=0.3)
    fig.suptitle("h ← h + 0.1 tanh(W h), 20 layers (black: start, red: end)")
    return _png(fig)


def do_od_figure(dood: dict) -> bytes:
    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    steps = np.asarray(dood["steps"], float)
    for name, errs in dood["relative_error"].items():
        ax.loglog(steps, _finite(errs), "o-", label=name)
    ax.set_xlabel(f"steps ({dood['solver']})")
    ax.set_ylabel("relative error of the adjoint gradient")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return _png(fig)


def write_report(out: pathlib.Path, results: dict, eigenvalues, example) -> None:
    """Write the figures, `results.json` and `report.md` (last) into `out`."""
    archs = list(results["architectures"])
    solvers = {a: results["architectures"][a]["solver"] for a in archs}
    depths = results["config"]["depths"]
    runs = [dict(r, ok=r["status"] == "ok") for r in results["runs"]]
    figures = {
        "accuracy.png": accuracy_figure(runs, archs),
        "gradient_norms.png": gradient_figure(runs, archs, depths),
        "spectra.png": spectra_figure(runs, eigenvalues, solvers, depths),
        "trajectories.png": trajectories_figure(example),
        "do_vs_od.png": do_od_figure(results["do_vs_od"]),
    }
    for name, data in figures.items():
        write_atomic(out / name, data)
    write_json(out / "results.json", results)
    write_atomic(out / "report.md", markdown(results).encode())
