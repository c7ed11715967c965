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


# The columns of the results table: (key of a run's record, header, format).
_COLUMNS = (
    ("train_accuracy", "train acc", ".3f"),
    ("test_accuracy", "test acc", ".3f"),
    ("perturbed_accuracy", "perturbed acc", ".3f"),
    ("sigma_max_median", "M (median)", ".3g"),
    ("gradient_ratio", "‖∂L/∂y₀‖ / ‖∂L/∂y_L‖", ".3g"),
    ("spectral_abscissa", "max Re λ", ".3g"),
    ("max_amplification", "max \\|R(hλ)\\|", ".3g"),
)


def groups(runs: list[dict]) -> dict[tuple[str, int], list[dict]]:
    """The runs of each (architecture, depth), one per seed, in the study's order."""
    out = {}
    for r in runs:
        out.setdefault((r["architecture"], r["depth"]), []).append(r)
    return out


def statistic(rs: list[dict], key: str) -> tuple[float, float, int]:
    """Mean, standard deviation (ddof 1; 0 for one run) and number of the finished
    runs' values of `key`."""
    values = [r[key] for r in rs if r["status"] == "ok" and r.get(key) is not None]
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return math.nan, math.nan, 0
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return float(np.mean(values)), std, len(values)


def _mean_std(rs, key, spec) -> str:
    mean, std, n = statistic(rs, key)
    if n == 0:
        return "—"
    return _fmt(mean, spec) + (f" ± {_fmt(std, '.2g')}" if n > 1 else "")


def _trained(rs: list[dict]) -> str:
    diverged = [r for r in rs if r["status"] != "ok"]
    if not diverged:
        return f"{len(rs)}/{len(rs)}"
    epochs = ", ".join(str(r["diverged_at"]) for r in diverged)
    return (
        f"{len(rs) - len(diverged)}/{len(rs)}, **diverged** "
        f"(epoch{'s' if len(diverged) > 1 else ''} {epochs})"
    )


def runs_table(runs: list[dict]) -> str:
    """The main table of the report, one row per (architecture, depth): the mean ±
    standard deviation over the seeds that finished."""
    head = (
        "| architecture | depth | steps | "
        + " | ".join(h for _, h, _ in _COLUMNS)
        + " | time (s) | trained |"
    )
    lines = [head, "|" + "---|" * (len(_COLUMNS) + 5)]
    for (name, depth), rs in groups(runs).items():
        cells = " | ".join(_mean_std(rs, k, spec) for k, _, spec in _COLUMNS)
        time_s = np.mean([r["wall_time"] for r in rs])
        lines.append(
            f"| {name} | {depth} | {rs[0]['steps']} | {cells} | {time_s:.1f} "
            f"| {_trained(rs)} |"
        )
    return "\n".join(lines)


def summary(results: dict) -> list[str]:
    """What the results table shows, in sentences computed from it."""
    runs, classes = results["runs"], results["classes"]
    seeds = results["config"]["seeds"]
    by_arch = {}
    for (name, depth), rs in groups(runs).items():
        by_arch.setdefault(name, []).append((depth, rs))
    lines = []
    for name, rows in by_arch.items():
        accs = [(d, *statistic(rs, "test_accuracy")) for d, rs in rows]
        finished = [(d, m, s) for d, m, s, n in accs if n]
        failed = sum(r["status"] != "ok" for _, rs in rows for r in rs)
        total = sum(len(rs) for _, rs in rows)
        if not finished:
            lines.append(f"- **{name}** diverged in every run.")
            continue
        best = max(finished, key=lambda t: t[1])
        worst = min(finished, key=lambda t: t[1])
        text = (
            f"- **{name}**: test accuracy from {worst[1]:.3f} (depth {worst[0]}) to "
            f"{best[1]:.3f} (depth {best[0]})"
        )
        if seeds > 1:
            spread = max(s for _, _, s in finished)
            gap = best[1] - worst[1]
            told = "larger" if gap > 2 * spread else "not larger"
            text += (
                f"; that gap, {gap:.3f}, is {told} than twice the largest standard "
                f"deviation over seeds ({spread:.2g})"
            )
        if best[1] < 1 / classes + 0.05:
            text += "; at chance level throughout"
        ms = [(d, statistic(rs, "sigma_max_median")[0]) for d, rs in rows]
        grows = [d for d, m in ms if math.isfinite(m) and m > 1]
        text += (
            f". The flow amplifies perturbations (M > 1) at depth "
            f"{', '.join(map(str, grows))}"
            if grows
            else ". M ≤ 1 at every depth: perturbations of the input do not grow"
        )
        unstable = [
            d for d, rs in rows if statistic(rs, "max_amplification")[0] > 1 + 1e-6
        ]
        if unstable:
            text += (
                f"; its steps leave the solver's stability region (max |R(hλ)| > 1) "
                f"at depth {', '.join(map(str, unstable))}"
            )
        if failed:
            text += f"; {failed} of {total} runs diverged"
        lines.append(text + ".")
    return lines


def _dood_sentence(dood: dict) -> str:
    """Which case of the adjoint comparison has the lower error, and how fast the
    errors fall, from the numbers."""
    names = list(dood["relative_error"])
    errs = {k: np.asarray(_finite(v), float) for k, v in dood["relative_error"].items()}
    steps = np.asarray(dood["steps"], float)
    parts = []
    if len(names) == 2:
        a, b = names
        lower = np.where(errs[a] < errs[b], a, b)
        if len(set(lower)) == 1:
            parts.append(f"`{lower[0]}` has the lower error at every step count.")
        else:
            parts.append("Neither case has the lower error at every step count.")
    if len(steps) > 1:
        slopes = {
            k: -np.polyfit(np.log(steps), np.log(np.maximum(e, 1e-300)), 1)[0]
            for k, e in errs.items()
            if np.all(np.isfinite(e))
        }
        parts.append(
            "The errors fall as steps^-p with p ≈ "
            + ", ".join(f"{p:.1f} (`{k}`)" for k, p in slopes.items())
            + ": both gradients converge to the gradient of the continuous model, "
            "so their difference is the discretisation error, of RK4's fourth order."
        )
    return " ".join(parts)


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
        f"minibatches of {c['batch_size']}, float32 (`neuralde.train.fit`). Each "
        f"network is trained {_times(c['seeds'])}, from the keys of seed "
        f"{c['seed']} (the data are the same for all). "
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
        "## Summary",
        "",
        *summary(results),
        "",
        "## Results",
        "",
        runs_table(runs),
        "",
        (
            f"Each entry is the mean ± the standard deviation over the {c['seeds']} "
            "seeds whose training finished; differences within about two standard "
            "deviations cannot be told from the seeds' noise."
            if c["seeds"] > 1
            else "One seed per network: differences between neighbouring entries "
            "may be the seed's noise; run with more `seeds` to tell."
        ),
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
        "- *trained*: in how many seeds training ran to its end with a finite loss "
        "and finite states. It says nothing about stability: a network can train "
        "while its steps lie outside the solver's stability region (max |R(hλ)| > "
        "1). *diverged*: the loss or a state became non-finite in that epoch; the "
        "run stops there and the study goes on.",
        *(
            f"    - {r['architecture']}, depth {r['depth']}, seed {r['seed']}: "
            f"{r['message']}"
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
        "state backwards in time with the solver, so it is not the gradient of the "
        "discrete network that was run. " + _dood_sentence(dood),
        "",
        "| steps | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for i, n in enumerate(dood["steps"]):
        errs = " | ".join(_fmt(dood["relative_error"][k][i], ".2e") for k in names)
        lines.append(f"| {n} | {errs} |")
    lines += ["", "![DO against OD](do_vs_od.png)", ""]
    return "\n".join(lines)


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


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


def accuracy_figure(runs: list[dict], archs: list[str], classes: int) -> bytes:
    """Test accuracy against depth, the mean ± standard deviation over seeds, with
    and without input noise, and the chance level."""
    fig = Figure(figsize=(7.5, 4), layout="constrained")
    ax = fig.subplots()
    table = groups(runs)
    depths = sorted({d for _, d in table})
    for i, name in enumerate(archs):
        ds = [d for d in depths if (name, d) in table]
        for key, style, offset in (
            ("test_accuracy", "o-", -0.03),
            ("perturbed_accuracy", "x--", 0.03),
        ):
            stats = [statistic(table[(name, d)], key) for d in ds]
            ax.errorbar(
                # Side by side, so that the error bars do not hide each other.
                [d * 2 ** (offset * (i - len(archs) / 2)) for d in ds],
                [m for m, _, _ in stats],
                yerr=[sd for _, sd, _ in stats],
                fmt=style,
                c=f"C{i}",
                capsize=2,
                ms=4,
                label=name if key == "test_accuracy" else None,
            )
    ax.axhline(1 / classes, c="0.4", ls=":", lw=1, label=f"chance (1/{classes})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.minorticks_off()
    ax.set_ylim(min(0.45, 1 / classes - 0.05), 1.02)
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("test accuracy")
    ax.set_title(
        "solid: clean inputs; dashed: perturbed inputs; bars: ± 1 std over seeds",
        fontsize="small",
    )
    ax.grid(alpha=0.3)
    fig.legend(loc="outside right upper", fontsize="small")
    return _png(fig)


def gradient_figure(runs: list[dict], archs: list[str], depths: list[int]) -> bytes:
    fig = Figure(figsize=(3.2 * len(depths), 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(depths), sharey=True))
    for ax, depth in zip(axes, depths):
        for i, name in enumerate(archs):
            done = [
                r
                for r in runs
                if r["architecture"] == name and r["depth"] == depth and r["ok"]
            ]
            for j, r in enumerate(done):
                g = np.asarray(r["gradient_norms"])
                ax.plot(
                    np.linspace(0, 1, g.size),
                    g,
                    c=f"C{i}",
                    lw=1,
                    alpha=0.8,
                    label=name if j == 0 else None,
                )
        ax.set_yscale("log")
        ax.set_title(f"depth {depth}")
        ax.set_xlabel("layer / depth (0: input)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("‖∂L/∂y_j‖ (one line per seed)")
    _legend(fig, axes)
    return _png(fig)


def spectra_figure(runs, eigenvalues, solvers, depths) -> bytes:
    """h λ for every run, one panel per architecture, with the boundary of the
    solver's region of absolute stability, at equal scales on both axes."""
    fig = Figure(figsize=(3.4 * len(solvers), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(solvers)))
    for ax, (name, solver) in zip(axes, solvers.items()):
        points = []
        for j, depth in enumerate(depths):
            done = [
                r
                for r in runs
                if r["architecture"] == name and r["depth"] == depth and r["ok"]
            ]
            found = [e for e in eigenvalues.get((name, depth), []) if e is not None]
            if not done or not found:
                continue
            z = np.concatenate([e.ravel() for e in found]) * done[0]["t1"]
            z = z / done[0]["steps"]
            ax.scatter(z.real, z.imag, s=4, c=f"C{j}", label=f"depth {depth}")
            points.append(z)
        # The region |R(z)| <= 1: Euler's disc |1 + z| <= 1; for symplectic Euler and
        # leapfrog the segment [-2i, 2i] (`nde.stability.stability_function`), drawn
        # as a band behind the points with its ends marked, so that it shows.
        if solver == "euler":
            theta = np.linspace(0, 2 * np.pi, 200)
            ax.plot(np.cos(theta) - 1, np.sin(theta), "k-", lw=1, zorder=3)
            points.append(np.array([-2.1 + 1.1j, 0.1 - 1.1j]))
        else:  # symplectic_euler, leapfrog
            ax.plot([0, 0], [-2, 2], "-", c="0.2", lw=7, alpha=0.3, zorder=1)
            ax.plot([0, 0], [-2, 2], "k_", ms=14, mew=2, zorder=3)
            points.append(np.array([-0.3 + 2.2j, 0.3 - 2.2j]))
        z = np.concatenate(points)
        _square_limits(ax, z.real, z.imag)
        ax.set_title(f"{name} ({solver})", fontsize="medium")
        ax.set_xlabel("Re hλ")
        ax.axhline(0, c="0.8", lw=0.5, zorder=0)
        ax.axvline(0, c="0.8", lw=0.5, zorder=0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Im hλ")
    _legend(fig, axes, markerscale=3)
    fig.suptitle("eigenvalues of ∂F/∂y times the step h; black: |R(hλ)| ≤ 1")
    return _png(fig)


def _square_limits(ax, x, y) -> None:
    """Equal scales on both axes, with every point in view: one span for both,
    centred on the points."""
    x, y = np.asarray(x).ravel(), np.asarray(y).ravel()
    span = 1.1 * max(np.ptp(x), np.ptp(y), 1e-12)
    for set_lim, v in ((ax.set_xlim, x), (ax.set_ylim, y)):
        middle = (v.min() + v.max()) / 2
        set_lim(middle - span / 2, middle + span / 2)
    ax.set_aspect("equal")


def trajectories_figure(example: dict) -> bytes:
    fig = Figure(figsize=(12, 4.4), layout="constrained")
    axes = fig.subplots(1, len(example))
    for ax, (name, e) in zip(axes, example.items()):
        paths = e["trajectories"]
        for p in paths:
            ax.plot(p[:, 0], p[:, 1], c="C0", lw=0.7, alpha=0.7)
        ax.plot(paths[:, 0, 0], paths[:, 0, 1], "k.", ms=3, label="start")
        ax.plot(paths[:, -1, 0], paths[:, -1, 1], "o", c="C3", ms=3, label="end")
        _square_limits(ax, paths[..., 0], paths[..., 1])
        ax.set_title(
            f"{name}: median M = {e['sigma_max_median']:.3g}", fontsize="medium"
        )
        ax.set_xlabel("h₁")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("h₂")
    axes[0].legend(fontsize="small", loc="upper left")
    fig.suptitle(
        "h ← h + 0.1 tanh(W h), 20 layers, from a lattice in [-1, 1]²: a layer moves "
        "each coordinate by less than 0.1, so no path leaves [-3, 3]²"
    )
    return _png(fig)


def do_od_figure(dood: dict) -> bytes:
    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    steps = np.asarray(dood["steps"], float)
    for name, errs in dood["relative_error"].items():
        ax.loglog(steps, _finite(errs), "o-", label=name)
    ax.set_xticks(steps, [f"{s:g}" for s in steps])
    ax.minorticks_off()
    ax.set_xlabel(f"steps ({dood['solver']})")
    ax.set_ylabel("relative error of the adjoint gradient")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _png(fig)


def write_report(out: pathlib.Path, results: dict, eigenvalues, example) -> None:
    """Write the figures, `results.json` and `report.md` (last) into `out`."""
    archs = list(results["architectures"])
    solvers = {a: results["architectures"][a]["solver"] for a in archs}
    depths = results["config"]["depths"]
    runs = [dict(r, ok=r["status"] == "ok") for r in results["runs"]]
    figures = {
        "accuracy.png": accuracy_figure(runs, archs, results["classes"]),
        "gradient_norms.png": gradient_figure(runs, archs, depths),
        "spectra.png": spectra_figure(runs, eigenvalues, solvers, depths),
        "trajectories.png": trajectories_figure(example),
        "do_vs_od.png": do_od_figure(results["do_vs_od"]),
    }
    for name, data in figures.items():
        write_atomic(out / name, data)
    write_json(out / "results.json", results)
    write_atomic(out / "report.md", markdown(results).encode())
