"""Diagnostics of the stability of continuous-time networks: pure functions of a
field and a state that work under `jax.jit` and `jax.vmap`.

- [`jacobian_spectrum`][neuralde.stability.jacobian_spectrum],
    [`trajectory_spectrum`][neuralde.stability.trajectory_spectrum]: eigenvalues of
    $\\partial F/\\partial y$, dense or by Arnoldi's method.
- [`flow_sensitivity`][neuralde.stability.flow_sensitivity]: the stability constant
    $\\|\\partial y(T)/\\partial y(0)\\|_2$ and the finite-time Lyapunov exponent.
- [`perturbation_growth`][neuralde.stability.perturbation_growth]: growth of random
    and adversarial perturbations.
- [`gradient_norms`][neuralde.stability.gradient_norms]: $\\|\\partial L/\\partial
    y_j\\|$ over depth.
- [`step_stability`][neuralde.stability.step_stability],
    [`stability_function`][neuralde.stability.stability_function]: is
    $\\Delta t\\,\\lambda$ in the solver's region of absolute stability?
- [`energy`][neuralde.stability.energy],
    [`energy_drift`][neuralde.stability.energy_drift]: the conserved energy of
    Hamiltonian and hyperbolic fields, and its drift under a solver.
- [`reversibility_error`][neuralde.stability.reversibility_error]: round-off of the
    states rebuilt by a reversible solve.

Solvers: every diagnostic of a solve defaults to `"rk4"`, as `neuralde.solve` does,
except where the solver is the question: `energy_drift` defaults to `"leapfrog"`,
the solver that keeps a Hamiltonian flow's energy bounded, and
`reversibility_error` and `step_stability` take no default, since they measure a
solver the caller chooses (`reversibility_error` needs a reversible one, which
`"rk4"` is not).
"""

from ._energy import energy as energy, energy_drift as energy_drift
from ._flow import (
    flow_sensitivity as flow_sensitivity,
    FlowSensitivity as FlowSensitivity,
    perturbation_growth as perturbation_growth,
    PerturbationGrowth as PerturbationGrowth,
)
from ._gradients import gradient_norms as gradient_norms
from ._reversibility import reversibility_error as reversibility_error
from ._spectrum import (
    jacobian_spectrum as jacobian_spectrum,
    trajectory_spectrum as trajectory_spectrum,
)
from ._step import (
    stability_function as stability_function,
    step_stability as step_stability,
    StepStability as StepStability,
)
