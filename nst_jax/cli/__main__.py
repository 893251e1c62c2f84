"""``python -m nst_jax.cli``: the ``nst-jax`` command."""

import sys

from nst_jax.cli.console import main

sys.exit(main())
