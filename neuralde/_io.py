"""Files written atomically: a reader sees the old file or the new one, never half."""

import glob
import json
import math
import os
import pathlib
import socket
import uuid

import numpy as np


def write_atomic(path: pathlib.Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`:
    a reader sees the old file or the new one, never half of one.

    The file and then its directory are synced, so that the rename survives a
    crash. Temporary files of `path` left behind by killed writers on this host
    are removed first."""
    path = pathlib.Path(path)
    remove_stale_temporaries(path)
    # Not `tempfile.mkstemp`, whose files are private (0600): this one gets the
    # permissions of any new file (the umask).
    tmp = path.with_name(_temporary_name(path))
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            _sync(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)


def check_writable(path: pathlib.Path, *, what: str) -> None:
    """Raise now, rather than after hours of work, if `path` cannot be written:
    create the directory and a temporary file beside `path`, then remove it."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise IsADirectoryError(
            f"The {what} path {str(path)!r} is a directory; give a file name."
        )
    probe = path.with_name(_temporary_name(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(probe, "xb"):
            pass
    except OSError as e:
        raise PermissionError(
            f"Cannot write the {what} {str(path)!r}: {e.strerror or e}. Choose a "
            "path in a writable directory."
        ) from e
    probe.unlink(missing_ok=True)


def _temporary_name(path: pathlib.Path) -> str:
    return f".{path.name}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex}.tmp"


def remove_stale_temporaries(path: pathlib.Path) -> None:
    """Remove the temporary files of `path` whose writer, a process of this host,
    is no longer running (it was killed mid-write)."""
    prefix, host = f".{path.name}.", socket.gethostname()
    try:
        candidates = list(path.parent.glob(f"{glob.escape(prefix)}*.tmp"))
    except OSError:
        return
    for tmp in candidates:
        parts = tmp.name[len(prefix) :].rsplit(".", 3)
        if len(parts) != 4 or parts[0] != host or not parts[1].isdigit():
            continue
        if not _running(int(parts[1])):
            tmp.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _sync(f) -> None:
    f.flush()
    os.fsync(f.fileno())


def _sync_directory(directory: pathlib.Path) -> None:
    """fsync a directory, so that a rename in it is durable (POSIX; a no-op where
    directories cannot be opened or synced)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def jsonable(value):
    """`value` with NumPy and JAX scalars and arrays as Python numbers and lists,
    and non-finite floats as `None` (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if not isinstance(value, np.ndarray | np.generic) and hasattr(value, "__array__"):
        value = np.asarray(value)  # a JAX array
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
