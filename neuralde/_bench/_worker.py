"""Peak memory of one point, in a process of its own.

`python -m neuralde._bench._worker` is a small server. It imports neuralde (which
starts no JAX backend), then reads jobs on stdin, forks a child for each and writes
the child's result on stdout. The child compiles the point's forward + gradient, runs
it once, and reports its peak resident set size and, where the backend reports it,
the device's peak memory. On Linux a forked child's `VmHWM` starts at its own
resident size, so each job is measured as in a fresh process, without paying for
Python and the imports each time.

A job is a pickled pair `(job, arrays)`: the description of the point (see
`neuralde._bench._run.memory_job`) and the arrays of its field and initial states,
which the child puts back in the structure it traces from the description. Each
message is preceded by its length in 8 bytes, big-endian.

`python -m neuralde._bench._worker --once` runs one job from stdin in this process
instead (where `fork` is not available).
"""

import json
import os
import pathlib
import pickle
import resource
import sys
import traceback

import neuralde  # noqa: F401  (imported once, before forking)

from ._wire import read_message, write_message


def peak_rss_bytes() -> int:
    """This process's peak resident set size. On Linux `ru_maxrss` survives `fork`
    and `exec` (a child would report its parent's peak), so read `VmHWM`."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def measure(job: dict, arrays: list) -> dict:
    # Allocate device memory on demand, so that the peak is what the job used.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import jax.tree_util as jtu

    from ._measure import compile_call
    from ._problem import Point, Problem
    from ._run import build, gradient_fn

    jax.config.update("jax_enable_x64", job["x64"])
    point = Point(Problem(**job["problem"]), job["gradient"], job["batching"])
    # The structure of the field and the states, traced without computing them.
    shapes = eqx.filter_eval_shape(build, point.problem, job["layers"], job["seed"])
    leaves, tree = jtu.tree_flatten(shapes)
    arrays = iter(arrays)
    leaves = [
        jnp.asarray(next(arrays)) if isinstance(x, jax.ShapeDtypeStruct) else x
        for x in leaves
    ]
    field, y0 = jtu.tree_unflatten(tree, leaves)
    compile_call(gradient_fn(point, **job["solve"]), field, y0).run()
    stats = jax.devices()[0].memory_stats() or {}
    return dict(
        peak_rss_bytes=peak_rss_bytes(),
        device_peak_bytes=stats.get("peak_bytes_in_use"),
    )


def _run(message: bytes) -> tuple[dict, int]:
    try:
        return measure(*pickle.loads(message)), 0
    except BaseException as e:
        traceback.print_exc()
        return dict(error=f"{type(e).__name__}: {e}".splitlines()[0]), 1


def _in_child(message: bytes, fd: int) -> None:
    """The forked child: measure, write the result to `fd`, and exit."""
    status = 1
    try:
        # stdout is the server's channel to its parent: keep the child off it.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        result, status = _run(message)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(result))
    finally:
        os._exit(status)


def serve() -> None:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while (message := read_message(stdin)) is not None:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            _in_child(message, write)
        os.close(write)
        with os.fdopen(read) as f:
            data = f.read()
        _, status = os.waitpid(pid, 0)
        if not data:
            data = json.dumps(dict(error=f"the worker died (wait status {status})"))
        write_message(stdout, data.encode())


if __name__ == "__main__":
    if sys.argv[1:] == ["--once"]:
        result, status = _run(read_message(sys.stdin.buffer))
        write_message(sys.stdout.buffer, json.dumps(result).encode())
        sys.exit(status)
    serve()
