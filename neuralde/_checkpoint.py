"""Training checkpoints: one file holding a JSON header and the serialised arrays,
replaced atomically, plus a readable copy of the header beside it."""

import io
import json
import os
import pathlib

import equinox as eqx
from jaxtyping import PyTree

from ._io import jsonable, write_atomic


_MAGIC = b"neuralde checkpoint v1\n"


def save(path: str | os.PathLike, state: PyTree, metadata: dict) -> None:
    """Write `state` (a PyTree of arrays) and `metadata` (JSON) to `path`.

    The arrays go through `eqx.tree_serialise_leaves`. The file is written to a
    temporary name and renamed over `path`, so a run killed mid-write leaves the
    previous checkpoint intact. `path` with the suffix `.json` gets a copy of the
    metadata, for people to read; loading uses the header inside the file only.
    """
    path = pathlib.Path(path)
    header = json.dumps(jsonable(metadata), allow_nan=False).encode()
    buffer = io.BytesIO()
    buffer.write(_MAGIC)
    buffer.write(len(header).to_bytes(8, "little"))
    buffer.write(header)
    eqx.tree_serialise_leaves(buffer, state)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buffer.getvalue())
    text = json.dumps(jsonable(metadata), indent=1, allow_nan=False) + "\n"
    write_atomic(path.with_name(path.name + ".json"), text.encode())


def load(path: str | os.PathLike, like: PyTree) -> tuple[PyTree, dict]:
    """Read a checkpoint written by `save`. `like` is a PyTree of the same structure,
    shapes and dtypes as the saved state.

    **Returns:** `(state, metadata)`.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {str(path)!r}.")
    with open(path, "rb") as f:
        if f.read(len(_MAGIC)) != _MAGIC:
            raise ValueError(f"{str(path)!r} is not a neuralde checkpoint.")
        size = int.from_bytes(f.read(8), "little")
        metadata = json.loads(f.read(size))
        try:
            state = eqx.tree_deserialise_leaves(f, like)
        except (ValueError, RuntimeError) as e:
            raise ValueError(
                f"The checkpoint {str(path)!r} does not match this model and "
                f"optimiser (different structure, shapes or dtypes): {e}"
            ) from e
    return state, metadata
