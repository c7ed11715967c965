import jax
import jax.random as jr
import pytest


jax.config.update("jax_enable_x64", True)


@pytest.fixture
def getkey():
    """A function returning a fresh PRNG key on each call (as in diffrax's tests)."""
    keys = iter(jr.split(jr.PRNGKey(5678), 1000))
    return lambda: next(keys)
