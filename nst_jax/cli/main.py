"""The ``nst-jax`` command: argument parsing and the commands' reports, nothing else.

Every action is a library call a notebook could make. Exit status: 0 on success, 2 on bad
input, missing weights or an unwritable path (one line on stderr naming the file), 1 on an
internal error, 130/143 on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import sys
import traceback
from collections.abc import Sequence

from nst_jax.cli import outputs, signals
from nst_jax.cli.options import EXIT_INPUT, build_parser, reword
from nst_jax.errors import ImageError, InputError, shown
from nst_jax.files import image, weights


def _cmd_info(args: argparse.Namespace) -> int:
    """Print a result's provenance; a damaged record is printed as it is, then refused."""
    try:
        record = image.read_provenance(args.path)
    except ImageError:
        text = image.provenance_text(args.path)
        if text is not None:
            _print_to_reader(text)
        raise
    _print_to_reader(json.dumps(record, indent=2, sort_keys=True))
    return 0


def _print_to_reader(text: str) -> None:
    """Print ``text``; a reader that stops early (``| head``) ends the printing quietly."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Python's own advice: point stdout at /dev/null, so the exit flushes nowhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _cmd_stylize(args: argparse.Namespace) -> int:
    from nst_jax.cli import stylize

    return stylize.cmd_stylize(args)


def _cmd_video(args: argparse.Namespace) -> int:
    from nst_jax.cli import video

    return video.cmd_video(args)


def _cmd_train(args: argparse.Namespace) -> int:
    from nst_jax.cli import train

    return train.cmd_train(args)


def _cmd_weights_fetch(args: argparse.Namespace) -> int:
    downloaded, converted = weights.fetch()
    print(f"official weights: {downloaded}\nconverted: {converted}")
    return 0


def _cmd_weights_convert(args: argparse.Namespace) -> int:
    dest = weights.converted_path(args.dest)
    planned = [outputs.Output(dest, "the converted file")]
    outputs.check_outputs(planned, [(weights.find_weights(args.source), "IN")], force=args.force)
    print(f"converted: {weights.convert(args.source, dest)}")
    return 0


def _cmd_weights_info(args: argparse.Namespace) -> int:
    for key, value in weights.info(args.path).items():
        print(f"{key}: {value}")
    return 0


COMMANDS = {
    ("stylize", None): _cmd_stylize,
    ("info", None): _cmd_info,
    ("video", None): _cmd_video,
    ("train", None): _cmd_train,
    ("weights", "fetch"): _cmd_weights_fetch,
    ("weights", "convert"): _cmd_weights_convert,
    ("weights", "info"): _cmd_weights_info,
}


# File-system faults of a path the user gave (a name too long, a symbolic-link loop, ...):
# one line naming the path, as any bad input.
PATH_FAULTS = {errno.ENAMETOOLONG, errno.ELOOP, errno.EACCES, errno.ENOTDIR, errno.EROFS}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``nst-jax``; returns the exit status."""
    # A file name that is not valid UTF-8 is printed escaped rather than failing the print
    # (after the work is done) under a strict encoding.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")
    try:
        return _command(argv)
    except InputError as e:
        print(f"nst-jax: error: {reword(str(e))}", file=sys.stderr)
        return EXIT_INPUT
    except OSError as e:
        if e.errno not in PATH_FAULTS or e.filename is None:
            return _internal_error()
        print(f"nst-jax: error: {shown(e.filename)}: {e.strerror}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("nst-jax: interrupted", file=sys.stderr)
        return 130
    except Exception:
        return _internal_error()


def _command(argv: Sequence[str] | None) -> int:
    from PIL import Image

    from nst_jax.cli import process

    process.configure_for_program()
    # The command's own pixel limit (--max-pixels) is the one that counts, per file.
    Image.MAX_IMAGE_PIXELS = None
    argv = list(sys.argv[1:] if argv is None else argv)
    from nst_jax.cli import models, train, video

    args = build_parser((video.add_parser, train.add_parser, models.add_options)).parse_args(argv)
    args.argv = argv  # stored in outputs' provenance
    with signals.handling(getattr(args, "verbose", False)) as args.signals:
        return COMMANDS[(args.command, getattr(args, "weights_command", None))](args)


def _internal_error() -> int:
    traceback.print_exc()
    print("nst-jax: internal error (the traceback above helps a bug report)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
