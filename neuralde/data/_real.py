"""Real datasets that ship inside a dependency, so nothing is downloaded: the
handwritten digits of scikit-learn and Zachary's karate club from networkx."""

import importlib

import numpy as np

from ._checks import (
    check_finite,
    check_fraction,
    check_split,
    float_dtype,
    seed_int,
    split_indices,
)
from ._container import Dataset, GraphDataset


def _require(module: str, package: str, what: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{what} ships with {package}, which is not installed. Install it with "
            f"`pip install 'neuralde[data]'` (or `pip install {package}`)."
        ) from e


def digits(*, test_fraction: float = 0.2, seed: int = 0, dtype=np.float32) -> Dataset:
    """The handwritten digits of scikit-learn (`sklearn.datasets.load_digits`): 1797
    grey-scale images of 8 x 8 pixels, ten classes (the digits 0 to 9), from the
    UCI optical recognition of handwritten digits data set. The data ship with
    scikit-learn (the `data` extra): nothing is downloaded.

    Images are `(N, 1, 8, 8)` (one channel first, as `equinox.nn.Conv2d` expects),
    scaled from the original 0..16 to $[0, 1]$.

    **Split:** stratified: `round(test_fraction * n_c)` images of each class `c`,
    drawn with `np.random.default_rng(seed)`, are the test set, so both sets keep
    the class proportions; each set is in a random order.

    **Arguments:** (all keyword only)

    - `test_fraction`: the share of each class held out, in $[0, 1)$.
    - `seed`: seeds the split.
    - `dtype`: the floating dtype of the images (labels are int32).

    **Returns:** a [`neuralde.data.Dataset`][] with `num_classes=10`.
    """
    fraction = check_fraction(test_fraction)
    rng = np.random.default_rng(seed_int(seed))
    dtype = float_dtype(dtype)
    datasets = _require("sklearn.datasets", "scikit-learn", "The digits dataset")
    raw = datasets.load_digits()
    x = (np.asarray(raw.images, np.float64) / 16.0).astype(dtype)[:, None]
    y = np.asarray(raw.target).astype(np.int32)
    train, test = split_indices(len(y), fraction, rng, labels=y)
    check_split(len(train), len(test), fraction, len(y))
    return Dataset(
        x[train],
        y[train],
        x[test],
        y[test],
        "digits",
        10,
        tuple(str(c) for c in range(10)),
    )


# The faction each member joined after the split, as networkx's "club" attribute.
_FACTIONS = ("Mr. Hi", "Officer")


def karate_club(
    *,
    features="identity",
    train_nodes=(0, 33),
    dtype=np.float32,
) -> GraphDataset:
    """Zachary's karate club (Zachary 1977), from networkx
    (`networkx.karate_club_graph`, the `data` extra): 34 members, 78 friendships,
    and the two factions the club split into, the node labels: 0 for "Mr. Hi"
    (the instructor, node 0) and 1 for "Officer" (the administrator, node 33), as
    networkx's `club` attribute records them.

    **Split:** the standard semi-supervised one (Kipf & Welling 2017): only the two
    leaders, nodes 0 and 33, one of each faction, are labelled (the training set);
    the other 32 nodes are the test set. It involves no randomness.

    **Arguments:** (all keyword only)

    - `features`: `"identity"` (default): one-hot node identities, the 34 x 34
        identity matrix, so a model learns an embedding per node; or an array
        `(34, num_features)` of your own.
    - `train_nodes`: the labelled nodes; all others are the test set.
    - `dtype`: the floating dtype of the features.

    **Returns:** a [`neuralde.data.GraphDataset`][] with 34 nodes and 156 directed
    edges (each friendship in both directions), sorted by sender then receiver.
    """
    dtype = float_dtype(dtype)
    nx = _require("networkx", "networkx", "The karate club graph")
    graph = nx.karate_club_graph()
    n = graph.number_of_nodes()
    labels = np.array(
        [_FACTIONS.index(graph.nodes[i]["club"]) for i in range(n)], dtype=np.int32
    )
    edges = np.array(sorted(graph.edges()), dtype=np.int32).reshape(-1, 2)
    both = np.concatenate([edges, edges[:, ::-1]])
    both = both[np.lexsort((both[:, 1], both[:, 0]))]
    if isinstance(features, str) and features == "identity":
        nodes = np.eye(n, dtype=dtype)
    elif isinstance(features, str):
        raise ValueError(
            f'`features` must be "identity" or an array ({n}, num_features), got '
            f"{features!r}."
        )
    else:
        nodes = np.asarray(features)
        if nodes.ndim != 2 or nodes.shape[0] != n:
            raise ValueError(
                f"`features` must be an array ({n}, num_features), one row per "
                f"member, got shape {nodes.shape}."
            )
        if not np.issubdtype(nodes.dtype, np.number):
            raise TypeError(f"`features` must be numeric, got dtype {nodes.dtype}.")
        check_finite(nodes, "`features`")
        nodes = nodes.astype(dtype)
    train_mask = _node_mask(train_nodes, n)
    return GraphDataset(
        nodes,
        both[:, 0].copy(),
        both[:, 1].copy(),
        labels,
        train_mask,
        ~train_mask,
        "karate_club",
        2,
        _FACTIONS,
    )


def _node_mask(nodes, n):
    index = np.asarray(nodes)
    if (
        index.ndim != 1
        or index.size == 0
        or not np.issubdtype(index.dtype, np.integer)
        or index.min() < 0
        or index.max() >= n
        or len(np.unique(index)) != index.size
    ):
        raise ValueError(
            f"`train_nodes` must be a non-empty sequence of distinct node indices in "
            f"[0, {n}), got {nodes!r}."
        )
    mask = np.zeros(n, dtype=bool)
    mask[index] = True
    if mask.all():
        raise ValueError(
            "`train_nodes` lists every node, which leaves no test nodes; label fewer."
        )
    return mask
