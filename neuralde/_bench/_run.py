"""One comparison of the benchmark: the rows of one problem (every gradient mode),
its hand-written reference and, where installed, torchdiffeq, compiled, checked
against each other and timed interleaved in one process."""

import re
from collections.abc import Callable

import equinox as eqx
import jax
import jax.random as jr

from . import _torch
from ._measure import (
    adaptive_stats,
    compile_call,
    MemoryPool,
    relative_error,
    summary,
    time_interleaved,
)
from ._problem import (
    library_forward,
    Point,
    Problem,
    reference_forward,
    skip_reason,
    value_and_grad,
)
from ._registry import make_problem


# Agreement with the reference, relative (the gradient's to its largest entry): a few
# thousand steps of round-off in the state's precision.
TOLERANCE = {
    "float64": (1e-10, 1e-8),
    "float32": (1e-4, 1e-3),
    "bfloat16": (0.1, 0.3),
    "float16": (0.05, 0.2),
}
# Library errors that mean "this combination cannot run", caught when compiling.
REFUSED = (ValueError, TypeError)
# Errors of a run: a state that became non-finite, too many adaptive steps.
RUN_ERRORS = (eqx.EquinoxRuntimeError, jax.errors.JaxRuntimeError)
STAGES = ("forward", "forward_gradient")


def build(problem: Problem, layers: int, seed: int):
    """The field and the batch of initial states of `problem`; the same for every
    gradient mode, in this process and in the memory worker."""
    return make_problem(
        problem.field,
        problem.width,
        problem.batch,
        layers,
        problem.dtype,
        key=jr.PRNGKey(seed),
    )


def gradient_fn(point: Point, **solve_options):
    return value_and_grad(library_forward(point, **solve_options))


def _message(error: Exception) -> str:
    """The line of an error's message that says what happened: for a runtime error
    raised inside compiled code (`eqx.error_if`), the message it was raised with."""
    text = str(error).strip() or type(error).__name__
    found = re.search(r"EquinoxRuntimeError: ([^\n]+)", text)
    return found.group(1).strip() if found else text.splitlines()[0]


def run_problem(
    problem: Problem,
    modes: list[tuple[str, str]],
    *,
    layers: int,
    seed: int,
    solve_options: dict,
    repeats: int,
    budget: float,
    torch: bool,
    memory: MemoryPool | None = None,
    on_row: Callable[[str], None] = lambda _: None,
) -> tuple[list[dict], dict]:
    """Measure every `(gradient, batching)` of `modes` on `problem`. Returns the
    rows, one per mode (skipped ones included, with their reason), and the
    problem's record: its reference and the torchdiffeq comparison.

    With `memory`, the peak memory of each measured row is submitted to it after the
    timed repeats, and the measurements submitted before are waited for before
    them: they run while this process compiles, never while it times."""
    field, y0 = build(problem, layers, seed)
    rows, runs, outputs = {}, {}, {}
    for mode in modes:
        point = Point(problem, *mode)
        on_row(" ".join(mode))
        row = dict(point.as_dict(), status="ok", note=None)
        rows[mode] = row
        reason = skip_reason(point, rtol=solve_options["rtol"])
        if reason is not None:
            row.update(status="skipped", note=reason)
            continue
        forward = library_forward(point, **solve_options)
        fns = dict(forward=forward, forward_gradient=value_and_grad(forward))
        try:
            compiled = {s: compile_call(fns[s], field, y0) for s in STAGES}
        except REFUSED as e:
            row.update(status="skipped", note=_message(e))
            continue
        try:
            outputs[mode] = {s: compiled[s].run() for s in STAGES}
        except RUN_ERRORS as e:
            row.update(status="failed", note=_message(e))
            continue
        row["compile"] = {s: _compile_record(compiled[s]) for s in STAGES}
        row["xla_memory"] = {s: compiled[s].memory for s in STAGES}
        row["loss"] = float(outputs[mode]["forward_gradient"][0])
        for s in STAGES:
            runs[(mode, s)] = compiled[s].run
    record = dict(problem._asdict(), reference=None, torchdiffeq=None)
    ok = [m for m in modes if rows[m]["status"] == "ok"]
    if not ok:
        return list(rows.values()), record

    steps = problem.steps
    if problem.adaptive:
        stats = adaptive_stats(field, y0, problem.solver, **solve_options)
        y1 = stats.pop("y1")
        check = relative_error(y1, outputs[ok[0]]["forward"])
        stats["agrees_with_solve"] = check <= TOLERANCE[problem.dtype][0]
        record["adaptive"] = stats
        for g in ok:
            rows[g]["adaptive"] = stats
        steps = stats["steps_max"]

    # The reference: the faster of a plain scan and a checkpointed one, which differ
    # in speed even in the forward pass (XLA fuses the two loop bodies differently).
    plain = reference_forward(problem.solver, steps, checkpoint=False)
    checkpointed = reference_forward(problem.solver, steps, checkpoint=True)
    reference = {
        ("forward", "scan"): plain,
        ("forward", "checkpointed scan"): checkpointed,
        ("forward_gradient", "scan"): value_and_grad(plain),
        ("forward_gradient", "checkpointed scan"): value_and_grad(checkpointed),
    }
    on_row("reference")
    ref_compiled = {k: compile_call(f, field, y0) for k, f in reference.items()}
    ref_out = {k: c.run() for k, c in ref_compiled.items()}
    for k, c in ref_compiled.items():
        runs[("reference", k)] = c.run

    torch_runs, torch_note = {}, None
    if torch:
        on_row("torchdiffeq")
        torch_runs, torch_note = _torch.runs(problem, field, y0, **solve_options)
        for name, (fwd, fwd_grad) in torch_runs.items():
            if fwd is not None:
                runs[(name, "forward")] = fwd
            runs[(name, "forward_gradient")] = fwd_grad

    if memory is not None:
        memory.wait()
    on_row("timing")
    slow = frozenset(k for k in runs if k[0] in torch_runs)
    samples = time_interleaved(runs, repeats=repeats, budget=budget, slow=slow)
    if memory is not None:
        arrays = [x for x in jax.tree.leaves((field, y0)) if eqx.is_array(x)]
        for g in ok:
            job = memory_job(
                Point(problem, *g),
                layers=layers,
                seed=seed,
                solve_options=solve_options,
            )
            memory.submit(rows[g], job, arrays)
    times = {k: summary(v) for k, v in samples.items()}

    ref = {}  # stage -> the faster variant and its median
    for stage in STAGES:
        kind = min(
            ("scan", "checkpointed scan"),
            key=lambda k: times[("reference", (stage, k))]["median_s"],
        )
        ref[stage] = (kind, times[("reference", (stage, kind))]["median_s"])
    ref_kind = ref["forward_gradient"][0]
    record["reference"] = dict(
        steps=steps,
        loss=float(ref_out[("forward_gradient", ref_kind)][0]),
        times={f"{s}, {k}": times[("reference", (s, k))] for s, k in reference},
        compile={f"{s}, {k}": _compile_record(c) for (s, k), c in ref_compiled.items()},
        xla_memory={f"{s}, {k}": c.memory for (s, k), c in ref_compiled.items()},
    )
    loss_tol, grad_tol = TOLERANCE[problem.dtype]
    for g in ok:
        row = rows[g]
        row["forward"] = times[(g, "forward")]
        row["forward_gradient"] = times[(g, "forward_gradient")]
        row["reference"] = dict(steps=steps)
        row["overhead"] = {}
        for stage, (kind, median) in ref.items():
            row["reference"][stage] = dict(kind=kind, median_s=median)
            row["overhead"][stage] = row[stage]["median_s"] / median
        if problem.adaptive:
            continue
        value, grad = outputs[g]["forward_gradient"]
        ref_value, ref_grad_tree = ref_out[("forward_gradient", ref_kind)]
        errors = dict(
            loss=abs(float(value) - float(ref_value)) / abs(float(ref_value)),
            gradient=relative_error(grad, ref_grad_tree),
        )
        row["agreement"] = errors
        if g[0] == "adjoint":
            row["note"] = (
                "the continuous adjoint approximates the discrete gradient: "
                f"relative difference {errors['gradient']:.1e}"
            )
        elif errors["loss"] > loss_tol or errors["gradient"] > grad_tol:
            row["note"] = (
                f"disagrees with the reference: loss {errors['loss']:.1e}, "
                f"gradient {errors['gradient']:.1e} (relative)"
            )
    for g, b in ok:
        base = rows.get(("discretize", b))
        if base is not None and "forward_gradient" in base:
            rows[g, b]["vs_discretize"] = (
                rows[g, b]["forward_gradient"]["median_s"]
                / base["forward_gradient"]["median_s"]
            )
    if torch:
        record["torchdiffeq"] = _torch.record(
            torch_runs, torch_note, times, rows, ok, record["reference"]["loss"]
        )
    return list(rows.values()), record


def _compile_record(c) -> dict:
    return dict(trace_s=c.trace_s, compile_s=c.compile_s)


def memory_job(point: Point, *, layers, seed, solve_options) -> dict:
    """The description of `point` that the memory worker rebuilds it from."""
    return dict(
        problem=point.problem._asdict(),
        gradient=point.gradient,
        batching=point.batching,
        layers=layers,
        seed=seed,
        solve=solve_options,
        x64=bool(jax.config.jax_enable_x64),
    )
