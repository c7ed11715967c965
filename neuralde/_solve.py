import math
from collections.abc import Callable, Sequence
from typing import Literal

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, ArrayLike, PRNGKeyArray, PyTree

from ._checks import positive_int
from ._penalties import AbstractPenalty, augment
from ._reversible import reversible_loop
from ._solvers import (
    get_solver,
    is_adaptive,
    is_reversible,
    is_two_stream,
    REVERSIBLE_NAMES,
)
from ._steps import all_finite, raise_if_nonfinite, scan_steps, step_grid
from .fields import AbstractField, AbstractTwoStreamField


GRADIENTS = ("discretize", "checkpoint", "adjoint", "reversible")
Gradient = Literal["discretize", "checkpoint", "adjoint", "reversible"]


def solve(
    field: Callable[[ArrayLike, PyTree[Array], PyTree], PyTree[Array]],
    y0: PyTree[Array],
    *,
    t0: float = 0.0,
    t1: float | None = None,
    steps: int | None = None,
    dt0: float | None = None,
    solver: str | dfx.AbstractSolver = "rk4",
    gradient: Gradient | dfx.AbstractAdjoint = "discretize",
    checkpoints: int | None = None,
    ts: ArrayLike | None = None,
    args: PyTree = None,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int = 4096,
    regularizers: Sequence[AbstractPenalty] = (),
    key: PRNGKeyArray | None = None,
    batched: bool = False,
) -> PyTree[Array] | tuple[PyTree[Array], Array]:
    """Integrate $\\dot y = F(t, y)$ from `t0` to `t1` with diffrax.

    **Arguments:**

    - `field`: the vector field, `field(t, y, args)`: a `neuralde.fields` field or any
        callable with diffrax's signature.
    - `y0`: the initial state of one example (batch with `jax.vmap`); a tuple
        `(y0, z0)` for two-stream fields.
    - `t0`, `t1`: the interval. `t1=None` takes the field's own `t1` (1.0 for fields
        that carry none).
    - `steps`: take this many equal steps (any solver).
    - `dt0`: a fixed-step solver takes steps of `dt0` (the last one shortened to end
        at `t1`); an adaptive solver (`tsit5`, `dopri5`) starts with it. An adaptive
        solve may omit both `steps` and `dt0` and let diffrax pick the first step.
    - `solver`: one of `"euler"`, `"midpoint"`, `"heun"`, `"rk4"` (default),
        `"tsit5"`, `"dopri5"`, `"symplectic_euler"`, `"leapfrog"`,
        `"reversible_heun"`, or any `diffrax.AbstractSolver`. `symplectic_euler` and
        `leapfrog` need a two-stream field (`neuralde.fields.AbstractTwoStreamField`).
    - `gradient`: how reverse-mode derivatives are taken:
        - `"discretize"`: backpropagation through the solver's steps
            (discretize-then-optimise). Fixed steps run as a `lax.scan` over the
            diffrax solver's `step`, which also supports forward mode;
        - `"checkpoint"`: the same gradient through
            `diffrax.RecursiveCheckpointAdjoint(checkpoints)`: binomial
            checkpointing, less memory for more compute;
        - `"adjoint"`: the continuous adjoint solved backwards
            (`diffrax.BacksolveAdjoint`, optimise-then-discretise); it approximates
            the gradient of the discrete network and needs a one-term solver;
        - `"reversible"`: the same gradient as `"discretize"`, in memory that does
            not grow with the number of steps: the backward pass rebuilds each
            state by inverting the steps of a reversible solver (`symplectic_euler`,
            `leapfrog`, `reversible_heun`, or `neuralde.Reversible` around a
            Runge–Kutta solver), and takes one VJP per step;
        - or any `diffrax.AbstractAdjoint`.
    - `checkpoints`: with `gradient="checkpoint"`, the number of checkpoints.
        Default: $\\lceil\\sqrt{\\text{steps}}\\rceil$ for fixed steps (memory and
        recomputation both $O(\\sqrt{n})$), diffrax's online choice for adaptive
        solves.
    - `ts`: return the states at these times, stacked on a leading axis, rather than
        the state at `t1`. They must lie in `[t0, t1]` and increase.
    - `args`: passed to `field`.
    - `rtol`, `atol`: tolerances of adaptive solvers (default `1e-5`, `1e-6`).
    - `max_steps`: the most steps an adaptive solve may take.
    - `regularizers`: penalties integrated alongside the state, such as
        `neuralde.regularizers.KineticEnergy()` and `JacobianFrobenius()` (Finlay et
        al. 2020). They are extra components of the state, so every gradient mode
        differentiates them, the continuous adjoint included. Not with two-stream
        solvers (`symplectic_euler`, `leapfrog`), whose steps need each stream's rate
        to depend on the other stream only.
    - `key`: PRNG key for stochastic penalties (Hutchinson's estimator): a fresh one
        per training step.
    - `batched`: `y0` carries a leading batch axis, and the field (which acts on one
        example) is vmapped inside the solve. The result equals
        `jax.vmap(lambda y: solve(field, y, ...))(y0)`. It matters for the custom
        VJPs (`"reversible"`, `"checkpoint"`, `"adjoint"`): under an outer
        `jax.vmap`, JAX runs their backward pass per example, keeping one parameter
        cotangent per example at every step; here the backward pass sees the batch
        and sums as it goes. Not with `regularizers`.

    **Returns:** the state at `t1`, shaped like `y0`; with `ts`, the states at `ts`.
    With `regularizers`, the pair `(y1, penalties)`, where `penalties[i]` is the
    integral of `regularizers[i]` over `[t0, t1]` (with `ts`: over `[t0, ts[k]]`,
    stacked).

    A state that becomes non-finite raises an error that names the time reached.
    """
    if regularizers and batched:
        raise ValueError(
            "`regularizers` integrate one penalty per example: use them with an outer "
            "`jax.vmap` rather than `batched=True`."
        )
    if regularizers:
        if is_two_stream(get_solver(solver)):
            raise ValueError(
                "`regularizers` are integrated as an extra part of the state, which a "
                f"two-stream solver ({solver!r}) cannot carry: each of its streams "
                "must depend on the other only. Use a one-term solver such as 'rk4' "
                "or 'reversible_heun'."
            )
        t1 = _default_t1(field, t1)
        field, y0 = augment(field, y0, regularizers, key)
    elif key is not None:
        raise ValueError("`key` is used by stochastic `regularizers` only.")
    terms, solver_obj, t0, t1, grid = setup(
        field,
        y0,
        t0=t0,
        t1=t1,
        steps=steps,
        dt0=dt0,
        solver=solver,
        gradient=gradient,
        checkpoints=checkpoints,
        ts=ts,
        args=args,
        rtol=rtol,
        atol=atol,
        batched=batched,
    )
    if gradient == "reversible":
        return reversible_loop((y0, terms, args), solver_obj, grid)
    if gradient == "discretize" and grid is not None and ts is None:
        y1, _, bad = scan_steps(terms, solver_obj, grid, y0, args)
        return raise_if_nonfinite(y1, bad, grid)
    return _diffeqsolve(
        terms,
        solver_obj,
        t0,
        t1,
        dt0,
        y0,
        args,
        grid,
        ts,
        gradient,
        checkpoints,
        rtol,
        atol,
        max_steps,
    )


def setup(
    field,
    y0,
    *,
    t0,
    t1,
    steps,
    dt0,
    solver,
    gradient,
    checkpoints,
    ts,
    args,
    rtol=None,
    atol=None,
    batched=False,
):
    """Validate the arguments of a solve. Returns its terms, solver, `t0` and `t1` in
    the state's dtype, and the `StepGrid` of fixed steps (`None` for adaptive steps)."""
    solver_obj = get_solver(solver)
    check_gradient(gradient, checkpoints)
    t1 = _default_t1(field, t1)
    _check_interval(t0, t1)
    dtype = _state_dtype(y0)
    adaptive = steps is None and is_adaptive(solver_obj)
    _check_steps(steps, dt0, adaptive, solver)
    if not adaptive and (rtol is not None or atol is not None):
        raise ValueError(
            "`rtol`/`atol` control adaptive step sizes; a solve with fixed steps "
            "(`steps=`, or a fixed-step solver) does not use them."
        )
    if gradient == "reversible":
        if adaptive or not is_reversible(solver_obj):
            raise ValueError(
                '`gradient="reversible"` needs fixed steps of a reversible solver: '
                f"one of {', '.join(REVERSIBLE_NAMES)}, with `steps=` or `dt0=`; got "
                f"{solver!r}{' (adaptive)' if adaptive else ''}."
            )
        if ts is not None:
            raise ValueError(
                '`gradient="reversible"` returns the final state only, as it stores '
                "no trajectory; solve up to each time of `ts` separately, or use "
                '`gradient="checkpoint"` with `ts=`.'
            )
    terms = make_terms(field, solver_obj)
    t0 = _as_time(t0, dtype)
    t1 = _as_time(t1, dtype)
    if ts is not None:
        _check_ts(ts, t0, t1)
    if batched:
        check_field_output(field, t0, _first_example(y0), args)
        terms = jtu.tree_map(
            lambda term: dfx.ODETerm(_Vmapped(term.vector_field)),
            terms,
            is_leaf=lambda x: isinstance(x, dfx.ODETerm),
        )
    else:
        check_field_output(field, t0, y0, args)

    steps = None if steps is None else positive_int(steps, "steps")
    grid = None if adaptive else step_grid(t0, t1, steps, dt0, dtype)
    return terms, solver_obj, t0, t1, grid


def make_terms(field, solver: dfx.AbstractSolver):
    """The diffrax terms of `field` for `solver`: one `ODETerm`, or `(dy, dz)` for
    solvers that act on the two streams separately."""
    if not is_two_stream(solver):
        return dfx.ODETerm(field)
    if not isinstance(field, AbstractTwoStreamField):
        raise TypeError(
            f"{type(solver).__name__} acts on two streams `(y, z)` with "
            "`dy/dt = f(t, z)`, `dz/dt = g(t, y)`: it needs a "
            "`neuralde.fields.AbstractTwoStreamField` (such as `Hamiltonian` or "
            f"`Hyperbolic`), got {type(field).__name__}. Use a one-term solver "
            "such as 'rk4' for other fields."
        )
    return dfx.ODETerm(field.dy), dfx.ODETerm(field.dz)


def check_field_output(field, t0, y0, args) -> None:
    """Trace-time check that `field(t0, y0, args)` is shaped like `y0`."""
    out = jax.eval_shape(field, t0, y0, args)
    s_in = jtu.tree_structure(y0)
    s_out = jtu.tree_structure(out)
    if s_in != s_out:
        raise ValueError(
            f"The field returned a PyTree of structure {s_out} for a state of "
            f"structure {s_in}; a vector field must return a PyTree shaped like y."
        )
    for x, o in zip(jtu.tree_leaves(y0), jtu.tree_leaves(out)):
        if jnp.shape(x) != o.shape:
            raise ValueError(
                f"The field returned shape {o.shape} for a state of shape "
                f"{jnp.shape(x)}; a vector field must return a PyTree shaped like y."
            )
        if jnp.result_type(x) != o.dtype:
            raise TypeError(
                f"The field returned dtype {o.dtype} for a state of dtype "
                f"{jnp.result_type(x)}. Build the field with the state's dtype "
                "(e.g. `dtype=` of the neuralde fields), or cast `y0`."
            )


def _diffeqsolve(
    terms,
    solver,
    t0,
    t1,
    dt0,
    y0,
    args,
    grid,
    ts,
    gradient,
    checkpoints,
    rtol,
    atol,
    max_steps,
):
    times = None if grid is None else grid.times()
    if times is None:
        controller = dfx.PIDController(
            rtol=1e-5 if rtol is None else rtol, atol=1e-6 if atol is None else atol
        )
        n = max_steps
    else:
        controller = dfx.StepTo(ts=times)
        dt0 = None
        n = times.shape[0] - 1
    if isinstance(gradient, dfx.AbstractAdjoint):
        adjoint = gradient
        if isinstance(adjoint, dfx.BacksolveAdjoint) and times is not None:
            adjoint = _backsolve_on(times, adjoint.kwargs)
    elif gradient == "discretize":
        adjoint = dfx.RecursiveCheckpointAdjoint(
            checkpoints=None if times is None else n
        )
    elif gradient == "checkpoint":
        if checkpoints is None and times is not None:
            checkpoints = math.ceil(math.sqrt(n))
        adjoint = dfx.RecursiveCheckpointAdjoint(checkpoints=checkpoints)
    else:
        if is_two_stream(solver):
            raise ValueError(
                f'`gradient="adjoint"` integrates the adjoint backwards with the '
                f"same solver, and diffrax's `BacksolveAdjoint` accepts one-term "
                f"solvers only, not {type(solver).__name__}. Use "
                '`gradient="discretize"` or `"checkpoint"` with this solver, or a '
                "one-term solver such as 'rk4' with the adjoint."
            )
        adjoint = dfx.BacksolveAdjoint() if times is None else _backsolve_on(times, {})
    if ts is None:
        saveat = dfx.SaveAt(t1=True)
    else:
        ts = jnp.asarray(ts, t0.dtype)
        saveat = dfx.SaveAt(ts=ts)
    # The first evaluation of the field at a non-finite state names the time reached.
    label_times = _label_times(t0, t1, grid)
    terms = jtu.tree_map(
        lambda term: dfx.ODETerm(_FiniteInput(term.vector_field, label_times)),
        terms,
        is_leaf=lambda x: isinstance(x, dfx.ODETerm),
    )
    sol = dfx.diffeqsolve(
        terms,
        solver,
        t0,
        t1,
        dt0,
        y0,
        args,
        saveat=saveat,
        stepsize_controller=controller,
        adjoint=adjoint,
        max_steps=n,
    )
    if ts is None:
        y = jtu.tree_map(lambda x: x[-1], sol.ys)
        saved = t1[None]
    else:
        y = sol.ys
        saved = ts
    # A state that became non-finite in the last step is seen by no evaluation.
    ok = jax.vmap(all_finite)(sol.ys)
    if isinstance(saved, jax.core.Tracer):
        msgs = [
            f"by saved time {i + 1} of {saved.shape[0]}" for i in range(saved.shape[0])
        ]
    else:
        msgs = [f"by t = {t:.6g}" for t in jax.device_get(saved).tolist()]
    msgs = [f"neuralde: the state became non-finite {m}." for m in msgs]
    return eqx.branched_error_if(y, ~jnp.all(ok), jnp.argmin(ok), msgs)


def _backsolve_on(times, kwargs) -> dfx.BacksolveAdjoint:
    """`BacksolveAdjoint` whose backward solve steps through the forward grid
    reversed: the adjoint of the same discretisation, and no time grid of diffrax's
    own (`ConstantStepSize` would place the steps differently from `dt0=` grids)."""
    kwargs = dict(kwargs)
    kwargs.setdefault("stepsize_controller", dfx.StepTo(ts=times[::-1]))
    return dfx.BacksolveAdjoint(**kwargs)


def _label_times(t0, t1, grid) -> tuple[float, ...] | None:
    """The times that may name where a state was found non-finite: the step times of
    a fixed grid, or 1000 bins of `[t0, t1]` for adaptive steps; `None` when traced.
    """
    if grid is not None:
        times = grid.concrete_times()
        return None if times is None else tuple(times.tolist())
    if isinstance(t0, jax.core.Tracer) or isinstance(t1, jax.core.Tracer):
        return None
    return tuple(np.linspace(float(t0), float(t1), 1001).tolist())


class _FiniteInput(eqx.Module):
    """A vector field that raises when evaluated at a non-finite state, naming the
    nearest of `times`."""

    vector_field: Callable
    times: tuple[float, ...] | None = eqx.field(static=True)

    def __call__(self, t, y, args):
        if self.times is None:
            index, msgs = 0, ["during the solve"]
        else:
            index = jnp.argmin(jnp.abs(jnp.asarray(self.times, jnp.result_type(t)) - t))
            msgs = [f"at t = {s:.6g}" for s in self.times]
        msgs = [f"neuralde: the state became non-finite {m}." for m in msgs]
        y = eqx.branched_error_if(y, ~all_finite(y), index, msgs)
        return self.vector_field(t, y, args)


class _Vmapped(eqx.Module):
    """A vector field of one example, applied to a batch."""

    vector_field: Callable

    def __call__(self, t, y, args):
        return jax.vmap(self.vector_field, in_axes=(None, 0, None))(t, y, args)


def _first_example(y0):
    leaves = jtu.tree_leaves(y0)
    if (
        any(jnp.ndim(x) == 0 for x in leaves)
        or len({jnp.shape(x)[0] for x in leaves}) != 1
    ):
        raise ValueError(
            "`batched=True` needs every leaf of `y0` to carry the same leading batch "
            f"axis; got shapes {[jnp.shape(x) for x in leaves]}."
        )
    return jtu.tree_map(lambda x: x[0], y0)


def _as_time(t, dtype):
    # numpy when concrete: under `jit` a jnp constant is a tracer, and the step grid,
    # `dt0` step counts and error messages need the values.
    if isinstance(t, jax.core.Tracer):
        return jnp.asarray(t, dtype)
    return np.asarray(t, dtype)


def _default_t1(field, t1):
    if t1 is not None:
        return t1
    return field.t1 if isinstance(field, AbstractField) else 1.0


def _check_interval(t0, t1) -> None:
    if isinstance(t0, jax.core.Tracer) or isinstance(t1, jax.core.Tracer):
        return
    if not float(t1) > float(t0):
        raise ValueError(
            f"neuralde integrates forwards in time: need t1 > t0, got t0={float(t0)}, "
            f"t1={float(t1)}."
        )


def _state_dtype(y0):
    leaves = jtu.tree_leaves(y0)
    if not leaves:
        raise ValueError("`y0` has no arrays.")
    for x in leaves:
        if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
            raise TypeError(
                f"The state must be floating point, but `y0` has a leaf of dtype "
                f"{jnp.result_type(x)}. Cast it, e.g. `y0.astype(jnp.float32)`."
            )
    return jnp.result_type(*leaves)


def _check_steps(steps, dt0, adaptive, solver) -> None:
    if steps is not None and dt0 is not None:
        raise ValueError(
            "Pass either `steps=` (the number of equal steps) or `dt0=` (the step "
            f"size), not both; got steps={steps!r}, dt0={dt0!r}."
        )
    if steps is None and dt0 is None and not adaptive:
        raise ValueError(
            f"The fixed-step solver {solver!r} needs `steps=` (the number of equal "
            "steps) or `dt0=` (the step size)."
        )
    if steps is not None:
        positive_int(steps, "steps")
    if dt0 is not None:
        if isinstance(dt0, jax.core.Tracer):
            if not adaptive:
                raise TypeError(
                    "A fixed-step solve needs a concrete `dt0` to know its number of "
                    "steps; pass `steps=` instead when the times are traced."
                )
        elif not float(dt0) > 0:
            raise ValueError(f"`dt0` must be positive, got {dt0!r}.")


def _check_ts(ts, t0, t1) -> None:
    if jnp.ndim(ts) != 1 or jnp.shape(ts)[0] < 1:
        raise ValueError(
            f"`ts` must be a 1-D array of times, got shape {jnp.shape(ts)}."
        )
    if any(isinstance(x, jax.core.Tracer) for x in (ts, t0, t1)):
        return
    ts = np.asarray(ts, np.float64)
    if ts[0] < float(t0) or ts[-1] > float(t1) or np.any(np.diff(ts) <= 0):
        raise ValueError(
            f"`ts` must increase strictly and lie in [t0, t1] = [{float(t0)}, "
            f"{float(t1)}]; got {ts.tolist() if ts.size <= 8 else ts}."
        )


def check_gradient(gradient, checkpoints) -> None:
    if checkpoints is not None:
        positive_int(checkpoints, "checkpoints")
    if isinstance(gradient, dfx.AbstractAdjoint):
        if checkpoints is not None:
            raise ValueError(
                '`checkpoints` configures `gradient="checkpoint"`; with a diffrax '
                "adjoint, set it on the adjoint itself."
            )
        return
    if gradient not in GRADIENTS:
        raise ValueError(
            f"Unknown gradient {gradient!r}. Use one of {', '.join(GRADIENTS)}, or a "
            "`diffrax.AbstractAdjoint` instance."
        )
    if checkpoints is not None and gradient != "checkpoint":
        raise ValueError(
            f'`checkpoints` applies to `gradient="checkpoint"` only, not {gradient!r}.'
        )
