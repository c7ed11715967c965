"""`fit`: train an Equinox model with optax, in one jitted step, on one device or
many."""

from ._fit import fit as fit
