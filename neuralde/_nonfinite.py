"""Errors for states that become non-finite: raised inside `jit`, under `grad` and
under `vmap`, naming the time where they appeared, at a trace cost that does not
grow with the number of steps."""

import dataclasses
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, Bool, Int, PyTree


_PREFIX = "neuralde: the state became non-finite"
_NONE = np.iinfo(np.int32).min


def all_finite(y: PyTree[Array]) -> Bool[Array, ""]:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jtu.tree_leaves(y)]
    return jnp.all(jnp.stack(leaves))


@dataclasses.dataclass(frozen=True)
class StepMessages(Sequence[str]):
    """The messages of `raise_if`: message `k` names step `n - k` (so that under
    `jax.vmap`, where equinox shows the largest index of the batch, the earliest
    failure is named), with its time when the grid is concrete.

    A lazy sequence rather than a tuple of `n` strings: formatting one message per
    step cost seconds of tracing at $10^6$ steps.
    """

    n: int
    t0: float | None
    t1: float | None
    dt: float | None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, k):
        step = self.n - int(k)
        where = f"in step {step} of {self.n}"
        if self.t0 is not None:
            if step >= self.n:
                t = self.t1
            elif self.dt is None:
                t = self.t0 + (self.t1 - self.t0) * (step / self.n)
            else:
                t = self.t0 + self.dt * step
            where += f", at t = {t:.6g}"
        return f"{_PREFIX} {where}."

    def index(self, bad: Int[Array, ""]) -> Int[Array, ""]:
        """The message index of the first non-finite step `bad` (`n` if none)."""
        return jnp.where(bad < self.n, self.n - 1 - bad, 0)


@dataclasses.dataclass(frozen=True)
class TimeMessages(Sequence[str]):
    """Messages that name a time carried in the index itself, as the bits of a
    float32: any time, with one message template, in O(1) trace."""

    what: str = "at t ="

    def __len__(self) -> int:
        return 2**32

    def __getitem__(self, k):
        t = np.asarray(int(k), np.int32).view(np.float32)
        return f"{_PREFIX} {self.what} {float(t):.6g}."

    @staticmethod
    def index(bad: Bool[Array, ""], t: Array) -> Int[Array, ""]:
        bits = jax.lax.bitcast_convert_type(jnp.asarray(t, jnp.float32), jnp.int32)
        return jnp.where(bad, bits, _NONE)


def raise_if(y: PyTree[Array], pred, index, msgs: Sequence[str]) -> PyTree[Array]:
    """`y`, or an error `msgs[index]` if `pred`.

    The error is threaded through a factor of exactly one that multiplies `y`, so
    that it is also part of the backward pass: under `jax.grad` the primal output is
    often unused, and an error attached to it alone would be removed as dead code.
    """
    leaves = jtu.tree_leaves(y)
    dtype = jnp.result_type(*leaves)
    one = eqx.branched_error_if(jnp.ones((), dtype), pred, index, msgs)
    return jtu.tree_map(lambda x: x * one.astype(x.dtype), y)


def raise_if_nonfinite_steps(
    y1: PyTree[Array],
    locate: Callable[[], Int[Array, ""]],
    msgs: StepMessages,
) -> PyTree[Array]:
    """`y1`, the result of a fixed-step loop, or an error naming the first step whose
    state was non-finite. `locate()` runs the steps again to find it; it is called
    only once `y1` is found non-finite, so the loop itself checks nothing per step
    (a non-finite state stays non-finite in the steps after it)."""
    bad = ~all_finite(y1)
    step = jax.lax.cond(
        eqx.internal.unvmap_any(bad),
        locate,
        lambda: jnp.asarray(msgs.n, jnp.int32),
    )
    return raise_if(y1, bad, msgs.index(jnp.where(bad, step, msgs.n)), msgs)


def step_messages(n: int, t0, t1, dt) -> StepMessages:
    """The messages of a grid of `n` steps, with times when they are concrete."""
    values = (t0, t1) if dt is None else (t0, t1, dt)
    if any(isinstance(x, jax.core.Tracer) for x in values):
        return StepMessages(n, None, None, None)
    return StepMessages(
        n,
        float(t0),
        float(t1),
        None if dt is None else float(dt),
    )
