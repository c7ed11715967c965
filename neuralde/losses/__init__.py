"""Loss functions: pure functions of arrays.

Conventions shared by every loss:

- **Arguments.** Predictions come first (logits for classification), then the
    targets, then keyword-only options. Predictions and targets of an elementwise
    loss must have equal shapes: nothing is broadcast, which would silently compare
    the wrong entries.
- **Per-example loss.** Each loss first computes a loss per example: per entry
    for elementwise losses (regression, univariate likelihoods, binary
    cross-entropy), with the class axis summed out for classification, and per
    leading index for losses of whole examples (reconstruction, Dice, diffusion).
    Each docstring says which.
- **`weights` and `mask`** (optional) broadcast against the per-example loss with
    NumPy's rules (add trailing axes, `w[:, None]`, to weigh rows of a
    higher-rank loss). `mask` is boolean; `False` entries are exactly zero and left
    out, even where their loss is not finite.
- **`reduction`**: `"mean"` (the default) is the weighted mean
    $\\sum_i w_i m_i \\ell_i / \\sum_i w_i m_i$ over the entries left in (the plain
    mean without weights or mask; `0` when the mask leaves nothing in); `"sum"` is
    $\\sum_i w_i m_i \\ell_i$; `"none"` returns $w_i m_i \\ell_i$, the shape of the
    per-example loss. An empty batch under `"mean"` raises a `ValueError`.
- **Labels.** Integer class indices and one-hot or probability targets are both
    accepted, told apart by shape: indices have the logits' shape without the class
    axis (the last), targets have the logits' shape. Indices out of range, and
    probabilities outside $[0, 1]$, raise a `ValueError`, or under `jit` an
    `equinox` runtime error; so do out-of-range hyper-parameters (`tau`, `delta`,
    scales).
- **Stability.** Logits enter through log-sum-exp, `log_sigmoid` or `softplus`,
    so extreme logits (±1e4 in float32) give finite losses and gradients.

Where `optax.losses` has a loss, it is wrapped, not rewritten; the docstring says
what is added.
"""

from ._adversarial import (
    gan_discriminator as gan_discriminator,
    gan_generator as gan_generator,
)
from ._autoencoder import (
    gaussian_kl as gaussian_kl,
    reconstruction as reconstruction,
    vae_elbo as vae_elbo,
)
from ._classification import (
    binary_cross_entropy as binary_cross_entropy,
    class_balanced_weights as class_balanced_weights,
    cross_entropy as cross_entropy,
    focal as focal,
    kl_divergence as kl_divergence,
)
from ._common import Reduction as Reduction
from ._diffusion import denoising_score_matching as denoising_score_matching
from ._likelihood import (
    bernoulli_nll as bernoulli_nll,
    categorical_nll as categorical_nll,
    gaussian_mixture_nll as gaussian_mixture_nll,
    gaussian_nll as gaussian_nll,
    laplace_nll as laplace_nll,
    poisson_nll as poisson_nll,
    student_t_nll as student_t_nll,
)
from ._physics import pinn as pinn
from ._regression import (
    barron as barron,
    huber as huber,
    mae as mae,
    mse as mse,
    pinball as pinball,
    rmse as rmse,
    tukey_biweight as tukey_biweight,
)
from ._segmentation import dice as dice
from ._sequence import next_token as next_token
from ._survival import cox_partial_likelihood as cox_partial_likelihood
