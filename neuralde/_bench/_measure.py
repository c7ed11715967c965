"""Measurements: ahead-of-time compilation with XLA's memory analysis, interleaved
timing, the step statistics of adaptive solves, agreement with the reference, and
peak memory in a fresh process."""

import io
import json
import pickle
import queue
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from .._solvers import get_solver
from ._wire import read_message, write_message


MIN_REPEATS = 3


class Compiled(NamedTuple):
    """A function compiled ahead of time for fixed arguments.

    - `run`: `() -> outputs`, blocking until they are ready.
    - `trace_s`: seconds of tracing and lowering to StableHLO.
    - `compile_s`: seconds of XLA compilation.
    - `memory`: XLA's compiled memory analysis, in bytes (`argument`, `output`,
        `temp`, `alias`, `code`), or `None` where the backend has none.
    """

    run: Callable[[], object]
    trace_s: float
    compile_s: float
    memory: dict | None


def compile_call(fn, field, y0) -> Compiled:
    """Compile `fn(field, y0)` with `jax.jit`. The field's arrays are arguments, not
    constants, so that XLA cannot fold them into the program; its other leaves are
    static."""
    dynamic, static = eqx.partition(field, eqx.is_array)

    def call(dynamic, y0):
        return fn(eqx.combine(dynamic, static), y0)

    start = time.perf_counter()
    lowered = jax.jit(call).lower(dynamic, y0)
    traced = time.perf_counter()
    compiled = lowered.compile()
    done = time.perf_counter()
    return Compiled(
        run=lambda: jax.block_until_ready(compiled(dynamic, y0)),
        trace_s=traced - start,
        compile_s=done - traced,
        memory=memory_analysis(compiled),
    )


def memory_analysis(compiled) -> dict | None:
    try:
        m = compiled.memory_analysis()
    except (NotImplementedError, jax.errors.JaxRuntimeError):
        return None
    if m is None:
        return None
    return dict(
        argument=int(m.argument_size_in_bytes),
        output=int(m.output_size_in_bytes),
        temp=int(m.temp_size_in_bytes),
        alias=int(m.alias_size_in_bytes),
        code=int(m.generated_code_size_in_bytes),
    )


def seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def time_interleaved(
    runs: dict[str, Callable[[], object]],
    *,
    repeats: int,
    budget: float,
    slow: frozenset = frozenset(),
) -> dict[str, list[float]]:
    """Seconds per call of every function, timed interleaved: each repeat calls every
    function once, in an order rotated from repeat to repeat, so that a change of the
    machine's load affects all of them alike.

    Each function was called once before (compiled and checked). One more untimed
    call each warms it up and estimates the cost of a repeat. There are `repeats`
    repeats, or fewer (at least 3) where they would take much longer than `budget`
    seconds. The functions named in `slow` (another library's, for comparison)
    take part in the first repeats only, as many as a budget of their own allows, so
    that they do not leave the others too few.
    """
    cost = {name: seconds(run) for name, run in runs.items()}

    def count(names, limit):
        total = sum(cost[n] for n in names)
        return min(limit, max(MIN_REPEATS, int(budget / max(total, 1e-9))))

    fast = [n for n in runs if n not in slow]
    n_fast = count(fast, repeats) if fast else 0
    n_slow = count([n for n in runs if n in slow], max(n_fast, MIN_REPEATS))
    samples = {name: [] for name in runs}
    for r in range(max(n_fast, n_slow if slow else 0)):
        names = [n for n in runs if (r < n_slow if n in slow else r < n_fast)]
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(seconds(runs[name]))
    return samples


def summary(samples: list[float]) -> dict:
    """Median and spread of timed samples, in seconds."""
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return dict(
        median_s=statistics.median(samples),
        q1_s=q1,
        q3_s=q3,
        min_s=min(samples),
        max_s=max(samples),
        repeats=len(samples),
    )


def relative_error(a, b) -> float:
    """The largest difference of two PyTrees of arrays, relative to the largest
    entry of `b`."""
    leaves_a = jtu.tree_leaves(eqx.filter(a, eqx.is_inexact_array))
    leaves_b = jtu.tree_leaves(eqx.filter(b, eqx.is_inexact_array))
    diff = max(
        float(jnp.max(jnp.abs(x.astype(jnp.float32) - y.astype(jnp.float32))))
        for x, y in zip(leaves_a, leaves_b)
    )
    scale = max(float(jnp.max(jnp.abs(y.astype(jnp.float32)))) for y in leaves_b)
    return diff / scale if scale > 0 else diff


# ---------------------------------------------------------------------------------
# Adaptive solves: steps and function evaluations.


class _Counted(eqx.Module):
    """A vector field that reports each evaluation to a Python callback."""

    field: Callable
    tick: Callable = eqx.field(static=True)

    def __call__(self, t, y, args):
        jax.debug.callback(self.tick)
        return self.field(t, y, args)


def adaptive_stats(field, y0, solver: str, *, rtol, atol, max_steps) -> dict:
    """The steps and function evaluations of the adaptive solve of every example.

    The examples are solved one after the other (`lax.map`), each by
    `diffrax.diffeqsolve` with the controller of `neuralde.solve`
    (`PIDController(rtol, atol)`, diffrax's choice of the first step), on a field
    that counts its evaluations. Returns the largest and the mean number of steps
    (accepted and rejected) and of evaluations per example, and the final states,
    to check against `neuralde.solve`.
    """
    count = [0]

    def tick():
        count[0] += 1

    counted = _Counted(field, tick)
    solver_obj = get_solver(solver)

    def one(y):
        dtype = jnp.result_type(*jtu.tree_leaves(y))
        sol = dfx.diffeqsolve(
            dfx.ODETerm(counted),
            solver_obj,
            jnp.asarray(0.0, dtype),
            jnp.asarray(field.t1, dtype),
            None,
            y,
            saveat=dfx.SaveAt(t1=True),
            stepsize_controller=dfx.PIDController(rtol=rtol, atol=atol),
            max_steps=max_steps,
        )
        y1 = jtu.tree_map(lambda x: x[-1], sol.ys)
        return y1, sol.stats["num_accepted_steps"], sol.stats["num_rejected_steps"]

    y1, accepted, rejected = jax.jit(lambda y0: jax.lax.map(one, y0))(y0)
    jax.effects_barrier()  # every callback has run
    batch = len(np.asarray(accepted))
    steps = np.asarray(accepted) + np.asarray(rejected)
    return dict(
        steps_max=int(steps.max()),
        steps_mean=float(steps.mean()),
        rejected_max=int(np.asarray(rejected).max()),
        nfe_mean=count[0] / batch,
        y1=y1,
    )


# ---------------------------------------------------------------------------------
# Peak memory of one point in a process of its own.


class MemoryWorker:
    """A connection to `python -m neuralde._bench._worker`, which measures each job
    in a child forked for it (see that module). Where `fork` is not available, each
    job runs in a fresh `python` process instead."""

    def __init__(self):
        self.server = None
        if sys.platform.startswith("linux"):
            self.server = subprocess.Popen(
                [sys.executable, "-m", "neuralde._bench._worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )

    def measure(self, job: dict, arrays: list) -> dict:
        """Peak memory of `job`, whose field and initial states have the leaves
        `arrays`."""

        message = pickle.dumps((job, [np.asarray(x) for x in arrays]))
        if self.server is None:
            framed = len(message).to_bytes(8, "big") + message
            done = subprocess.run(
                [sys.executable, "-m", "neuralde._bench._worker", "--once"],
                input=framed,
                capture_output=True,
            )
            reply = read_message(io.BytesIO(done.stdout))
        else:
            write_message(self.server.stdin, message)
            reply = read_message(self.server.stdout)
        if not reply:
            raise RuntimeError("the memory worker exited")
        result = json.loads(reply)
        if "error" in result:
            raise RuntimeError(f"the memory worker failed: {result['error']}")
        return result

    def close(self) -> None:
        if self.server is not None:
            self.server.stdin.close()
            self.server.wait()
            self.server = None


class MemoryPool:
    """Peak-memory measurements in the background, by `lanes` workers at a time.

    The benchmark submits a problem's rows once they are timed, and waits for them
    before it times the next problem: the workers run while it compiles, never
    while it times.
    """

    def __init__(self, lanes: int):
        self.pool = ThreadPoolExecutor(lanes)
        self.idle = queue.SimpleQueue()
        self.started = []
        self.pending = []

    def _take(self) -> MemoryWorker:
        try:
            return self.idle.get_nowait()
        except queue.Empty:
            worker = MemoryWorker()
            self.started.append(worker)
            return worker

    def submit(self, row: dict, job: dict, arrays: list) -> None:
        """Measure `job` (see `MemoryWorker.measure`), and store the result in
        `row["peak_memory"]`, or a note saying why it could not be measured."""

        def one():
            worker = self._take()
            try:
                got = worker.measure(job, arrays)
                row["peak_memory"] = dict(
                    rss_bytes=got["peak_rss_bytes"],
                    device_bytes=got["device_peak_bytes"],
                )
            except RuntimeError as e:  # a failed measurement is a note, not a failure
                row["peak_memory"] = None
                row["note"] = f"peak memory not measured: {e}"
            finally:
                self.idle.put(worker)

        self.pending.append(self.pool.submit(one))

    def wait(self) -> None:
        for future in self.pending:
            future.result()
        self.pending.clear()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.pool.shutdown()
            for worker in self.started:
                worker.close()
