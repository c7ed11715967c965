"""The optional comparison with torchdiffeq: the same field (same parameters), the
same initial states, steps and loss, through `torchdiffeq.odeint` (backpropagation
through the solver) and `odeint_adjoint` (the continuous adjoint). Used only when
torch and torchdiffeq are installed; neuralde never depends on them."""

import contextlib
import importlib.metadata
import importlib.util
from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from ._problem import Problem


# neuralde's solver names and torchdiffeq's method of the same steps. torchdiffeq's
# "rk4" is Kutta's 3/8 rule: four evaluations per step, like classical RK4, but not
# the same method, so its results differ from neuralde's by the error of the method.
METHODS = {
    "euler": "euler",
    "midpoint": "midpoint",
    "heun": "heun2",
    "rk4": "rk4",
    "dopri5": "dopri5",
}
# The fields written again in torch below (`_TorchField`): a second, independent
# implementation to compare with. Other fields are benchmarked without it.
MIRRORED = ("MLP", "Antisymmetric", "Parabolic", "Hamiltonian", "Hyperbolic")
DTYPES = ("float32", "float64")


def unavailable() -> str | None:
    """Why the comparison cannot run here, or `None`."""
    missing = [
        m for m in ("torch", "torchdiffeq") if importlib.util.find_spec(m) is None
    ]
    if missing:
        return f"not installed: {', '.join(missing)}"
    return None


def versions() -> dict:
    """The installed versions of torch and torchdiffeq (without importing them)."""
    out = {}
    for name in ("torch", "torchdiffeq"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


@contextlib.contextmanager
def threads(n: int | None):
    """Run torch with `n` intra-op threads (`None`: as it is), and restore its
    setting afterwards."""
    if n is None or unavailable() is not None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _device(torch) -> str | None:
    backend = jax.default_backend()
    if backend == "cpu":
        return "cpu"
    if backend == "gpu" and torch.cuda.is_available():
        return "cuda"
    return None


def _problem_note(problem: Problem) -> str | None:
    if problem.field not in MIRRORED:
        return f"no torch version of the field {problem.field}"
    if problem.solver not in METHODS:
        return f"torchdiffeq has no method of the solver {problem.solver}"
    if problem.adaptive != (problem.solver == "dopri5"):
        return (
            "torchdiffeq runs dopri5 adaptively and the other methods with fixed steps"
        )
    if problem.dtype not in DTYPES:
        return f"not compared in {problem.dtype}"
    return None


def runs(
    problem: Problem, field, y0, *, rtol, atol, max_steps
) -> tuple[dict[str, tuple[Callable, Callable]], str | None]:
    """`{"odeint": (forward, forward_gradient), "odeint_adjoint": (None,
    forward_gradient)}`, each a function of no arguments that runs once and waits for
    the device; or `({}, why)` where the comparison does not apply."""
    note = unavailable() or _problem_note(problem)
    if note is not None:
        return {}, note
    import torch
    import torchdiffeq

    device = _device(torch)
    if device is None:
        return {}, f"torch cannot use the {jax.default_backend()} backend here"
    dtype = getattr(torch, problem.dtype)
    module = _TorchField.build(torch, field, problem.field, dtype, device)
    states = tuple(
        torch.tensor(np.asarray(x), dtype=dtype, device=device)
        for x in jtu.tree_leaves(y0)
    )
    state = states if len(states) > 1 else states[0]
    span = torch.tensor([0.0, field.t1], dtype=dtype, device=device)
    kwargs = dict(method=METHODS[problem.solver])
    if problem.adaptive:
        kwargs.update(rtol=rtol, atol=atol, options=dict(max_num_steps=max_steps))
    else:
        kwargs["options"] = dict(grid_constructor=_grid(torch, problem.steps))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    params = list(module.parameters())

    def make(odeint):
        def final():
            ys = odeint(module, state, span, **kwargs)
            return tuple(y[-1] for y in ys) if isinstance(ys, tuple) else (ys[-1],)

        def forward():
            with torch.no_grad():
                out = final()
            sync()
            return out

        def forward_gradient():
            out = final()
            value = sum(torch.mean(torch.square(y)) for y in out)
            grads = torch.autograd.grad(value, params)
            sync()
            return value.detach(), grads

        return forward, forward_gradient

    # `odeint_adjoint`'s forward pass is `odeint`'s: only its gradient is timed.
    return {
        "odeint": make(torchdiffeq.odeint),
        "odeint_adjoint": (None, make(torchdiffeq.odeint_adjoint)[1]),
    }, None


def _grid(torch, n: int):
    """The step times of `neuralde.solve`, `t0 + (t1 - t0) * (i / n)`, between the
    ends of the span torchdiffeq asks for (reversed in the adjoint's backward
    solve)."""

    def grid(func, y0, t):
        i = torch.arange(n + 1, dtype=t.dtype, device=t.device)
        times = t[0] + (t[-1] - t[0]) * (i / n)
        times[-1] = t[-1]
        return times

    return grid


def record(runs_, note, times, rows, ok, reference_loss) -> dict:
    """The comparison of one problem: torchdiffeq's times, and the ratio of
    `odeint`'s forward + gradient time to that of neuralde's fastest mode."""
    if not runs_:
        return dict(status="skipped", note=note)
    out = dict(status="ok", note=None)
    for name, (_, forward_gradient) in runs_.items():
        value = float(forward_gradient()[0])
        out[name] = dict(
            forward=times.get((name, "forward")),
            forward_gradient=times[(name, "forward_gradient")],
            loss=value,
            loss_vs_reference=abs(value - reference_loss) / abs(reference_loss),
        )
    best = min(ok, key=lambda g: rows[g]["forward_gradient"]["median_s"])
    best_s = rows[best]["forward_gradient"]["median_s"]
    out["neuralde_best"] = dict(gradient=" ".join(best), median_s=best_s)
    out["ratio"] = out["odeint"]["forward_gradient"]["median_s"] / best_s
    return out


class _TorchField:
    """The neuralde field's formula in torch, on a batch, with its parameters copied:
    piecewise constant over the same layers, the layer of time `t` chosen with the
    same round-off allowance as `neuralde.fields.layer_index`."""

    @staticmethod
    def build(torch, field, name, dtype, device):
        weight = torch.tensor(np.asarray(field.operator.weight), dtype=dtype)
        bias = torch.tensor(np.asarray(field.bias), dtype=dtype)
        gamma = float(field.gamma) if name == "Antisymmetric" else 0.0
        layers, t1 = field.layers, float(field.t1)
        # At least float32, as in `layer_index`.
        eps = float(jnp.finfo(jnp.promote_types(dtype_name(dtype), jnp.float32)).eps)
        allowance = min(16 * eps * layers, 0.01)

        class Field(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.weight = torch.nn.Parameter(weight.to(device))
                self.bias = torch.nn.Parameter(bias.to(device))

            def layer(self, t):
                k = torch.floor(t * (layers / t1) + allowance).long()
                return torch.clamp(k, 0, layers - 1)

            def act(self, k, y):
                return torch.tanh(y @ self.weight[k].T + self.bias[k])

            def forward(self, t, y):
                k = self.layer(t)
                w = self.weight[k]
                if name == "MLP":
                    return self.act(k, y)
                if name == "Antisymmetric":
                    eye = torch.eye(w.shape[0], dtype=w.dtype, device=w.device)
                    return torch.tanh(y @ (w - w.T - gamma * eye).T + self.bias[k])
                if name == "Parabolic":
                    return -self.act(k, y) @ w
                first, second = y
                if name == "Hamiltonian":
                    return self.act(k, second) @ w, -self.act(k, first) @ w
                return second, -self.act(k, first) @ w  # Hyperbolic

        return Field()


def dtype_name(torch_dtype) -> str:
    return str(torch_dtype).removeprefix("torch.")
