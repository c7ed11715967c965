"""The benchmark's output: the environment, the tables (terminal and Markdown), the
figures, and atomic file writes."""

import importlib.metadata
import io
import math
import os
import pathlib
import platform

import jax
import numpy as np

from .. import _io
from .._io import write_atomic, write_json
from . import _torch


FIGURES = ("time_vs_steps.png", "memory_vs_steps.png")
MiB = 2**20
PROBLEM_KEYS = ("field", "solver", "steps", "batch", "width", "dtype")


def cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """Where the numbers were measured."""
    devices = jax.devices()

    def version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return dict(
        backend=jax.default_backend(),
        device_kind=devices[0].device_kind,
        device_count=len(devices),
        devices=[str(d) for d in devices],
        cpu=cpu_model(),
        cpu_count=os.cpu_count(),
        python=platform.python_version(),
        platform=platform.platform(),
        jax=version("jax"),
        jaxlib=version("jaxlib"),
        diffrax=version("diffrax"),
        equinox=version("equinox"),
        neuralde=version("neuralde"),
        x64=bool(jax.config.jax_enable_x64),
        **_torch.versions(),
    )


# ---------------------------------------------------------------------------------
# Tables.


def _ms(seconds) -> str:
    return "—" if seconds is None else f"{1e3 * seconds:.2f}"


def _mib(n) -> str:
    return "—" if n is None else f"{n / MiB:.2f}"


def _time_cell(row, stage) -> str:
    t = row.get(stage)
    if t is None:
        return "—"
    ratio = row["overhead"][stage]
    return f"{_ms(t['median_s'])} ({ratio:.2f}x)"


def _vs_discretize(row) -> str:
    ratio = row.get("vs_discretize")
    return "—" if ratio is None else f"{ratio:.2f}x"


def _spread(row) -> str:
    t = row.get("forward_gradient")
    if t is None:
        return "—"
    return f"±{50 * (t['q3_s'] - t['q1_s']) / t['median_s']:.0f}%"


def _steps_cell(row) -> str:
    a = row.get("adaptive")
    if a is None:
        return str(row["steps"])
    return f"adaptive: {a['steps_max']} (nfe {a['nfe_mean']:.0f})"


def rows_table(rows: list[dict]) -> str:
    """The measured rows as a Markdown table (readable on a terminal too)."""
    lines = [
        "| field | solver | gradient | batching | steps | batch | width | dtype "
        "| forward, ms (x ref) | fwd + grad, ms (x ref) | x discretize | spread "
        "| compile, s | XLA temp, MiB | peak RSS, MiB |",
        "|---|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["status"] != "ok":
            continue
        c = r["compile"]["forward_gradient"]
        temp = (r["xla_memory"]["forward_gradient"] or {}).get("temp")
        peak = (r.get("peak_memory") or {}).get("rss_bytes")
        lines.append(
            f"| {r['field']} | {r['solver']} | {r['gradient']} | {r['batching']} "
            f"| {_steps_cell(r)} | {r['batch']} | {r['width']} | {r['dtype']} "
            f"| {_time_cell(r, 'forward')} | {_time_cell(r, 'forward_gradient')} "
            f"| {_vs_discretize(r)} | {_spread(r)} "
            f"| {c['trace_s'] + c['compile_s']:.2f} | {_mib(temp)} "
            f"| {_mib(peak) if peak is None else f'{peak / MiB:.0f}'} |"
        )
    return "\n".join(lines)


def notes_list(rows: list[dict]) -> str:
    """Notes on measured points, one per point, and the skipped and failed points,
    grouped by reason."""
    lines, grouped = [], {}
    for r in rows:
        if r["note"] is None:
            continue
        what = (
            f"{r['field']}, {r['solver']}, {r['gradient']} ({r['batching']}), "
            f"steps {r['steps']}"
        )
        if r["status"] == "ok":
            lines.append(f"- {what}: {r['note']}.")
        else:
            grouped.setdefault((r["status"], r["note"]), []).append(what)
    for (status, note), points in grouped.items():
        lines.append(f"- {status}: {note}: {'; '.join(points)}.")
    return "\n".join(lines)


def device_memory_table(rows: list[dict]) -> str | None:
    measured = [r for r in rows if (r.get("peak_memory") or {}).get("device_bytes")]
    if not measured:
        return None
    lines = [
        "| field | solver | gradient | batching | steps | batch | width | dtype "
        "| peak device memory, MiB |",
        "|---|---|---|---|---:|---:|---:|---|---:|",
    ]
    for r in measured:
        lines.append(
            f"| {r['field']} | {r['solver']} | {r['gradient']} | {r['batching']} "
            f"| {r['steps']} | {r['batch']} | {r['width']} | {r['dtype']} "
            f"| {r['peak_memory']['device_bytes'] / MiB:.2f} |"
        )
    return "\n".join(lines)


def torch_table(problems: list[dict]) -> str | None:
    """The torchdiffeq comparison of the problems where it ran, and why it did not
    run on the others."""
    tried = [p for p in problems if (p.get("torchdiffeq") or {}).get("status")]
    if not tried:
        return None
    compared = [p for p in tried if p["torchdiffeq"]["status"] == "ok"]
    lines = []
    if compared:
        lines += [
            "| field | solver | steps | batch | width | dtype | neuralde best, ms "
            "| odeint, ms | odeint_adjoint, ms | odeint / best |",
            "|---|---|---:|---:|---:|---|---:|---:|---:|---:|",
        ]
    for p in compared:
        t = p["torchdiffeq"]
        best = t["neuralde_best"]
        lines.append(
            f"| {' | '.join(str(p[k]) for k in PROBLEM_KEYS)} "
            f"| {_ms(best['median_s'])} ({best['gradient']}) "
            f"| {_ms(t['odeint']['forward_gradient']['median_s'])} "
            f"| {_ms(t['odeint_adjoint']['forward_gradient']['median_s'])} "
            f"| {t['ratio']:.2f}x |"
        )
    reasons = {}
    for p in tried:
        if p["torchdiffeq"]["status"] != "ok":
            reasons.setdefault(p["torchdiffeq"]["note"], []).append(p)
    if reasons:
        lines.append("")
    for note, skipped in reasons.items():
        lines.append(f"Not compared on {len(skipped)} problem(s): {note}.")
    return "\n".join(lines).strip()


def grid_line(results: dict) -> str:
    """The values of each axis of the grid, in words."""
    grid = results["config"]["grid"]
    axes = (
        "field",
        "solver",
        "gradient",
        "batching",
        "steps",
        "batch",
        "width",
        "dtype",
    )
    values = {a: list(dict.fromkeys(str(p[a]) for p in grid)) for a in axes}
    return "; ".join(f"{a}: {', '.join(v)}" for a, v in values.items())


def summary(results: dict) -> str:
    """The tables for the terminal."""
    parts = [rows_table(results["rows"])]
    torch = torch_table(results["problems"])
    if torch:
        parts += ["torchdiffeq, forward + gradient:", torch]
    if results["config"].get("torch_note"):
        parts.append(results["config"]["torch_note"] + ".")
    notes = notes_list(results["rows"])
    if notes:
        parts += ["Notes:", notes]
    return "\n\n".join(parts)


def markdown(results: dict) -> str:
    env, config = results["environment"], results["config"]
    rows = results["rows"]
    parts = [
        "# neuralde bench",
        f"{env['device_count']} x {env['device_kind']} ({env['backend']}), CPU: "
        f"{env['cpu']} ({env['cpu_count']} cores); jax {env['jax']}, diffrax "
        f"{env['diffrax']}, equinox {env['equinox']}, neuralde {env['neuralde']}.",
        f"Preset `{config['preset']}`. Grid: {grid_line(results)}.",
        f"Forward and forward + gradient of `mean(y(t1)**2)` with respect to the "
        f"field's parameters, {config['layers']} layers, jit-compiled; medians over "
        "repeats timed interleaved in one process, after compilation and warm-up. "
        "`x ref`: the ratio to a hand-written `jax.lax.scan` of the same steps (the "
        "faster of a plain and a checkpointed scan; for adaptive rows, as many fixed "
        "steps as the adaptive solve took). Spread: half the interquartile range of "
        "forward + gradient, relative to its median. XLA temp: the compiled forward + "
        "gradient's temporary buffers. Peak RSS: the whole process, JAX included, "
        "of one forward + gradient in a process of its own.",
        rows_table(rows),
    ]
    device = device_memory_table(rows)
    if device:
        parts += ["## Peak device memory", device]
    torch = torch_table(results["problems"])
    if torch:
        parts += [
            "## torchdiffeq",
            "The same field, parameters, initial states, steps and loss, through "
            "`torchdiffeq.odeint` and `odeint_adjoint`; forward + gradient, median ms. "
            "`odeint / best`: above 1 means neuralde's fastest gradient mode is "
            "faster.",
            torch,
        ]
    if config.get("torch_note"):
        parts += ["## torchdiffeq", config["torch_note"] + "."]
    notes = notes_list(rows)
    if notes:
        parts += ["## Notes", notes]
    parts += ["## Figures"] + [f"![{f}]({f})" for f in FIGURES]
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------
# Figures.


def _figure(**kwargs):
    # Imported here, so that `import neuralde` does not load matplotlib; a bare
    # `Figure` (no pyplot) keeps no global state and needs no GUI backend.
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _series(rows, value, *, reference=False):
    """Curves over steps: `{label: (steps, values)}` for the fixed-step rows, one per
    combination of the other axes that varies in `rows`."""
    fixed = [r for r in rows if r["status"] == "ok" and r.get("adaptive") is None]
    keys = ["field", "solver", "gradient", "batching", "batch", "width", "dtype"]
    varying = [k for k in keys if len({r[k] for r in fixed}) > 1 or k == "gradient"]
    if reference:
        varying = [k for k in varying if k not in ("gradient", "batching")]
    curves = {}
    for r in fixed:
        v = value(r)
        if v is None or not v > 0:
            continue
        label = ", ".join(str(r[k]) for k in varying) or "reference"
        if reference:
            label = f"scan reference ({label})" if varying else "scan reference"
        curves.setdefault(label, {})[r["steps"]] = v
    return {k: sorted(v.items()) for k, v in curves.items()}


_MARKERS = "osD^vP"


def _plot(ax, curves, *, dashed=False, start=0):
    """Curves on log-log axes, each of its own colour and marker (colours repeat
    every ten curves with another marker), counted from `start`; ticks at the
    measured step counts."""
    import matplotlib  # here for the reason of `_figure`
    import matplotlib.ticker

    colours = matplotlib.colormaps["tab10"].colors
    steps = set()
    for i, (label, points) in enumerate(curves.items(), start):
        x, y = zip(*points)
        steps.update(x)
        ax.plot(
            x,
            y,
            "--" if dashed else "-",
            color=colours[i % 10],
            marker=_MARKERS[(i // 10) % len(_MARKERS)],
            ms=4,
            label=label,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    if steps:
        ticks = sorted(steps)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    plain_log_labels(ax)
    ax.set_xlabel("steps")
    ax.grid(True, which="both", alpha=0.3)
    return start + len(curves)


def plain_log_labels(ax) -> None:
    """Label a log y axis with plain numbers (0.02, not 2×10⁻²); on an axis of
    less than three decades, whose major ticks are too few to read it by, label the
    minor ticks at 2 and 5 of each decade too."""
    import matplotlib.ticker

    def plain(v, _):
        return f"{v:g}"

    def two_and_five(v, _):
        lead = round(v / 10 ** math.floor(math.log10(v)))
        return f"{v:g}" if lead in (2, 5) else ""

    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(plain))
    lo, hi = sorted(ax.get_ylim())  # the autoscaled limits
    few = lo > 0 and hi / lo < 1000
    ax.yaxis.set_minor_formatter(
        matplotlib.ticker.FuncFormatter(two_and_five)
        if few
        else matplotlib.ticker.NullFormatter()
    )


def time_figure(rows: list[dict]) -> bytes:
    fig = _figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    for ax, stage, title in zip(
        axes, ("forward", "forward_gradient"), ("forward", "forward + gradient")
    ):
        n = _plot(ax, _series(rows, lambda r: r[stage]["median_s"]))
        reference = _series(
            rows, lambda r: r["reference"][stage]["median_s"], reference=True
        )
        _plot(ax, reference, dashed=True, start=n)
        ax.set_title(title)
        ax.set_ylabel("median time, s")
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    return _png(fig)


def memory_figure(rows: list[dict]) -> bytes:
    # Not the peak RSS of the table: the whole process's, it is JAX's baseline of
    # hundreds of MiB plus the solve's tens, so its curves show the noise of the
    # baseline, not the solve.
    panels = [
        ("XLA temp buffers of forward + gradient, MiB", _temp),
        (
            "peak device memory, MiB",
            lambda r: (r.get("peak_memory") or {}).get("device_bytes"),
        ),
    ]
    panels = [(t, f) for t, f in panels if _series(rows, f)]
    fig = _figure(figsize=(5.5 * max(len(panels), 1), 4.2))
    axes = np.atleast_1d(fig.subplots(1, max(len(panels), 1)))
    for ax, (title, value) in zip(axes, panels):
        _plot(ax, _series(rows, lambda r: _per_mib(value(r))))
        ax.set_title(title)
    if panels:
        axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    return _png(fig)


def _temp(row):
    return (row["xla_memory"]["forward_gradient"] or {}).get("temp")


def _per_mib(n):
    return None if n is None else n / MiB


# ---------------------------------------------------------------------------------
# Files.


def check_output(out, force: bool) -> pathlib.Path:
    return _io.check_output(out, force, what="the benchmark's files")


def write_report(out: pathlib.Path, results: dict) -> None:
    write_json(out / "results.json", results)
    write_atomic(out / "time_vs_steps.png", time_figure(results["rows"]))
    write_atomic(out / "memory_vs_steps.png", memory_figure(results["rows"]))
    write_atomic(out / "results.md", markdown(results).encode())
