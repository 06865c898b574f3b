"""widesparse_jax: wide sparse networks and width-study tools in JAX/Flax."""

__version__ = "0.1.0"
