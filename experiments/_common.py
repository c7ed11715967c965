"""What the experiment scripts share: their output directory, a record of the
environment, and files written atomically (a temporary file in the same directory,
then `os.replace`), so that a reader never sees half a file."""

import importlib.metadata
import io
import json
import math
import os
import pathlib
import platform
import uuid

import jax
import numpy as np


RESULTS = pathlib.Path(__file__).parent / "results"


def default_out(script: str) -> pathlib.Path:
    """`experiments/results/<script name without .py>/`."""
    return RESULTS / pathlib.Path(script).stem


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


def write_bytes(path: pathlib.Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: pathlib.Path, text: str) -> None:
    write_bytes(path, text.encode())


def jsonable(value):
    """`value` with NumPy and JAX scalars and arrays as Python numbers and lists, and
    non-finite floats as `None` (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, jax.Array):
        value = np.asarray(value)
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: pathlib.Path, results: dict) -> None:
    text = json.dumps(jsonable(results), indent=1, allow_nan=False)
    write_text(path, text + "\n")


def save_figure(fig, path: pathlib.Path, **kwargs) -> None:
    """Save a matplotlib figure as PNG, atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", **kwargs)
    write_bytes(path, buffer.getvalue())
