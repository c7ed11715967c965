"""Character-level language models on the Python Language Reference: a small GPT
and the same transformer as an ODE.

Both models share the front and the back: a token embedding plus sinusoidal
positions, and a final LayerNorm with a linear head that scores the next character.
In between,

- **GPT** (`nde.nn.GPT`): `layers` causal pre-LN transformer blocks,
    $X \\mapsto H = X + \\operatorname{Attn}(\\operatorname{LN}(X))$,
    $H + \\operatorname{FFN}(\\operatorname{LN}(H))$;
- **attention ODE**: $\\dot X = \\operatorname{Attn}_k(\\operatorname{LN}(X)) +
    \\operatorname{FFN}_k(\\operatorname{LN}(X))$ (`nde.fields.Attention`, causal,
    parameters piecewise constant over `layers` time intervals of `[0, layers]`),
    integrated by `nde.nn.ODEBlock` with one explicit Euler step per interval. It has
    exactly the GPT's number of parameters and evaluates each attention and each
    feed-forward layer once per forward pass, as the GPT does; the differences are
    the parallel branches (both read the same state) and the field's bounded `tanh`
    feed-forward activation (GPT: `gelu`).

Both are trained with `nde.train.fit` on the next-character loss
(`nde.losses.next_token`) over windows of the training text, evaluated on the
held-out end of the text (each test character predicted once), and compared with a
unigram and a bigram model of the training text. The trained ODE is then integrated
with finer and higher-order solvers than it was trained with, to see whether it
learned a flow or a map tied to its Euler steps. Samples continue a prompt with an
explicit PRNG key.

    python experiments/char_gpt.py            # the full run (a few minutes on 2 CPUs)
    python experiments/char_gpt.py --quick    # a tiny smoke test
"""

import math
import pathlib
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import matplotlib
import numpy as np
import optax

import neuralde as nde


matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _common  # noqa: E402
from _common import arguments, output  # noqa: E402


FULL = dict(
    d_model=64,
    heads=4,
    layers=2,
    context=64,
    stride=8,
    batch_size=32,
    steps=600,
    lr=3e-3,
    warmup=50,
    weight_decay=0.01,
    eval_every=50,
    sample_len=300,
    refine=True,
    quick=False,
)
QUICK = dict(
    d_model=16,
    heads=2,
    layers=1,
    context=16,
    stride=16,
    batch_size=8,
    steps=6,
    lr=3e-3,
    warmup=2,
    weight_decay=0.01,
    eval_every=3,
    sample_len=24,
    refine=False,
    quick=True,
)


class ODELanguageModel(eqx.Module):
    """Embedding and sinusoidal positions -> `ODEBlock(Attention)` -> LayerNorm ->
    linear head; the continuous-time counterpart of `nde.nn.GPT`."""

    embedding: eqx.nn.Embedding
    block: nde.nn.ODEBlock
    norm: eqx.nn.LayerNorm
    head: eqx.nn.Linear
    # `nde.nn.generate` reads the longest sequence a model takes from `max_len`.
    max_len: int = eqx.field(static=True)

    def __init__(self, vocab_size, d_model, heads, layers, *, max_len, key):
        ekey, fkey, hkey = jr.split(key, 3)
        self.embedding = eqx.nn.Embedding(vocab_size, d_model, key=ekey)
        # t1 = layers: an Euler step of 1 per layer, the residual scale of a
        # transformer block.
        field = nde.fields.Attention(
            d_model, heads, causal=True, layers=layers, t1=float(layers), key=fkey
        )
        self.block = nde.nn.ODEBlock(field, steps=layers, solver="euler")
        self.norm = eqx.nn.LayerNorm(d_model)
        self.head = eqx.nn.Linear(d_model, vocab_size, use_bias=False, key=hkey)
        self.max_len = max_len

    def __call__(self, tokens):
        x = jax.vmap(self.embedding)(tokens)
        x = x + nde.nn.sinusoidal_encoding(tokens.shape[0], x.shape[1], dtype=x.dtype)
        x = self.block(x)
        return jax.vmap(lambda h: self.head(self.norm(h)))(x)


def with_solver(model: ODELanguageModel, solver: str, steps: int):
    """The same trained field, integrated with another solver or step count."""
    block = nde.nn.ODEBlock(model.block.field, steps=steps, solver=solver)
    return eqx.tree_at(lambda m: m.block, model, block)


def windows(x, y):
    """A window of inputs plus its last target: the `context + 1` characters whose
    `context` next-character predictions the loss scores."""
    return jnp.concatenate([x, y[:, -1:]], axis=1)


def loss_fn(model, x, y):
    tokens = windows(x, y)
    return nde.losses.next_token(jax.vmap(model)(tokens), tokens)


@eqx.filter_jit
def token_losses(model, x, y):
    """The loss of every prediction, `(windows, context)`; column `j` predicts from
    `j + 1` characters of context."""
    tokens = windows(x, y)
    return nde.losses.next_token(jax.vmap(model)(tokens), tokens, reduction="none")


def loss_by_position(model, x, y, chunk: int = 512) -> np.ndarray:
    """The mean loss at each position over many windows, a chunk at a time to bound
    the memory."""
    total = np.zeros(x.shape[1])
    for i in range(0, len(x), chunk):
        losses = token_losses(model, x[i : i + chunk], y[i : i + chunk])
        total += np.asarray(losses).sum(axis=0)
    return total / len(x)


def mean_and_stderr(values) -> tuple[float, float]:
    """The mean and its standard error, treating `values` as independent."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))


def num_params(model) -> int:
    leaves = jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))
    return int(sum(x.size for x in leaves))


def ngram_baselines(train: np.ndarray, test: np.ndarray, vocab_size: int) -> dict:
    """Unigram and bigram models of the training text, scored on the test text.

    The bigram model is smoothed towards the unigram one,
    $p(b \\mid a) = (c_{ab} + \\alpha\\, p(b)) / (c_a + \\alpha)$, with $\\alpha$
    chosen on the last tenth of the training text (never on the test text).
    """

    def unigram(tokens):
        counts = np.bincount(tokens, minlength=vocab_size).astype(np.float64)
        return (counts + 1.0) / (counts.sum() + vocab_size)  # add-one smoothing

    def bigram_nll(fit_tokens, eval_tokens, alpha):
        p1 = unigram(fit_tokens)
        counts = np.zeros((vocab_size, vocab_size))
        np.add.at(counts, (fit_tokens[:-1], fit_tokens[1:]), 1.0)
        cond = (counts + alpha * p1) / (counts.sum(1, keepdims=True) + alpha)
        return -np.mean(np.log(cond[eval_tokens[:-1], eval_tokens[1:]]))

    freq = np.bincount(train, minlength=vocab_size) / len(train)
    entropy = -np.sum(freq[freq > 0] * np.log(freq[freq > 0]))
    cut = int(0.9 * len(train))
    alphas = [0.01, 0.1, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0]
    alpha = min(alphas, key=lambda a: bigram_nll(train[:cut], train[cut:], a))
    unigram_test = -np.mean(np.log(unigram(train)[test]))
    return dict(
        unigram_entropy_train=float(entropy),
        unigram_test_loss=float(unigram_test),
        bigram_test_loss=float(bigram_nll(train, test, alpha)),
        bigram_alpha=alpha,
    )


def sample(model, corpus, prompt: str, length: int, *, temperature, key) -> str:
    """Continue `prompt` by `length` characters. `nde.nn.generate` fills at most
    `max_len` positions, so the text is written a chunk at a time, each chunk
    conditioned on the preceding `min(len(prompt), max_len // 2)` characters (one
    pair of lengths, so one compilation)."""
    generate = eqx.filter_jit(nde.nn.generate)
    keep = min(len(prompt), model.max_len // 2)
    out = list(corpus.encode(prompt))
    start = len(out)
    while len(out) - start < length:
        context = jnp.asarray(out[-keep:], dtype=jnp.int32)
        key, subkey = jr.split(key)
        new = generate(
            model, context, model.max_len - keep, temperature=temperature, key=subkey
        )
        out.extend(np.asarray(new[keep:]).tolist())
    return prompt + corpus.decode(np.asarray(out[start : start + length]))


def train(name, model, data, test, cfg, *, key):
    warmup = min(cfg["warmup"], cfg["steps"] // 5)
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg["lr"], warmup, cfg["steps"], end_value=0.1 * cfg["lr"]
    )
    optimizer = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(schedule, weight_decay=cfg["weight_decay"]),
    )
    start = time.perf_counter()
    model, history = nde.train.fit(
        model,
        loss_fn,
        data,
        optimizer,
        key=key,
        steps=cfg["steps"],
        batch_size=cfg["batch_size"],
        # The quick run skips the test curve: one compilation fewer.
        eval_data=None if cfg["quick"] else test,
        eval_every=cfg["eval_every"],
        progress=False,
    )
    seconds = time.perf_counter() - start
    print(
        f"{name}: trained {cfg['steps']} steps in {seconds:.1f} s, "
        f"training loss {history['train_loss'][-1]:.4f}",
        flush=True,
    )
    return model, history, seconds


def summarise(model, history, seconds, train_eval, test, curve, cfg):
    train_loss = float(np.asarray(token_losses(model, *train_eval)).mean())
    # Neighbouring characters' losses are correlated, so the standard error is taken
    # over the non-overlapping windows' means rather than over characters.
    by_window = np.asarray(token_losses(model, *test)).mean(axis=1)
    test_loss, stderr = mean_and_stderr(by_window)
    steps, times = history["step"], history["time_s"]
    # Time per step after the first evaluation, which includes the compilation.
    per_step = (times[-1] - times[0]) / (steps[-1] - steps[0]) if len(steps) > 1 else 0
    return dict(
        params=num_params(model),
        train_loss=train_loss,
        test_loss=test_loss,
        test_loss_stderr=stderr,
        train_perplexity=math.exp(train_loss),
        test_perplexity=math.exp(test_loss),
        test_bits_per_char=test_loss / math.log(2),
        train_seconds=seconds,
        seconds_per_step=per_step,
        history={
            k: history[k]
            for k in ("step", "train_loss", "eval_loss", "time_s")
            if k in history
        },
        test_loss_by_position=loss_by_position(model, *curve),
        test_loss_by_window=by_window,
    )


def plot(results, path):
    models = results["models"]
    base = results["baselines"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    for (name, r), colour in zip(models.items(), ("C0", "C1")):
        h = r["history"]
        ax.plot(h["step"], h["train_loss"], "--", color=colour, label=f"{name} train")
        if "eval_loss" in h:
            ax.plot(h["step"], h["eval_loss"], "-", color=colour, label=f"{name} test")
    ax.axhline(base["unigram_test_loss"], color="gray", ls=":", label="unigram")
    ax.axhline(base["bigram_test_loss"], color="k", ls=":", label="bigram")
    ax.set(xlabel="training step", ylabel="loss (nats / character)")
    ax.set_title("Learning curves (train: running mean over the last interval)")
    ax.legend(fontsize=8)
    ax = axes[1]
    for (name, r), colour in zip(models.items(), ("C0", "C1")):
        loss = r["test_loss_by_position"]
        ax.plot(np.arange(1, len(loss) + 1), loss, color=colour, label=name)
    ax.axhline(base["unigram_test_loss"], color="gray", ls=":", label="unigram")
    ax.axhline(base["bigram_test_loss"], color="k", ls=":", label="bigram")
    ax.set(xlabel="characters of context", ylabel="test loss (nats / character)")
    ax.set_title("Test loss against the context available")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _common.save_figure(fig, path, dpi=110)
    plt.close(fig)


def plot_solvers(results, path):
    r = results["models"]["attention ODE"]
    losses = r["test_loss_other_solvers"]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    names = list(losses)
    bars = ax.barh(names, [losses[n] for n in names], color="C1")
    ax.bar_label(bars, fmt="%.3f", padding=3, fontsize=8)
    ax.axvline(results["models"]["GPT"]["test_loss"], color="C0", label="GPT")
    ax.axvline(
        results["baselines"]["bigram_test_loss"], color="k", ls=":", label="bigram"
    )
    ax.axvline(
        results["baselines"]["unigram_test_loss"], color="gray", ls=":", label="unigram"
    )
    ax.invert_yaxis()
    ax.set(xlabel="test loss (nats / character)")
    ax.set_title(
        f"Attention ODE trained with euler, {results['config']['ode_steps']} steps: "
        "test loss when integrated otherwise",
        fontsize=10,
    )
    ax.set_xlim(
        0, 1.15 * max(max(losses.values()), results["baselines"]["unigram_test_loss"])
    )
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    _common.save_figure(fig, path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = arguments(__doc__, quick="a tiny configuration")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompt", default='The "for" statement is used to')
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--steps", type=int, default=None, help="training steps")
    args = parser.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    if args.steps is not None:
        cfg["steps"] = args.steps
    if args.quick:
        # A smoke test is dominated by XLA compilation, which this halves.
        jax.config.update("jax_disable_most_optimizations", True)
    out = output(args, __file__, parser)

    corpus = nde.data.text_corpus()
    data = corpus.sequences(cfg["context"], stride=cfg["stride"])
    # Non-overlapping windows: every character after the first of the part is
    # predicted exactly once.
    full = corpus.sequences(cfg["context"])
    # The loss against the position in the window averages over the test windows
    # that start at every character, so each position sees (almost) every character.
    curve = corpus.sequences(cfg["context"], stride=1).test
    if args.quick:  # evaluation on one shape of slice keeps the smoke test fast
        full = nde.data.Dataset(*(a[:32] for a in full), full.name)
        curve = full.test
    baselines = ngram_baselines(corpus.train, corpus.test, corpus.vocab_size)

    key = jr.key(args.seed)
    gpt_key, ode_key, fit_key, sample_key = jr.split(key, 4)
    max_len = cfg["context"] + 1
    sizes = (corpus.vocab_size, cfg["d_model"], cfg["heads"], cfg["layers"])
    models = {
        "GPT": nde.nn.GPT(*sizes, max_len=max_len, key=gpt_key),
        "attention ODE": ODELanguageModel(*sizes, max_len=max_len, key=ode_key),
    }
    results = dict(
        experiment="char_gpt",
        command="python experiments/char_gpt.py" + (" --quick" if args.quick else ""),
        config=dict(
            cfg,
            seed=args.seed,
            prompt=args.prompt,
            temperature=args.temperature,
            ode_solver="euler",
            ode_steps=cfg["layers"],
            ode_t1=float(cfg["layers"]),
            dtype="float32",
        ),
        environment=_common.environment(),
        data=dict(
            corpus=corpus.name,
            sha256=corpus.sha256,
            vocab_size=corpus.vocab_size,
            train_chars=len(corpus.train),
            test_chars=len(corpus.test),
            train_windows=len(data.x_train),
            eval_test_windows=len(full.x_test),
        ),
        baselines=baselines,
        models={},
    )
    samples = {}
    for name, model in models.items():
        # The same batch order for both models: they differ only in the network.
        model, history, seconds = train(
            name, model, data.train, full.test, cfg, key=fit_key
        )
        r = summarise(model, history, seconds, full.train, full.test, curve, cfg)
        text = sample(
            model,
            corpus,
            args.prompt,
            cfg["sample_len"],
            temperature=args.temperature,
            key=sample_key,
        )
        samples[name] = text
        r["sample"] = text
        if name == "attention ODE" and cfg["refine"]:
            L = cfg["layers"]
            r["test_loss_other_solvers"] = {
                f"{solver}, {steps} steps": float(
                    np.asarray(
                        token_losses(with_solver(model, solver, steps), *full.test)
                    ).mean()
                )
                for solver, steps in (
                    ("euler", L),
                    ("euler", 2 * L),
                    ("euler", 8 * L),
                    ("midpoint", L),
                    ("rk4", L),
                    ("rk4", 4 * L),
                )
            }
        results["models"][name] = r

    gpt, ode = (results["models"][n]["test_loss_by_window"] for n in models)
    difference, stderr = mean_and_stderr(np.asarray(ode) - np.asarray(gpt))
    results["ode_minus_gpt_test_loss"] = dict(mean=difference, stderr=stderr)
    plot(results, out / "learning_curves.png")
    if cfg["refine"]:
        plot_solvers(results, out / "ode_solvers.png")
    _common.write_json(out / "results.json", results)
    for name, r in results["models"].items():
        print(
            f"{name:14s} params {r['params']:7d}  train {r['train_loss']:.3f}  "
            f"test {r['test_loss']:.3f} ± {r['test_loss_stderr']:.3f} nats/char  "
            f"(perplexity "
            f"{r['test_perplexity']:.2f})  {r['seconds_per_step'] * 1e3:.0f} ms/step"
        )
    print(
        f"unigram test {baselines['unigram_test_loss']:.3f}, bigram test "
        f"{baselines['bigram_test_loss']:.3f} nats/char"
    )
    gap = results["ode_minus_gpt_test_loss"]
    print(f"ODE - GPT test loss {gap['mean']:.3f} ± {gap['stderr']:.3f}")
    for name, text in samples.items():
        print(f"--- {name} sample ---\n{text}\n")
    return results


if __name__ == "__main__":
    main()
