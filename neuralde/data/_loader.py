"""Your own data as a [`neuralde.data.Dataset`][]: from arrays, `.npz` or CSV files."""

import csv
import os
from collections.abc import Callable, Sequence

import numpy as np

from ._checks import (
    check_finite,
    check_fraction,
    check_split,
    float_dtype,
    seed_int,
    split_indices,
)
from ._container import Dataset


def from_arrays(
    x,
    y,
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    shuffle: bool = True,
    stratify: bool = False,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    name: str = "data",
    dtype=np.float32,
) -> Dataset:
    """Split examples and targets into a [`neuralde.data.Dataset`][].

    Integer (or boolean) targets are class labels; floating-point targets are
    regression targets (`num_classes=None`).

    **Split:** `round(test_fraction * n)` examples are the test set. With `shuffle`
    (default) both sets are in a random order drawn from
    `np.random.default_rng(seed)`; without, the last examples are the test set and
    the order is kept (for data ordered in time). With `stratify`, that share of
    each class is held out, so both sets keep the class proportions.

    **Arguments:**

    - `x`: the features, `(n, ...)`: examples along the leading axis, at least one
        feature axis.
    - `y`: the targets, `(n,)` labels or `(n, ...)` regression targets.
    - `test_fraction`: the share held out, in $[0, 1)$; 0 for no test set.
    - `seed`: seeds the shuffle.
    - `shuffle`, `stratify`: see above; `stratify` needs class labels and `shuffle`.
    - `num_classes`: the number of classes, if more than the labels show
        (default: the largest label plus one).
    - `class_names`: a name for each class.
    - `name`: the dataset's name.
    - `dtype`: the floating dtype of the features (and regression targets).
        (All keyword only.)

    **Returns:** a [`neuralde.data.Dataset`][].

    **Raises:** `ValueError` when `x` and `y` hold different numbers of examples,
    when there are no examples, when a feature or target is NaN or infinite (the
    message names the row and column), and for labels out of range.
    """
    return _build(
        x,
        y,
        test_fraction=test_fraction,
        seed=seed,
        shuffle=shuffle,
        stratify=stratify,
        num_classes=num_classes,
        class_names=class_names,
        name=name,
        dtype=dtype,
    )


def _build(
    x,
    y,
    *,
    test_fraction,
    seed,
    shuffle,
    stratify,
    num_classes,
    class_names,
    name,
    dtype,
    columns=None,
    describe_row: Callable[[int], str] = str,
):
    fraction = check_fraction(test_fraction)
    rng = np.random.default_rng(seed_int(seed))
    dtype = float_dtype(dtype)
    x, y = np.asarray(x), np.asarray(y)
    for a, what in ((x, "x"), (y, "y")):
        if a.dtype.kind not in "biuf":
            raise TypeError(
                f"`{what}` must hold numbers, got an array of dtype {a.dtype}. Encode "
                f"text or categories as numbers first."
            )
    if x.ndim < 2:
        raise ValueError(
            f"`x` must have the examples on its leading axis and at least one feature "
            f"axis, got shape {x.shape}; for a single feature use `x[:, None]`."
        )
    if y.ndim < 1 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"`x` and `y` must hold the same number of examples (leading axis), got "
            f"{x.shape[0]} and {y.shape[0] if y.ndim else 'a scalar'}: x has shape "
            f"{x.shape} and y has shape {y.shape}."
        )
    n = x.shape[0]
    if n == 0:
        raise ValueError("The dataset is empty: `x` and `y` hold no examples.")
    if x[0].size == 0:
        raise ValueError(f"`x` has no features: its shape is {x.shape}.")
    check_finite(x, "`x`", columns=columns, describe_row=describe_row)
    check_finite(y, "`y`", describe_row=describe_row)
    classes = y.dtype.kind in "biu"
    if classes:
        num_classes = _num_classes(y, num_classes, class_names)
        y = y.astype(np.int32)
    else:
        if num_classes is not None or stratify:
            raise ValueError(
                f"`num_classes` and `stratify` need integer class labels, but `y` "
                f"is {y.dtype}; cast the labels with `y.astype(int)`."
            )
        y = y.astype(dtype)
    if stratify and not shuffle:
        raise ValueError("`stratify=True` needs `shuffle=True`.")
    train, test = split_indices(
        n, fraction, rng, labels=y if stratify else None, shuffle=shuffle
    )
    check_split(len(train), len(test), fraction, n)
    x = x.astype(dtype)
    return Dataset(
        x[train],
        y[train],
        x[test],
        y[test],
        name,
        num_classes,
        None if class_names is None else tuple(class_names),
    )


def _num_classes(y, num_classes, class_names):
    if y.ndim != 1:
        raise ValueError(
            f"Class labels `y` must be a vector (n,), got shape {y.shape}."
        )
    y = y.astype(np.int64)
    low, high = int(y.min()), int(y.max())
    if low < 0:
        raise ValueError(f"Class labels must be >= 0, got the label {low}.")
    if num_classes is None:
        num_classes = len(class_names) if class_names is not None else high + 1
    if num_classes <= high:
        raise ValueError(
            f"`num_classes={num_classes}` is too small for the label {high}; labels "
            f"must lie in [0, num_classes)."
        )
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(
            f"`class_names` must name each of the {num_classes} classes, got "
            f"{len(class_names)} names."
        )
    return num_classes


def load(
    path: str | os.PathLike,
    *,
    target: int | str = -1,
    header: bool | None = None,
    delimiter: str = ",",
    x_key: str = "x",
    y_key: str = "y",
    test_fraction: float = 0.2,
    seed: int = 0,
    shuffle: bool = True,
    stratify: bool = False,
    num_classes: int | None = None,
    name: str | None = None,
    dtype=np.float32,
) -> Dataset:
    """Load a dataset from a `.npz` or a CSV file and split it as
    [`neuralde.data.from_arrays`][] does.

    - **`.npz`** (`np.savez`): the arrays stored under `x_key` and `y_key`.
    - **CSV** (`.csv`, `.tsv`, `.txt`): one example per line; the column `target`
        holds the targets and every other column is a feature. An empty field
        reads as NaN, which is then refused with its row and column named. A target
        column of integers holds class labels; of text, class names (numbered in
        sorted order, kept in `class_names`); of other numbers, regression
        targets. Blank lines are skipped.

    **Arguments:**

    - `path`: the file; its suffix selects the format.
    - `target`: the target column of a CSV file: an index (default -1, the last)
        or a name from the header.
    - `header`: whether the first line of a CSV file names the columns. Default:
        it does when none of its fields reads as a number.
    - `delimiter`: the CSV field separator (default `","`; a tab for `.tsv`).
    - `x_key`, `y_key`: the names of the arrays in a `.npz` file.
    - `test_fraction`, `seed`, `shuffle`, `stratify`, `num_classes`, `dtype`: as for
        [`neuralde.data.from_arrays`][].
    - `name`: the dataset's name (default: the file's name without suffix).
        (All keyword only.)

    **Returns:** a [`neuralde.data.Dataset`][].
    """
    path = os.fspath(path)
    stem, suffix = os.path.splitext(os.path.basename(path))
    options = dict(
        test_fraction=test_fraction,
        seed=seed,
        shuffle=shuffle,
        stratify=stratify,
        num_classes=num_classes,
        name=stem if name is None else name,
        dtype=dtype,
    )
    suffix = suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as arrays:
            missing = [k for k in (x_key, y_key) if k not in arrays.files]
            if missing:
                raise ValueError(
                    f"{path!r} holds no array named {missing[0]!r}; it holds "
                    f"{sorted(arrays.files)}. Pass `x_key=` and `y_key=`."
                )
            x, y = arrays[x_key], arrays[y_key]
        return _build(x, y, class_names=None, **options)
    if suffix in (".csv", ".tsv", ".txt"):
        if suffix == ".tsv" and delimiter == ",":
            delimiter = "\t"
        return _load_csv(path, target, header, delimiter, options)
    raise ValueError(
        f"Cannot tell the format of {path!r} from its suffix {suffix!r}: expected "
        f".npz, .csv, .tsv or .txt."
    )


def _number(text):
    text = text.strip()
    return float("nan") if text == "" else float(text)


def _load_csv(path, target, header, delimiter, options):
    with open(path, newline="") as f:
        lines = [
            (i + 1, row)
            for i, row in enumerate(csv.reader(f, delimiter=delimiter))
            if any(cell.strip() for cell in row)
        ]
    if not lines:
        raise ValueError(f"The dataset is empty: {path!r} holds no data.")
    if header is None:
        header = not any(_is_number(cell) for cell in lines[0][1])
    width = len(lines[0][1])
    names = [c.strip() for c in lines[0][1]] if header else None
    rows = lines[1:] if header else lines
    if isinstance(target, str):
        if names is None or target not in names:
            raise ValueError(
                f"No column named {target!r} in {path!r}; its columns are "
                f"{names if names else 'unnamed (no header)'}."
            )
        target = names.index(target)
    elif not -width <= target < width:
        raise ValueError(
            f"`target={target}` is out of range for the {width} columns of {path!r}."
        )
    target %= width
    features = [j for j in range(width) if j != target]
    columns = None if names is None else [names[j] for j in features]
    x = np.empty((len(rows), len(features)))
    labels = []
    for r, (line, row) in enumerate(rows):
        if len(row) != width:
            raise ValueError(
                f"Line {line} of {path!r} has {len(row)} fields, expected {width}."
            )
        for k, j in enumerate(features):
            try:
                x[r, k] = _number(row[j])
            except ValueError:
                column = f"{k}" if columns is None else f"{k} ({columns[k]!r})"
                raise ValueError(
                    f"Cannot read {row[j]!r} as a number: feature row {r}, column "
                    f"{column} (line {line} of {path!r})."
                ) from None
        labels.append(row[target].strip())
    y, class_names = _targets(labels, rows, path)
    line_of = [line for line, _ in rows]
    return _build(
        x,
        y,
        class_names=class_names,
        columns=columns,
        describe_row=lambda r: f"{r} (line {line_of[r]} of {path!r})",
        **options,
    )


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _targets(labels, rows, path):
    if all(_is_number(v) or v == "" for v in labels):
        y = np.array([_number(v) for v in labels])
        if np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            return y.astype(np.int64), None
        return y, None
    for r, v in enumerate(labels):
        if v == "":
            raise ValueError(
                f"The target of row {r} (line {rows[r][0]} of {path!r}) is empty."
            )
    class_names = tuple(sorted(set(labels)))
    index = {c: i for i, c in enumerate(class_names)}
    return np.array([index[v] for v in labels], dtype=np.int64), class_names
