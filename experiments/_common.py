"""What the experiment scripts share: their command-line options and output
directory, a record of the environment, and files written atomically (neuralde's
own writer), so that a reader never sees half a file.

Every script takes `--quick` (a smoke run), `--out DIR` and `--force`, and
`--publish`. By default it writes to `experiments/runs/<script>/`, which git
ignores, and refuses a directory that is not empty unless `--force`. Only
`--publish` writes the committed results, `experiments/results/<script>/`, from
which the documentation's Examples page is built.
"""

import argparse
import importlib.metadata
import io
import os
import pathlib
import platform

import jax

from neuralde._io import check_output, write_atomic, write_json  # noqa: F401


EXPERIMENTS = pathlib.Path(__file__).parent
RESULTS = EXPERIMENTS / "results"  # committed
RUNS = EXPERIMENTS / "runs"  # git-ignored


def arguments(doc: str, *, quick: str) -> argparse.ArgumentParser:
    """An argument parser described by the first paragraph of the script's
    docstring, with the options every experiment takes."""
    p = argparse.ArgumentParser(
        description=doc.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help=quick)
    p.add_argument(
        "--out",
        type=pathlib.Path,
        default=None,
        help="output directory (default: experiments/runs/<script>/); one that is "
        "not empty is refused unless --force",
    )
    p.add_argument("--force", action="store_true", help="write into a non-empty --out")
    p.add_argument(
        "--publish",
        action="store_true",
        help="replace the committed results, experiments/results/<script>/ (a full "
        "run: not with --quick or --out)",
    )
    return p


def output(args: argparse.Namespace, script: str, p: argparse.ArgumentParser):
    """The output directory of a run, checked and created (see the module's
    docstring). Errors exit through `p.error`, before any work."""
    name = pathlib.Path(script).stem
    if args.publish:
        if args.quick or args.out is not None:
            p.error(
                "--publish writes the committed results of a full run: drop "
                "--quick and --out."
            )
        out, force = RESULTS / name, True
    else:
        out, force = (args.out or RUNS / name), args.force
    try:
        out = check_output(out, force, what=f"the results of {name}")
    except FileExistsError as e:
        p.error(str(e))
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_bench(doc: str, script: str, settings: dict, quick: dict, argv=None) -> dict:
    """A script of `neuralde.bench`: the grid `settings`, with `quick` replacing
    some of them for `--quick`; the tables printed, the files in `output`."""
    from neuralde.bench import bench, summary

    quick_help = ", ".join(f"{k}={v}" for k, v in quick.items())
    p = arguments(doc, quick=f"a smoke run: {quick_help}")
    args = p.parse_args(argv)
    out = output(args, script, p)
    # `output` has checked the directory.
    results = bench(
        **(settings | quick if args.quick else settings),
        out=out,
        force=True,
        progress=False,
    )
    print(summary(results))
    return results


def command(script: str, args: argparse.Namespace) -> str:
    """The command that reproduces a run, for its results."""
    flags = " --quick" if args.quick else ""
    return f"python experiments/{pathlib.Path(script).name}{flags}"


def environment() -> dict:
    """Versions and the device, for `results.json`."""
    versions = {}
    for name in ("neuralde", "jax", "jaxlib", "equinox", "diffrax", "optax"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    device = jax.devices()[0]
    return dict(
        versions=versions,
        python=platform.python_version(),
        platform=device.platform,
        device=device.device_kind,
        cpu_count=os.cpu_count(),
        x64=bool(jax.config.jax_enable_x64),
    )


def write_text(path: pathlib.Path, text: str) -> None:
    write_atomic(pathlib.Path(path), text.encode())


def save_figure(fig, path: pathlib.Path, **kwargs) -> None:
    """Save a matplotlib figure as PNG, atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", **kwargs)
    write_atomic(pathlib.Path(path), buffer.getvalue())
