"""The `neuralde` command. Subcommands: `study` (more to come: `bench`, `train`).

```bash
neuralde study [--quick] [--out DIR] [--force] ...
python -m neuralde.cli study ...
```
"""

import argparse
import sys
from collections.abc import Sequence

from ._study._models import architecture_name, ARCHITECTURES
from ._study._problems import problem_name, PROBLEMS
from ._study._report import check_output, runs_table
from .study import configure, study


def _architecture(name: str) -> str:
    try:
        return architecture_name(name)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _problem(name: str) -> str:
    try:
        return problem_name(name)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


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


_NOT_CONFIG = ("out", "force", "progress")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `neuralde` command with `argv` (default: `sys.argv[1:]`). Returns the
    exit status; bad arguments exit with status 2, as argparse does."""
    parser = argparse.ArgumentParser(
        prog="neuralde",
        description="Continuous-time neural networks in JAX.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    study_parser = _study_parser(sub)
    args = parser.parse_args(argv)
    kwargs = vars(args)
    del kwargs["command"]
    try:
        configure(**{k: v for k, v in kwargs.items() if k not in _NOT_CONFIG})
        check_output(args.out, args.force)
    except (ValueError, FileExistsError) as e:
        study_parser.error(str(e))
    results = study(**kwargs)
    print(runs_table(results["runs"]))
    print(f"\nWrote {args.out}/report.md, results.json and figures.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
