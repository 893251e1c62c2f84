"""The ``nst-jax`` entry point: SIGINT or SIGTERM while the command is still loading is one
line and exit status 130 or 143, not a traceback.

Loading (JAX, Flax, optax) takes a second or two and writes nothing, so a signal then ends
the process at once. A ``KeyboardInterrupt`` is not enough there: one raised inside the
garbage-collector callback that JAX registers is printed and ignored, and the command would
run on. Once loaded, the command handles signals itself (:mod:`nst_jax.cli.signals`).
"""

import os
import signal
import sys


def _interrupted_while_loading(signum, frame) -> None:
    os.write(2, b"nst-jax: interrupted\n")
    os._exit(143 if signum == signal.SIGTERM else 130)


def main() -> int:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupted_while_loading)
    from nst_jax.cli import main as cli

    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
