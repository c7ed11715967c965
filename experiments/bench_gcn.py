r"""Speed of the edge-list GCN layer, forward and gradient, and its scaling in edges.

Problem: `neuralde.nn.GCN(16, 16)` on random undirected graphs (each undirected edge
stored in both directions), float32 node features `(nodes, 16)`. Each method computes
`sum(GCN(x, graph)**2)` and its gradient with respect to the layer's parameters and
the node features (`eqx.filter_value_and_grad`, under `eqx.filter_jit`).

Methods:

- `edges`: `neuralde.nn.GCN` on the edge list: two gathers and a `segment_sum`,
  O(edges) work and memory.
- `dense`: the same layer written with a precomputed dense
  $\hat A = \tilde D^{-1/2}(A + I)\tilde D^{-1/2}$, `relu(Â X W + b)`: O(nodes²).

Rows:

1. 5 000 nodes, 50 000 directed edges: `edges` against `dense` (interleaved).
2. 100 000 nodes and 125 000 to 1 000 000 directed edges: `edges` alone; the time
   per edge should stay flat (linear scaling).
3. What `dense` would need at 100 000 nodes: the 40 GB of Â in float32, not run.

Times are medians over `--repeats` calls after compilation; methods in one row are
timed interleaved, so their ratio is robust to the machine's load.

    python experiments/bench_gcn.py            # ~1-2 min on 2 CPU cores
    python experiments/bench_gcn.py --quick    # smoke test, seconds

Results: `results.json`, `results.md` and `scaling.png` in `--out` (default
`experiments/runs/bench_gcn/`; `--publish` replaces the committed ones in
`experiments/results/bench_gcn/`).
"""

import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import matplotlib
import matplotlib.ticker
import numpy as np
from _common import arguments, environment, output, save_figure, write_json, write_text

import neuralde as nde
from neuralde._bench._report import plain_log_labels


FEATURES = 16
# (nodes, directed edges) of the dense comparison, and of the edge-list scaling rows.
FULL = dict(
    dense=(5_000, 50_000), nodes=100_000, edges=(125_000, 250_000, 500_000, 1_000_000)
)
QUICK = dict(dense=(500, 5_000), nodes=10_000, edges=(12_500, 25_000, 50_000))


def random_graph(num_nodes: int, num_edges: int, seed: int) -> nde.nn.Graph:
    """A random undirected graph with `num_edges` directed edges (both directions
    of `num_edges // 2` random pairs; self-pairs dropped, so slightly fewer)."""
    rng = np.random.default_rng(seed)
    s = rng.integers(0, num_nodes, num_edges // 2)
    r = rng.integers(0, num_nodes, num_edges // 2)
    keep = s != r
    s, r = s[keep], r[keep]
    return nde.nn.Graph(
        np.concatenate([s, r]).astype(np.int32),
        np.concatenate([r, s]).astype(np.int32),
        num_nodes,
    )


def loss_edges(layer, x, graph):
    return jnp.sum(layer(x, graph) ** 2)


def loss_dense(layer, x, a_hat):
    h = a_hat @ (x @ layer.linear.weight.T) + layer.linear.bias
    return jnp.sum(jax.nn.relu(h) ** 2)


def both(fn):
    """The loss and gradient, with respect to the layer and to x."""
    return eqx.filter_jit(
        lambda layer, x, extra: eqx.filter_value_and_grad(
            lambda lx: fn(lx[0], lx[1], extra)
        )((layer, x))
    )


def timed(fn, *args):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def measure(methods: dict, repeats: int) -> dict[str, dict]:
    """Compile and warm each method, then time them interleaved; medians in ms."""
    out = {}
    for name, (fn, args) in methods.items():
        out[name] = {"first_call_s": timed(fn, *args)}
        timed(fn, *args)
    samples = {name: [] for name in methods}
    for _ in range(repeats):
        for name, (fn, args) in methods.items():
            samples[name].append(timed(fn, *args))
    for name, s in samples.items():
        out[name]["median_ms"] = 1e3 * statistics.median(s)
        out[name]["spread_ms"] = 1e3 * (max(s) - min(s))
    return out


def main(argv=None):
    parser = arguments(__doc__, quick="graphs ten times smaller")
    parser.add_argument("--repeats", type=int, default=7)
    options = parser.parse_args(argv)
    out = output(options, __file__, parser)
    cfg = QUICK if options.quick else FULL
    key = jr.PRNGKey(0)
    layer = nde.nn.GCN(FEATURES, FEATURES, dtype=jnp.float32, key=key)
    edges_fn, dense_fn = both(loss_edges), both(loss_dense)
    rows = []

    g = random_graph(*cfg["dense"], seed=0)
    x = jr.normal(jr.PRNGKey(1), (g.num_nodes, FEATURES), jnp.float32)
    a_hat = jax.jit(jax.vmap(g.gcn, in_axes=1, out_axes=1))(
        jnp.eye(g.num_nodes, dtype=jnp.float32)
    )
    result = measure(
        {"edges": (edges_fn, (layer, x, g)), "dense": (dense_fn, (layer, x, a_hat))},
        options.repeats,
    )
    (l_edges, _), (l_dense, _) = edges_fn(layer, x, g), dense_fn(layer, x, a_hat)
    assert np.isclose(l_edges, l_dense, rtol=1e-4), (l_edges, l_dense)
    rows.append({"nodes": g.num_nodes, "num_edges": g.num_edges, **result})
    del a_hat

    for num_edges in cfg["edges"]:
        g = random_graph(cfg["nodes"], num_edges, seed=num_edges)
        x = jr.normal(jr.PRNGKey(2), (g.num_nodes, FEATURES), jnp.float32)
        result = measure({"edges": (edges_fn, (layer, x, g))}, options.repeats)
        rows.append({"nodes": g.num_nodes, "num_edges": g.num_edges, **result})

    lines = [
        "| nodes | edges | edge list (ms) | dense Â (ms) | dense ÷ edges | "
        "edge list, ns per edge |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        e = row["edges"]["median_ms"]
        d = row.get("dense", {}).get("median_ms")
        per_edge = 1e6 * e / row["num_edges"]
        dense = f"{d:.1f} | {d / e:.1f}x" if d is not None else "- | -"
        size = f"| {row['nodes']} | {row['num_edges']}"
        lines.append(f"{size} | {e:.1f} | {dense} | {per_edge:.1f} |")
    dense_gb = cfg["nodes"] ** 2 * 4 / 1e9
    lines.append(
        f"\nA dense Â at {cfg['nodes']} nodes would need {dense_gb:.3g} GB in float32."
    )
    table = "\n".join(lines)
    print(table)
    info = {
        "config": cfg,
        "environment": environment(),
        "features": FEATURES,
        "repeats": options.repeats,
        "rows": rows,
    }
    write_json(out / "results.json", info)
    write_text(out / "results.md", table + "\n")
    save_figure(scaling_figure(rows, cfg["nodes"]), out / "scaling.png", dpi=110)


def scaling_figure(rows, nodes):
    """Time of the edge-list layer against the number of edges, at `nodes` nodes,
    with the line of linear scaling through the first point."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4), layout="constrained")
    ax = fig.subplots()
    scaling = [r for r in rows if r["nodes"] == nodes]
    edges = np.array([r["num_edges"] for r in scaling], float)
    ms = np.array([r["edges"]["median_ms"] for r in scaling])
    ax.loglog(edges, ms, "o-", label=f"edge list, {nodes} nodes")
    ax.loglog(edges, ms[0] * edges / edges[0], "k--", lw=1, label="linear in edges")
    ax.set_xticks(edges, [f"{e:,.0f}" for e in edges])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    plain_log_labels(ax)
    ax.set_xlabel("directed edges")
    ax.set_ylabel("forward + gradient, median ms")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return fig


if __name__ == "__main__":
    main()
