"""Datasets that need no download: NumPy arrays with a documented train/test split
and a seed.

- **Synthetic classification** from the literature on stable networks, planar and
    liftable to more dimensions: [`ellipses`][neuralde.data.ellipses],
    [`swiss_roll`][neuralde.data.swiss_roll], [`peaks`][neuralde.data.peaks],
    [`spirals`][neuralde.data.spirals], [`moons`][neuralde.data.moons],
    [`circles`][neuralde.data.circles], and [`lift`][neuralde.data.lift].
- **Time series** of known ODEs for continuous-time regression, integrated to
    near round-off: [`harmonic_oscillator`][neuralde.data.harmonic_oscillator],
    [`damped_oscillator`][neuralde.data.damped_oscillator],
    [`lotka_volterra`][neuralde.data.lotka_volterra],
    [`pendulum`][neuralde.data.pendulum],
    [`double_pendulum`][neuralde.data.double_pendulum].
- **Real data shipped inside a dependency:** scikit-learn's handwritten
    [`digits`][neuralde.data.digits], networkx's
    [`karate_club`][neuralde.data.karate_club] graph (install both with
    `pip install 'neuralde[data]'`), and a character-level
    [`text_corpus`][neuralde.data.text_corpus] from Python's standard library.
- **Your data:** [`from_arrays`][neuralde.data.from_arrays] and
    [`load`][neuralde.data.load] (`.npz`, CSV).

Conventions:

- Every function returns a frozen container of NumPy arrays:
    [`Dataset`][neuralde.data.Dataset] (`x_train, y_train, x_test, y_test`, which it
    unpacks as), [`TimeSeries`][neuralde.data.TimeSeries],
    [`GraphDataset`][neuralde.data.GraphDataset] or
    [`TextCorpus`][neuralde.data.TextCorpus]. Examples lie along the leading axis;
    JAX takes the arrays as they are (`jnp.asarray`), and a mini-batch is an index
    array drawn with an explicit PRNG key.
- Randomness comes from `np.random.default_rng(seed)` only, `seed` a keyword
    argument (default 0): the same seed gives the same arrays, bit for bit.
- Features are float32 unless `dtype=` says otherwise; class labels are int32.
- Arguments are keyword only. Bad input raises a `ValueError` or `TypeError` that
    says what was expected and what was given.
"""

from ._container import (
    Dataset as Dataset,
    GraphDataset as GraphDataset,
    TimeSeries as TimeSeries,
)
from ._loader import from_arrays as from_arrays, load as load
from ._real import digits as digits, karate_club as karate_club
from ._synthetic import (
    circles as circles,
    ellipses as ellipses,
    lift as lift,
    moons as moons,
    peaks as peaks,
    spirals as spirals,
    swiss_roll as swiss_roll,
)
from ._text import text_corpus as text_corpus, TextCorpus as TextCorpus
from ._timeseries import (
    damped_oscillator as damped_oscillator,
    double_pendulum as double_pendulum,
    harmonic_oscillator as harmonic_oscillator,
    lotka_volterra as lotka_volterra,
    pendulum as pendulum,
)
