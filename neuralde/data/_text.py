"""A character-level text corpus that ships with Python."""

import dataclasses
import hashlib
import importlib

import numpy as np

from .._checks import positive_int
from ._checks import check_fraction, check_split
from ._container import _Repr, Dataset


# Sections of the Python Language Reference, as shipped for `help()` in the
# standard library's `pydoc_data.topics`. These are the sections whose text is
# identical in CPython 3.10 to 3.13 (checked on 3.10.13, 3.11.2, 3.11.7, 3.12.1 and
# 3.13.0), in a fixed order; 49 101 characters in all.
_TOPICS = (
    "assert",
    "bitwise",
    "bltin-code-objects",
    "bltin-ellipsis-object",
    "bltin-null-object",
    "bltin-type-objects",
    "booleans",
    "break",
    "callable-types",
    "comparisons",
    "context-managers",
    "continue",
    "del",
    "dynamic-features",
    "else",
    "exceptions",
    "global",
    "id-classes",
    "if",
    "import",
    "in",
    "integers",
    "lambda",
    "pass",
    "return",
    "slicings",
    "typesfunctions",
    "typesmodules",
    "unary",
    "while",
    "with",
    "yield",
)


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class TextCorpus(_Repr):
    """A text as a sequence of character tokens, split into a training and a test
    part.

    **Attributes:**

    - `text`: the whole text.
    - `vocab`: the characters of the text, sorted; token `i` is `vocab[i]`.
    - `train`, `test`: int32 token arrays: the beginning of the text and its end.
    - `name`: the corpus' name.
    """

    text: str = dataclasses.field(repr=False)
    vocab: tuple[str, ...] = dataclasses.field(repr=False)
    train: np.ndarray
    test: np.ndarray
    name: str

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def sha256(self) -> str:
        """The SHA-256 of the UTF-8 text, to check that two corpora are the same."""
        return hashlib.sha256(self.text.encode()).hexdigest()

    def encode(self, text: str) -> np.ndarray:
        """The int32 tokens of `text`; a character outside the vocabulary raises a
        `ValueError`."""
        index = {c: i for i, c in enumerate(self.vocab)}
        try:
            return np.array([index[c] for c in text], dtype=np.int32)
        except KeyError as e:
            raise ValueError(
                f"The character {e.args[0]!r} is not in the corpus' vocabulary of "
                f"{self.vocab_size} characters; it cannot be encoded."
            ) from None

    def decode(self, tokens) -> str:
        """The text of integer `tokens`; a token outside `[0, vocab_size)` raises a
        `ValueError`."""
        tokens = np.asarray(tokens)
        if tokens.size and not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"Tokens must be integers, got dtype {tokens.dtype}.")
        tokens = tokens.reshape(-1)
        bad = (tokens < 0) | (tokens >= self.vocab_size)
        if bad.any():
            raise ValueError(
                f"Token {tokens[bad][0]} is outside the vocabulary [0, "
                f"{self.vocab_size}); it cannot be decoded."
            )
        return "".join(self.vocab[i] for i in tokens)

    def sequences(self, length: int, *, stride: int | None = None) -> Dataset:
        """Next-character prediction examples: windows of `length` tokens and the same
        windows shifted by one token, from the training and the test parts.

        **Arguments:**

        - `length`: the number of tokens in a window.
        - `stride`: the offset between the starts of consecutive windows. Default:
            `length`, non-overlapping windows. (Keyword only.)

        **Returns:** a [`neuralde.data.Dataset`][] whose `x` and `y` are int32
        `(num_windows, length)`, with `y[i, j] = x[i, j + 1]` for `j < length - 1`;
        `num_classes` is the vocabulary size and `class_names` the vocabulary.
        """
        length = positive_int(length, "length")
        stride = length if stride is None else positive_int(stride, "stride")
        xs, ys = [], []
        for part, tokens in (("training", self.train), ("test", self.test)):
            if len(tokens) < length + 1:
                raise ValueError(
                    f"The {part} part has {len(tokens)} tokens, too few for one window "
                    f"of length={length} and its shifted target; use a shorter length."
                )
            starts = np.arange(0, len(tokens) - length, stride)
            window = starts[:, None] + np.arange(length)
            xs.append(tokens[window])
            ys.append(tokens[window + 1])
        return Dataset(
            xs[0], ys[0], xs[1], ys[1], self.name, self.vocab_size, self.vocab
        )


def text_corpus(*, test_fraction: float = 0.1) -> TextCorpus:
    """A character-level corpus of 49 101 characters of English prose and Python
    grammar: 32 sections of the Python Language Reference (the statements
    `assert`, `if`, `while`, `with`, `import`, `yield`, ...; comparisons, integers,
    exceptions, ...), as shipped in the standard library's `pydoc_data.topics` for
    `help()`. Nothing is downloaded, and no dependency is needed.

    These sections are the ones whose text is identical in CPython 3.10 to 3.13
    (checked on 3.10.13, 3.11.2, 3.11.7, 3.12.1 and 3.13.0; SHA-256
    `e3fbdb5ba5b9ae14ab2ba9c6f61d87cb1c0e4de4739285d1eb71f44f42d51629`, see
    `TextCorpus.sha256`), so results compare across Python versions. The
    vocabulary holds the 92 characters of the whole text (so the test part never
    meets an unknown character), sorted by code point.

    **Split:** contiguous and deterministic, with no seed: the first
    `round((1 - test_fraction) * n)` characters are the training part, the rest
    the test part. A contiguous split keeps test windows unseen in training.

    **Arguments:** (keyword only)

    - `test_fraction`: the share of the text held out at its end, in $[0, 1)$.

    **Returns:** a [`neuralde.data.TextCorpus`][].
    """
    fraction = check_fraction(test_fraction)
    try:
        topics = importlib.import_module("pydoc_data.topics").topics
    except ImportError as e:
        raise ImportError(
            "The text corpus is read from the standard library's `pydoc_data`, "
            "which this Python installation lacks; install a complete Python."
        ) from e
    # A future Python that drops a section gives a shorter corpus, and a different
    # checksum, rather than an error.
    text = "\n".join(topics[k] for k in _TOPICS if k in topics)
    vocab = tuple(sorted(set(text)))
    n = len(text)
    n_test = round(fraction * n)
    check_split(n - n_test, n_test, fraction, n)
    index = {c: i for i, c in enumerate(vocab)}
    tokens = np.array([index[c] for c in text], dtype=np.int32)
    return TextCorpus(
        text, vocab, tokens[: n - n_test], tokens[n - n_test :], "python_reference"
    )
