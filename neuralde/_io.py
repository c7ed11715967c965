"""Files written atomically: a reader sees the old file or the new one, never half."""

import json
import math
import os
import pathlib
import uuid

import numpy as np


def write_atomic(path: pathlib.Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`:
    a reader sees the old file or the new one, never half of one."""
    # Not `tempfile.mkstemp`, whose files are private (0600): this one gets the
    # permissions of any new file (the umask).
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


def jsonable(value):
    """`value` with NumPy scalars and arrays as Python numbers and lists, and
    non-finite floats as `None` (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: pathlib.Path, results: dict) -> None:
    text = json.dumps(jsonable(results), indent=1, allow_nan=False)
    write_atomic(path, (text + "\n").encode())


def check_output(out: str | os.PathLike, force: bool, *, what: str) -> pathlib.Path:
    """Refuse an output path that is a file, or a directory that holds files unless
    `force`; `what` names the files that would be overwritten."""
    path = pathlib.Path(out)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"The output path {str(path)!r} exists and is a file.")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise FileExistsError(
            f"The output directory {str(path)!r} exists and is not empty. Choose "
            f"another one, or pass `force=True` (`--force`) to overwrite {what} in "
            "it."
        )
    return path
