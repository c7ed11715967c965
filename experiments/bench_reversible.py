"""Time and memory of the gradient modes on a deep Hamiltonian network.

Problem (Chang et al. 2018): a `Hamiltonian` field with streams of 32 and width 64,
8 parameter layers, symplectic Euler, a batch of 256 by `jax.vmap`, float32, forward
+ gradient of a mean-square loss with respect to all parameters, at 100, 1 000 and
10 000 steps. Modes: `"reversible"` (under an outer `jax.vmap`, and as one
`solve(..., batched=True)` call), `"discretize"`, and `"checkpoint"` with a few
checkpoint counts. (`"adjoint"` does not apply: diffrax's backsolve refuses the
two-term symplectic solver.)

Two measurements:

- time: medians over repeats after compilation, all modes of one step count
  interleaved in one process, as ratios to `"discretize"`;
- memory: each configuration in a fresh process, its peak resident set size, and
  XLA's compiled `memory_analysis()` (the temporary buffers of the gradient).

Run from the repository root:

    python experiments/bench_reversible.py            # full: a few minutes
    python experiments/bench_reversible.py --steps 100 1000 --repeats 5

Writes `experiments/results/bench_reversible.json` and a markdown table
(`bench_reversible.md`) next to it.
"""

import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

import neuralde as nde


BATCH, DIM, WIDTH, LAYERS = 256, 32, 64, 8
RESULTS = pathlib.Path(__file__).parent / "results"


def modes(steps: int) -> list[tuple[str, int | None, bool]]:
    """(gradient, checkpoints, batched): `batched=True` solves the batch in one
    `solve(..., batched=True)` call instead of an outer `jax.vmap`."""
    counts = sorted({max(2, round(steps**0.5)), max(2, steps // 10)})
    return [
        ("reversible", None, True),
        ("reversible", None, False),
        ("discretize", None, False),
    ] + [("checkpoint", c, False) for c in counts]


def make(steps: int, gradient: str, checkpoints: int | None, batched: bool):
    """The jitted forward + gradient, and its arguments."""
    fkey, ykey = jr.split(jr.PRNGKey(0))
    field = nde.fields.Hamiltonian(
        DIM, WIDTH, layers=LAYERS, dtype=jnp.float32, key=fkey
    )
    y0 = jr.normal(ykey, (BATCH, DIM), jnp.float32)

    def loss(field, y0):
        def run(y):
            return nde.solve(
                field,
                (y, jnp.zeros_like(y)),
                steps=steps,
                solver="symplectic_euler",
                gradient=gradient,
                checkpoints=checkpoints,
                batched=batched,
            )

        y1, z1 = run(y0) if batched else jax.vmap(run)(y0)
        return jnp.mean(y1**2) + jnp.mean(z1**2)

    return eqx.filter_jit(eqx.filter_value_and_grad(loss)), (field, y0)


def label(gradient: str, checkpoints: int | None, batched: bool) -> str:
    name = gradient if checkpoints is None else f"checkpoint({checkpoints})"
    return name + (", batched=True" if batched else "")


def time_modes(steps: int, repeats: int) -> dict[str, dict]:
    """Compile every mode, then time them round-robin; medians in seconds."""
    fns, out = {}, {}
    for gradient, c, batched in modes(steps):
        fn, args = make(steps, gradient, c, batched)
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        name = label(gradient, c, batched)
        out[name] = {"compile_and_first_s": time.perf_counter() - t}
        fns[name] = (fn, args)
    samples = {k: [] for k in fns}
    for _ in range(repeats):
        for k, (fn, args) in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(fn(*args))
            samples[k].append(time.perf_counter() - t)
    for k, s in samples.items():
        out[k].update(median_s=statistics.median(s), min_s=min(s), max_s=max(s))
    return out


def memory_worker(
    steps: int, gradient: str, checkpoints: int | None, batched: bool
) -> dict:
    """Run in a fresh process: XLA's temp bytes and the peak RSS of one gradient."""
    fn, args = make(steps, gradient, checkpoints, batched)
    params, static = eqx.partition(args, eqx.is_array)

    def call(params):
        return fn(*eqx.combine(params, static))

    analysis = jax.jit(call).lower(params).compile().memory_analysis()
    jax.block_until_ready(fn(*args))
    return {
        "temp_bytes": int(analysis.temp_size_in_bytes),
        "peak_rss_bytes": peak_rss_bytes(),
    }


def peak_rss_bytes() -> int:
    """This process's peak resident set size. On Linux `ru_maxrss` survives `fork`
    and `exec` (a worker would report its parent's peak), so read `VmHWM`, which
    starts afresh with each program."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_modes(steps: int) -> dict[str, dict]:
    out = {}
    for gradient, c, batched in modes(steps):
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            str(steps),
            gradient,
            str(c),
            str(batched),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        name = label(gradient, c, batched)
        out[name] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def write_atomic(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as f:
        f.write(text)
    os.replace(f.name, path)


def table(results: dict) -> str:
    lines = [
        "| steps | mode | time (s) | time / discretize | XLA temp (MiB) | "
        "peak RSS (MiB) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for steps, rows in results["runs"].items():
        ref = rows["discretize"]["median_s"]
        for mode, r in rows.items():
            lines.append(
                f"| {steps} | {mode} | {r['median_s']:.4f} | "
                f"{r['median_s'] / ref:.2f} | {r['temp_bytes'] / 2**20:.2f} | "
                f"{r['peak_rss_bytes'] / 2**20:.0f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        steps, gradient, c, batched = args.worker
        c = None if c == "None" else int(c)
        print(json.dumps(memory_worker(int(steps), gradient, c, batched == "True")))
        return
    results = {
        "problem": dict(
            batch=BATCH,
            dim=DIM,
            width=WIDTH,
            layers=LAYERS,
            solver="symplectic_euler",
            dtype="float32",
        ),
        "environment": dict(
            jax=jax.__version__, device=str(jax.devices()[0]), cpu_count=os.cpu_count()
        ),
        "runs": {},
    }
    for steps in args.steps:
        repeats = max(3, args.repeats if steps < 10000 else args.repeats // 2)
        rows = time_modes(steps, repeats)
        for k, mem in memory_modes(steps).items():
            rows[k].update(mem)
        results["runs"][steps] = rows
        print(f"done: {steps} steps", file=sys.stderr)
    write_atomic(RESULTS / "bench_reversible.json", json.dumps(results, indent=1))
    write_atomic(RESULTS / "bench_reversible.md", table(results) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
