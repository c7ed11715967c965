"""The `neuralde` command. Subcommands: `study` (the stability study) and `bench`
(the benchmark runner).

```bash
neuralde study [--quick] [--out DIR] [--force] ...
neuralde bench [--preset quick|paper|gpu] [--fields ...] [--out DIR] ...
python -m neuralde.cli study ...
```
"""

import argparse
import inspect
import os
import sys
from collections.abc import Sequence

from ._bench._registry import (
    ADAPTIVE,
    batching_name,
    BATCHINGS,
    dtype_name,
    DTYPES,
    field_name,
    FIELDS,
    gradient_name,
    solver_name,
)
from ._solvers import SOLVER_NAMES
from ._study._models import architecture_name, ARCHITECTURES
from ._study._problems import problem_name, PROBLEMS
from ._study._report import check_output, runs_table
from .gradients import GRADIENT_NAMES
from .study import configure, study


def _checked(check):
    """An argparse type from a check that raises `ValueError` with a message that
    lists the valid values."""

    def convert(text: str):
        try:
            return check(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = check.__name__
    return convert


_architecture = _checked(architecture_name)
_problem = _checked(problem_name)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _per_architecture(text: str) -> float | dict[str, float]:
    """`0.01`, or `NAME=VALUE[,NAME=VALUE...]` for values by architecture."""
    try:
        if "=" not in text:
            return float(text)
        pairs = (item.split("=", 1) for item in text.split(",") if item)
        return {_architecture(k.strip()): float(v) for k, v in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number or NAME=NUMBER[,NAME=NUMBER...], got {text!r}"
        ) from None


def _study_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "study",
        help="train and measure the architectures at several depths; write a report",
        description=(
            "Train and measure several architectures (field + solver) at several "
            "depths on a synthetic 2-D classification problem, run the 2-D example "
            "and the discretize-optimize vs optimize-discretize comparison, and "
            "write report.md, results.json and PNG figures to --out."
        ),
    )
    p.add_argument(
        "--problem",
        type=_problem,
        default="ellipses",
        help=f"one of {', '.join(PROBLEMS)} (default: ellipses)",
    )
    p.add_argument(
        "--architectures",
        nargs="+",
        type=_architecture,
        metavar="NAME",
        help=f"any of {', '.join(ARCHITECTURES)} (default: all; --quick: MLP "
        "Hamiltonian)",
    )
    p.add_argument(
        "--depths",
        nargs="+",
        type=_positive_int,
        metavar="N",
        help="numbers of layers (default: 4 16 64 256; --quick: 4 16)",
    )
    p.add_argument(
        "--steps",
        type=_positive_int,
        help="solver steps of every network, a multiple of each depth (default: one "
        "per layer)",
    )
    p.add_argument(
        "--epochs", type=_positive_int, help="training epochs (default 60; --quick: 2)"
    )
    p.add_argument(
        "--lr",
        type=_per_architecture,
        default=0.02,
        help="Adam learning rate, or NAME=LR[,NAME=LR...] by architecture (default "
        "0.02)",
    )
    p.add_argument(
        "--t1",
        type=_per_architecture,
        help="final time of the networks, or NAME=T[,NAME=T...] (default 4.0; "
        "Parabolic 2.0)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--seeds",
        type=_positive_int,
        help="trainings of each network, for the mean and spread over seeds "
        "(default 3; --quick: 1)",
    )
    p.add_argument(
        "--out",
        default="study-results",
        help="output directory (default: study-results)",
    )
    p.add_argument(
        "--force", action="store_true", help="write into a non-empty --out directory"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run of under a minute: 2 architectures, depths 4 and 16, "
        "2 epochs",
    )
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bar",
    )
    return p


def _steps(text: str) -> int | str:
    if text.lower() == ADAPTIVE:
        return ADAPTIVE
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or {ADAPTIVE!r}, got {text!r}"
        ) from None


def _bench_parser(sub) -> argparse.ArgumentParser:
    from .bench import ATOL, PRESETS, RTOL

    p = sub.add_parser(
        "bench",
        help="time and memory of solvers and gradient modes, against a hand-written "
        "scan",
        description=(
            "Benchmark neuralde on a grid of field x solver x gradient mode x "
            "batching x steps x batch x width x dtype: compile time, forward and "
            "forward + gradient time, XLA memory analysis, peak memory in a fresh "
            "process, steps and function evaluations of adaptive solves, each "
            "against a hand-written lax.scan of the same steps (and torchdiffeq "
            "where installed). Writes results.json, results.md and figures to "
            "--out. The options below "
            "replace an axis or setting of the preset."
        ),
    )
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        default="quick",
        help="quick: under three minutes on two CPU cores (default); engine: every "
        "gradient mode under both batchings against discretize; paper: every "
        "gradient mode, fixed and adaptive steps, dense, convolutional and graph "
        "fields, float32 and bfloat16; gpu: the same at sizes for an accelerator",
    )
    p.add_argument(
        "--fields",
        nargs="+",
        type=_checked(field_name),
        metavar="NAME",
        help=f"any of {', '.join(FIELDS)} {_preset_default('fields')}",
    )
    p.add_argument(
        "--solvers",
        nargs="+",
        type=_checked(solver_name),
        metavar="NAME",
        help=f"any of {', '.join(SOLVER_NAMES)} {_preset_default('solvers')}",
    )
    p.add_argument(
        "--gradients",
        nargs="+",
        type=_checked(gradient_name),
        metavar="NAME",
        help=f"any of {', '.join(GRADIENT_NAMES)} {_preset_default('gradients')}",
    )
    p.add_argument(
        "--batchings",
        nargs="+",
        type=_checked(batching_name),
        metavar="NAME",
        help=f"any of {', '.join(BATCHINGS)}: jax.vmap over a solve of one example, "
        f"or the batch passed to solve {_preset_default('batchings')}",
    )
    p.add_argument(
        "--steps",
        nargs="+",
        type=_steps,
        metavar="N",
        help=f"numbers of equal steps, or {ADAPTIVE!r} (tsit5, dopri5) "
        f"{_preset_default('steps')}",
    )
    p.add_argument(
        "--batch",
        nargs="+",
        type=_positive_int,
        metavar="N",
        help=f"examples per solve {_preset_default('batch')}",
    )
    p.add_argument(
        "--width",
        nargs="+",
        type=_positive_int,
        metavar="N",
        help="state sizes (channels of the convolutional fields, features per node "
        f"of the graph fields) {_preset_default('width')}",
    )
    p.add_argument(
        "--dtypes",
        nargs="+",
        type=_checked(dtype_name),
        metavar="NAME",
        help=f"any of {', '.join(DTYPES)}; one the backend cannot run is skipped "
        f"{_preset_default('dtypes')}",
    )
    p.add_argument(
        "--layers",
        type=_positive_int,
        help=f"layers of every field {_preset_default('layers')}",
    )
    p.add_argument(
        "--repeats",
        type=_positive_int,
        help=f"timed repeats per function, at most {_preset_default('repeats')}",
    )
    p.add_argument(
        "--budget",
        type=_positive_float,
        help="seconds of timed repeats per problem, roughly (at least 3 repeats) "
        f"{_preset_default('budget')}",
    )
    p.add_argument(
        "--rtol", type=_positive_float, help=f"of adaptive solves (default {RTOL:g})"
    )
    p.add_argument(
        "--atol", type=_positive_float, help=f"of adaptive solves (default {ATOL:g})"
    )
    p.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        help="measure peak memory in a fresh process per row "
        f"{_preset_default('memory')}",
    )
    p.add_argument(
        "--torch",
        action=argparse.BooleanOptionalAction,
        help=f"compare with torchdiffeq where installed {_preset_default('torch')}",
    )
    p.add_argument(
        "--torch-threads",
        type=_positive_int,
        metavar="N",
        help=f"torch's threads {_preset_default('torch_threads')}",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--out",
        default="bench-results",
        help="output directory (default: bench-results)",
    )
    p.add_argument(
        "--force", action="store_true", help="write into a non-empty --out directory"
    )
    p.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bar"
    )
    return p


def _preset_default(name: str) -> str:
    """`(default: the preset's; quick: ...)`, the quick preset's value of an axis or
    setting."""
    from .bench import PRESETS

    quick = PRESETS["quick"]
    if name in quick["settings"]:
        values = [quick["settings"][name]]
    else:
        values = [quick["axes"].get(name)] + [b.get(name) for b in quick["blocks"]]
        values = [v for v in values if v is not None]
        values = list(dict.fromkeys(x for v in values for x in v))
    return f"(default: the preset's; quick: {', '.join(map(str, values))})"


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


_NOT_CONFIG = ("out", "force", "progress")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `neuralde` command with `argv` (default: `sys.argv[1:]`). Returns the
    exit status; bad arguments exit with status 2, as argparse does."""
    parser = argparse.ArgumentParser(
        prog="neuralde",
        description="Continuous-time neural networks in JAX.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parsers = dict(study=_study_parser(sub), bench=_bench_parser(sub))
    args = parser.parse_args(argv)
    kwargs = vars(args)
    command = kwargs.pop("command")
    if command == "bench":
        return _bench(parsers["bench"], kwargs)
    try:
        configure(**{k: v for k, v in kwargs.items() if k not in _NOT_CONFIG})
        check_output(args.out, args.force)
    except (ValueError, FileExistsError) as e:
        parsers["study"].error(str(e))
    results = study(**kwargs)
    print(runs_table(results["runs"]))
    print(f"\nWrote {args.out}/report.md, results.json and figures.")
    return 0


def _bench(parser: argparse.ArgumentParser, kwargs: dict) -> int:
    # The memory workers run beside this process and need device memory of their
    # own: allocate on demand rather than take most of an accelerator up front.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    from ._bench._report import check_output as check_bench_output
    from .bench import bench, configure as configure_bench, summary

    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    config = inspect.signature(configure_bench).parameters
    try:
        configure_bench(**{k: v for k, v in kwargs.items() if k in config})
        check_bench_output(kwargs["out"], kwargs["force"])
    except (ValueError, FileExistsError) as e:
        parser.error(str(e))
    results = bench(**kwargs)
    print(summary(results))
    print(f"\nWrote {kwargs['out']}/results.md, results.json and figures.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
