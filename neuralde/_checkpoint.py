"""Training checkpoints: one file holding a JSON header, the serialised arrays and
a checksum of both, replaced atomically, plus a readable copy of the header beside
it."""

import hashlib
import io
import json
import os
import pathlib

import equinox as eqx
from jaxtyping import PyTree

from ._io import check_writable, jsonable, write_atomic


# The file: _MAGIC, the header's length (8 bytes, little-endian), the header (JSON),
# the arrays (`eqx.tree_serialise_leaves`), and the SHA-256 of everything before it.
_MAGIC = b"neuralde checkpoint v2\n"
_FAMILY = b"neuralde checkpoint v"
_DIGEST = 32


def save(path: str | os.PathLike, state: PyTree, metadata: dict) -> None:
    """Write `state` (a PyTree of arrays) and `metadata` (JSON) to `path`.

    The file is written to a temporary name and renamed over `path`, so a run
    killed mid-write leaves the previous checkpoint intact; its checksum lets
    `load` refuse a file damaged after it was written. `path` with the suffix
    `.json` gets a copy of the metadata, for people to read; loading uses the
    header inside the file only.
    """
    path = pathlib.Path(path)
    header = json.dumps(jsonable(metadata), allow_nan=False).encode()
    buffer = io.BytesIO()
    buffer.write(_MAGIC)
    buffer.write(len(header).to_bytes(8, "little"))
    buffer.write(header)
    eqx.tree_serialise_leaves(buffer, state)
    body = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, body + hashlib.sha256(body).digest())
    text = json.dumps(jsonable(metadata), indent=1, allow_nan=False) + "\n"
    write_atomic(path.with_name(path.name + ".json"), text.encode())


def check(path: str | os.PathLike) -> None:
    """Raise now if a checkpoint could not be written to `path`."""
    path = pathlib.Path(path)
    check_writable(path, what="checkpoint")
    check_writable(path.with_name(path.name + ".json"), what="checkpoint")


def load(path: str | os.PathLike, like: PyTree) -> tuple[PyTree, dict]:
    """Read a checkpoint written by `save`. `like` is a PyTree of the same structure,
    shapes and dtypes as the saved state.

    **Returns:** `(state, metadata)`.

    Raises `FileNotFoundError` for a missing file, and `ValueError` for a file that
    is not a checkpoint, is damaged (its checksum does not match: truncated,
    appended to or altered), or does not match `like`.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {str(path)!r}.")
    data = path.read_bytes()
    name = repr(str(path))
    if not data.startswith(_MAGIC):
        if data.startswith(_FAMILY):
            version = data[len(_FAMILY) :].split(b"\n", 1)[0].decode(errors="replace")
            raise ValueError(
                f"{name} is a neuralde checkpoint of format v{version}, which this "
                f"version (format v2, with a checksum) does not read."
            )
        raise ValueError(f"{name} is not a neuralde checkpoint.")
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    start = len(_MAGIC) + 8
    if len(data) < start + _DIGEST or hashlib.sha256(body).digest() != digest:
        raise ValueError(
            f"The checkpoint {name} is damaged: its checksum does not match its "
            "contents, so it was truncated, appended to or altered after it was "
            "written. Nothing was loaded; resume from another checkpoint or start "
            "again."
        )
    size = int.from_bytes(data[len(_MAGIC) : start], "little")
    metadata = json.loads(body[start : start + size])
    payload = io.BytesIO(body[start + size :])
    try:
        state = eqx.tree_deserialise_leaves(payload, like)
        leftover = payload.read()
    except (ValueError, RuntimeError) as e:
        raise ValueError(
            f"The checkpoint {name} does not match this model and optimiser "
            f"(different structure, shapes or dtypes): {e}"
        ) from e
    if leftover:
        raise ValueError(
            f"The checkpoint {name} does not match this model and optimiser: it "
            f"holds {len(leftover)} more bytes of arrays than they have."
        )
    return state, metadata
