"""The ``nst-jax`` entry point: Ctrl-C while the command is still loading is one line and exit
status 130, not a traceback.

Loading (JAX, Flax, optax) takes a second or two and writes nothing, so an interrupt then
ends the process at once. A ``KeyboardInterrupt`` is not enough there: one raised inside the
garbage-collector callback that JAX registers is printed and ignored, and the command would
run on. Once loaded, Python's own handler is back and the command handles Ctrl-C itself.
"""

import os
import signal
import sys


def _interrupted_while_loading(signum, frame) -> None:
    os.write(2, b"nst-jax: interrupted\n")
    os._exit(130)


def main() -> int:
    signal.signal(signal.SIGINT, _interrupted_while_loading)
    from nst_jax.cli import main as cli

    signal.signal(signal.SIGINT, signal.default_int_handler)
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
