"""The containers the datasets return: frozen dataclasses of NumPy arrays."""

import dataclasses
from collections.abc import Iterator, Mapping

import numpy as np


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype}{list(value.shape)}"
    if isinstance(value, tuple) and len(value) > 10:
        return f"tuple[{len(value)}]"
    return repr(value)


class _Repr:
    def __repr__(self):
        fields = ", ".join(
            f"{f.name}={_describe(getattr(self, f.name))}"
            for f in dataclasses.fields(self)
            if f.repr
        )
        return f"{type(self).__name__}({fields})"


def _rows(a: np.ndarray) -> int:
    return a.shape[0] if a.ndim else 0


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dataset(_Repr):
    """Examples and targets, split into a training and a test set.

    It unpacks as its four arrays, and `train` and `test` give the pairs:

    ```python
    x_train, y_train, x_test, y_test = nde.data.moons(seed=0)
    data = nde.data.moons(seed=0)
    x, y = data.train
    ```

    Examples lie along the leading axis of every array. Features are floating point
    (float32 unless asked otherwise); class labels are int32 indices in
    `[0, num_classes)`, and regression targets are floating point with
    `num_classes=None`.

    **Attributes:**

    - `x_train`, `x_test`: the features, `(n_train, ...)` and `(n_test, ...)`.
    - `y_train`, `y_test`: the targets, `(n_train, ...)` and `(n_test, ...)`.
    - `name`: the dataset's name.
    - `num_classes`: the number of classes; `None` for regression.
    - `class_names`: a name for each class, where the data have them, else `None`.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None

    def __post_init__(self):
        for x, y, split in (
            (self.x_train, self.y_train, "train"),
            (self.x_test, self.y_test, "test"),
        ):
            if _rows(x) != _rows(y):
                raise ValueError(
                    f"`x_{split}` and `y_{split}` must hold the same number of "
                    f"examples (leading axis), got {_rows(x)} and {_rows(y)}."
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                "Training and test examples must have the same shape, got "
                f"{self.x_train.shape[1:]} and {self.x_test.shape[1:]}."
            )

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.x_train, self.y_train, self.x_test, self.y_test))

    @property
    def train(self) -> tuple[np.ndarray, np.ndarray]:
        """`(x_train, y_train)`."""
        return self.x_train, self.y_train

    @property
    def test(self) -> tuple[np.ndarray, np.ndarray]:
        """`(x_test, y_test)`."""
        return self.x_test, self.y_test


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class GraphDataset(_Repr):
    """One graph whose nodes are classified, split into labelled (training) and
    unlabelled (test) nodes: the transductive, semi-supervised setting, in which a
    model sees every node and edge and the loss sees only the training labels.

    The edge list follows jraph: edge `k` runs from node `senders[k]` to node
    `receivers[k]`, and an undirected graph lists every edge in both directions.

    **Attributes:**

    - `nodes`: node features, `(num_nodes, num_features)`.
    - `senders`, `receivers`: int32 edge endpoints, `(num_edges,)`.
    - `labels`: int32 class of each node, `(num_nodes,)`.
    - `train_mask`, `test_mask`: boolean `(num_nodes,)`; disjoint, and together
        they cover every node.
    - `name`, `num_classes`, `class_names`: as for [`neuralde.data.Dataset`][].
    """

    nodes: np.ndarray
    senders: np.ndarray
    receivers: np.ndarray
    labels: np.ndarray
    train_mask: np.ndarray
    test_mask: np.ndarray
    name: str
    num_classes: int
    class_names: tuple[str, ...] | None = None

    @property
    def num_nodes(self) -> int:
        return self.nodes.shape[0]

    @property
    def num_edges(self) -> int:
        """The number of directed edges (twice the undirected count)."""
        return self.senders.shape[0]

    @property
    def train_index(self) -> np.ndarray:
        """The indices of the training nodes."""
        return np.flatnonzero(self.train_mask)

    @property
    def test_index(self) -> np.ndarray:
        """The indices of the test nodes."""
        return np.flatnonzero(self.test_mask)


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class TimeSeries(_Repr):
    """Trajectories of an ODE sampled at shared times, split by initial condition:
    the training and test trajectories start from different, independently drawn
    states.

    It unpacks as `ts, y_train, y_test`, the observations a model is fitted to;
    `clean_train` and `clean_test` are the exact trajectories, for evaluation.

    **Attributes:**

    - `ts`: the observation times, `(num_times,)`, from 0.
    - `y_train`, `y_test`: noisy observations, `(n, num_times, state_dim)`: the
        exact states plus independent Gaussian noise of standard deviation `noise`.
    - `clean_train`, `clean_test`: the exact trajectories, same shapes; the first
        time is the initial condition.
    - `name`: the system's name.
    - `noise`: the standard deviation of the observation noise.
    - `state_names`: the name of each state component.
    - `params`: the system's parameters.
    """

    ts: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    clean_train: np.ndarray
    clean_test: np.ndarray
    name: str
    noise: float
    state_names: tuple[str, ...]
    params: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.ts, self.y_train, self.y_test))
