"""The ``nst-jax`` entry point: imports the command inside its Ctrl-C guard, so an interrupt
while JAX is still loading is one line and exit status 130, not a traceback."""

import sys


def main() -> int:
    try:
        from nst_jax import cli

        return cli.main()
    except KeyboardInterrupt:
        print("nst-jax: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
