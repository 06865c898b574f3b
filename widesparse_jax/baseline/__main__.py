"""``python -m widesparse_jax.baseline``: see :mod:`widesparse_jax.baseline.cli`."""

import sys

from widesparse_jax.baseline.cli import main

if __name__ == "__main__":
    sys.exit(main())
