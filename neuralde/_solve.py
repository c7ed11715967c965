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
from ._noise import check_calculus, noise_term
from ._nonfinite import raise_if
from ._solvers import (
    check_fixed_steps,
    get_solver,
    has_error_estimate,
    is_two_stream,
)
from ._steps import step_grid
from ._vmapped import Vmapped
from .fields import AbstractField, AbstractTwoStreamField
from .gradients import AbstractGradient, as_gradient, Integration
from .regularizers import AbstractRegularizer
from .regularizers._integrated import augment


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
    gradient: Gradient | AbstractGradient | dfx.AbstractAdjoint = "discretize",
    ts: ArrayLike | None = None,
    args: PyTree = None,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int = 4096,
    regularizers: Sequence[AbstractRegularizer] = (),
    diffusion: Callable[[ArrayLike, PyTree[Array], PyTree], PyTree] | None = None,
    calculus: Literal["ito", "stratonovich"] | None = None,
    key: PRNGKeyArray | None = None,
    batched: bool | None = None,
) -> PyTree[Array] | tuple[PyTree[Array], Array]:
    """Integrate $\\dot y = F(t, y)$ from `t0` to `t1` with diffrax; with
    `diffusion=g`, the SDE $dy = F(t, y)\\,dt + g(t, y)\\,dW$.

    **Arguments:**

    - `field`: the vector field, `field(t, y, args)`: a `neuralde.fields` field or any
        callable with diffrax's signature.
    - `y0`: the initial state: one example, or a batch of them (see `batched`); a
        tuple `(y0, z0)` for two-stream fields.
    - `t0`, `t1`: the interval. `t1=None` takes the field's own `t1` (1.0 for fields
        that carry none). `t1 < t0` integrates backwards in time.
    - `steps`, `dt0`, `rtol`, `atol`: the steps. One rule for every solver:
        - `steps=n`: `n` equal steps;
        - `dt0=h`: fixed steps of `h` (the last one shortened to end at `t1`; `h`
            has the sign of `t1 - t0`, as in diffrax);
        - `rtol=`/`atol=` (default `1e-5`/`1e-6`), or none of these four: adaptive
            steps (`diffrax.PIDController`), with `dt0`, if given, as the first
            step. They need a solver with an error estimate (`heun`, `midpoint`,
            `tsit5`, `dopri5`, `reversible_heun`, or a diffrax adaptive solver).
    - `solver`: one of `"euler"`, `"midpoint"`, `"heun"`, `"rk4"` (default),
        `"tsit5"`, `"dopri5"`, `"symplectic_euler"`, `"leapfrog"`,
        `"reversible_heun"`, or any `diffrax.AbstractSolver`. `symplectic_euler` and
        `leapfrog` need a two-stream field (`neuralde.fields.AbstractTwoStreamField`).
    - `gradient`: how reverse-mode derivatives are taken: a mode of
        [`neuralde.gradients`][], or its name:
        - `"discretize"` ([`neuralde.gradients.Discretize`][]): backpropagation
            through the solver's steps;
        - `"checkpoint"` ([`neuralde.gradients.Checkpoint`][]): the same gradient
            in $O(\\sqrt n)$ memory; `Checkpoint(checkpoints=k, levels=2)` sets it;
        - `"adjoint"` ([`neuralde.gradients.Adjoint`][]): the continuous adjoint
            solved backwards (optimise-then-discretise), for one-term solvers;
        - `"reversible"` ([`neuralde.gradients.Reversible`][]): the gradient of
            `"discretize"` in memory that does not grow with the steps, for
            reversible solvers (`symplectic_euler`, `leapfrog`, `reversible_heun`,
            `neuralde.ReversibleRK`);
        - or any `diffrax.AbstractAdjoint`.
    - `ts`: return the states at these times, stacked on a leading axis, rather than
        the state at `t1`. They must lie between `t0` and `t1` and run in the
        direction of integration.
    - `args`: passed to `field`.
    - `max_steps`: the most steps an adaptive solve may take.
    - `regularizers`: penalties integrated alongside the state, such as
        `neuralde.regularizers.KineticEnergy()` and `JacobianFrobenius()` (Finlay et
        al. 2020). They are extra components of the state, so every gradient mode
        differentiates them, the continuous adjoint included. Not with two-stream
        solvers (`symplectic_euler`, `leapfrog`), whose steps need each stream's rate
        to depend on the other stream only.
    - `diffusion`: $g(t, y, \\text{args})$ of an SDE, on one example. It returns
        a PyTree shaped like the state (diagonal noise: one Brownian motion per
        component), or a `lineax.AbstractLinearOperator` from the Brownian motion to
        the state (general noise; e.g. `lineax.MatrixLinearOperator(G)`). The
        Brownian motion is a `diffrax.VirtualBrownianTree` drawn from `key`: one key
        is one path, whatever the steps, and a batch gets independent paths. SDE
        solves take fixed steps, with an SDE solver:
        - `"euler"` (Euler–Maruyama) converges to the Itô solution, at strong order
            1/2 (1 for additive noise);
        - `"heun"`, `"midpoint"` and `"reversible_heun"` to the Stratonovich one, at
            strong order 1 for commutative noise, 1/2 in general;
        - `"shark"` and `"sea"` (Foster et al. 2023) assume additive noise, where the
            two calculi agree, and are of higher order;
        - any diffrax SDE solver.

        Every gradient mode differentiates the same path: `"discretize"`,
        `"checkpoint"`, `"reversible"` (exact, O(1) memory, with
        `"reversible_heun"`), and `"adjoint"`, diffrax's `BacksolveAdjoint` (the
        Stratonovich adjoint, so with a Stratonovich solver) on the same steps.
    - `calculus`: `"ito"` or `"stratonovich"`: the SDE meant, checked against the
        solver's (a mismatch raises). Default: the solver's.
    - `key`: the PRNG key of the Brownian motion, with `diffusion`; and of
        stochastic penalties (Hutchinson's estimator). A fresh one per training
        step.
    - `batched`: whether `y0` is a batch, with a leading batch axis on every leaf.
        The field acts on one example and is vmapped inside the solve. Default
        (`None`): a batch when the field declares the shape of one example
        (`field.state_shape()`, as the neuralde fields do) and `y0` has one more
        leading axis; pass `True` for a plain callable.

        A batch passed to `solve` is the fast way to batch every mode: the backward
        passes of `"adjoint"` and `"reversible"` (custom VJPs) then see the whole
        batch and sum the parameter gradient as they go. Under an outer `jax.vmap`
        they are correct but run per example, carrying one parameter cotangent per
        example at every step. (`"discretize"` and `"checkpoint"` have no custom
        VJP and are as fast either way.) With fixed steps a batched solve equals
        `jax.vmap` over the examples; with adaptive steps the batch shares one step
        size, chosen by the error of the whole batch, so it agrees with `jax.vmap`
        (one step size per example) to the tolerances only.

    **Returns:** the state at `t1`, shaped like `y0`; with `ts`, the states at `ts`.
    With `regularizers`, the pair `(y1, penalties)`, where `penalties[i]` is the
    integral of `regularizers[i]` over `[t0, t1]` (with `ts`: over `[t0, ts[k]]`,
    stacked).

    A state that becomes non-finite raises an error that names the time reached,
    inside `jit`, under `grad` and under `vmap` (naming the failing example's time).
    """
    mode = as_gradient(gradient)
    batched = is_batch(field, y0, batched)
    if diffusion is not None:
        if key is None:
            raise ValueError(
                "`diffusion` needs a PRNG `key=` to draw its Brownian motion: one key "
                "is one path (a fresh one per training step)."
            )
        if regularizers:
            raise ValueError(
                "`regularizers` are not integrated alongside an SDE: their "
                "components would need a diffusion of their own."
            )
    elif calculus is not None:
        raise ValueError("`calculus` is for SDEs: it needs `diffusion=`.")
    if regularizers and batched:
        raise ValueError(
            "`regularizers` integrate one penalty per example: use them on one "
            "example, batched with `jax.vmap`, rather than on a batch."
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
    elif key is not None and diffusion is None:
        raise ValueError(
            "`key` is used by `diffusion=` (the Brownian motion) and by stochastic "
            "`regularizers` only."
        )
    problem = setup(
        field,
        y0,
        t0=t0,
        t1=t1,
        steps=steps,
        dt0=dt0,
        solver=solver,
        gradient=mode,
        ts=ts,
        args=args,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
        batched=batched,
        diffusion=diffusion,
        calculus=calculus,
        key=key,
    )
    return _solve(mode, problem, y0)


# One compiled function for eager calls of the same shapes (a fresh closure per call
# would compile every time); inside the caller's `jit` it is inlined.
@eqx.filter_jit
def _solve(mode: AbstractGradient, problem: Integration, y0):
    return mode.solve(problem, y0)


def is_batch(field, y0, batched: bool | None) -> bool:
    """Whether `y0` is a batch: `batched`, or, when it is `None`, whether the field
    declares the shape of one example and every leaf of `y0` has one more leading
    axis."""
    if batched is not None:
        if not isinstance(batched, bool):
            raise TypeError(f"`batched` must be True, False or None, got {batched!r}.")
        return batched
    shape = field.state_shape() if isinstance(field, AbstractField) else None
    if shape is None:
        return False
    leaves = jtu.tree_leaves(y0)
    return bool(leaves) and all(
        jnp.ndim(x) == len(shape) + 1 and jnp.shape(x)[1:] == tuple(shape)
        for x in leaves
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
    gradient: AbstractGradient,
    ts,
    args,
    rtol=None,
    atol=None,
    max_steps=4096,
    batched=False,
    diffusion=None,
    calculus=None,
    key=None,
) -> Integration:
    """Validate the arguments of a solve: the `Integration` that `gradient` runs, its
    times in the state's dtype."""
    solver_obj = get_solver(solver)
    t1 = _default_t1(field, t1)
    _check_interval(t0, t1)
    dtype = _state_dtype(y0)
    if diffusion is not None:
        check_calculus(solver_obj, calculus)
        if steps is None and dt0 is None:
            raise ValueError(
                "SDE solves take fixed steps: pass `steps=` (equal steps) or `dt0=`."
            )
    adaptive = _check_steps(steps, dt0, rtol, atol, solver_obj, solver)
    max_steps = positive_int(max_steps, "max_steps")
    gradient.check(solver_obj, adaptive=adaptive, ts=ts is not None)
    terms = make_terms(field, solver_obj)
    t0 = _as_time(t0, dtype)
    t1 = _as_time(t1, dtype)
    if ts is not None:
        _check_ts(ts, t0, t1)
        ts = jnp.asarray(ts, dtype)
    if batched:
        check_field_output(field, t0, _first_example(y0), args)
        terms = jtu.tree_map(
            lambda term: dfx.ODETerm(Vmapped(term.vector_field)),
            terms,
            is_leaf=lambda x: isinstance(x, dfx.ODETerm),
        )
    else:
        check_field_output(field, t0, y0, args)
    if diffusion is not None:
        example = _first_example(y0) if batched else y0
        noise = noise_term(
            diffusion, y0, t0, t1, args, solver_obj, key=key, batched=batched,
            example=example,
        )  # fmt: skip
        terms = dfx.MultiTerm(terms, noise)
    if any(isinstance(t, jax.core.Tracer) for t in (t0, t1)):
        t1 = raise_if(
            t1,
            t1 == t0,
            0,
            ["neuralde: the interval is empty (t0 == t1); give t1 != t0."],
        )
    steps = None if steps is None else positive_int(steps, "steps")
    grid = None if adaptive else step_grid(t0, t1, steps, dt0, dtype)
    return Integration(
        terms,
        solver_obj,
        t0,
        t1,
        grid,
        ts,
        args,
        dt0=dt0 if adaptive else None,
        rtol=1e-5 if rtol is None else rtol,
        atol=1e-6 if atol is None else atol,
        max_steps=max_steps,
    )


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
        return  # checked inside `jit` by `setup`
    if float(t1) == float(t0):
        raise ValueError(
            f"The interval is empty: t0 = t1 = {float(t0)}. Give t1 > t0, or t1 < t0 "
            "to integrate backwards in time."
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


def _check_steps(steps, dt0, rtol, atol, solver, name) -> bool:
    """Validate the step options; returns whether the solve adapts its steps."""
    for value, what in ((rtol, "rtol"), (atol, "atol")):
        if value is not None and not (
            isinstance(value, jax.core.Tracer) or float(value) > 0
        ):
            raise ValueError(f"`{what}` must be positive, got {value!r}.")
    tolerances = rtol is not None or atol is not None
    if steps is not None:
        positive_int(steps, "steps")
        if dt0 is not None:
            raise ValueError(
                "Pass either `steps=` (the number of equal steps) or `dt0=` (the "
                f"step size), not both; got steps={steps!r}, dt0={dt0!r}."
            )
        if tolerances:
            raise ValueError(
                "`rtol`/`atol` make the steps adaptive, and `steps=` fixes them: "
                "pass one or the other."
            )
    if dt0 is not None and not isinstance(dt0, jax.core.Tracer):
        if not np.isfinite(float(dt0)) or float(dt0) == 0:
            raise ValueError(f"`dt0` must be a non-zero step size, got {dt0!r}.")
    adaptive = tolerances or (steps is None and dt0 is None)
    if adaptive and not has_error_estimate(solver):
        raise ValueError(
            f"{name!r} has no error estimate, so it cannot adapt its steps. Pass "
            "`steps=` (equal steps) or `dt0=` (fixed steps of that size), or use an "
            "adaptive solver such as 'tsit5' or 'dopri5' (with `rtol=`/`atol=`, or "
            "none of `steps`, `dt0`)."
        )
    if not adaptive:
        check_fixed_steps(solver)
    if not adaptive and isinstance(dt0, jax.core.Tracer):
        raise TypeError(
            "A fixed-step solve needs a concrete `dt0` to know its number of steps; "
            "pass `steps=` instead when the times are traced."
        )
    return adaptive


def _check_ts(ts, t0, t1) -> None:
    if jnp.ndim(ts) != 1 or jnp.shape(ts)[0] < 1:
        raise ValueError(
            f"`ts` must be a 1-D array of times, got shape {jnp.shape(ts)}."
        )
    if any(isinstance(x, jax.core.Tracer) for x in (ts, t0, t1)):
        return
    ts = np.asarray(ts, np.float64)
    sign = 1.0 if float(t1) > float(t0) else -1.0
    lo, hi = sorted((float(t0), float(t1)))
    if ts.min() < lo or ts.max() > hi or np.any(sign * np.diff(ts) <= 0):
        raise ValueError(
            f"`ts` must lie between t0 = {float(t0)} and t1 = {float(t1)} and run "
            f"strictly {'up' if sign > 0 else 'down'} from t0 to t1; got "
            f"{ts.tolist() if ts.size <= 8 else ts}."
        )
