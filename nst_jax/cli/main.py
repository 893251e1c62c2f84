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
import logging
import os
import re
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from nst_jax.cli import models, signals
from nst_jax.cli.options import EXIT_INPUT, Parser, reword
from nst_jax.errors import ImageError, InputError, shown
from nst_jax.events import DivergedError
from nst_jax.files import image, score_weights, weights


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


def _cmd_stylize(args: argparse.Namespace, argv: list[str], control) -> int:
    from nst_jax.cli import stylize

    return stylize.cmd_stylize(args, argv, control)


def _cmd_video(args: argparse.Namespace, argv: list[str], control) -> int:
    from nst_jax.cli import video

    return video.cmd_video(args, control)


def _cmd_train(args: argparse.Namespace, argv: list[str], control) -> int:
    from nst_jax.cli import train

    return train.cmd_train(args, control)


def _cmd_score(args: argparse.Namespace, argv: list[str], control) -> int:
    from nst_jax.cli import score

    return score.cmd_score(args, control)


def _cmd_weights_fetch(args: argparse.Namespace, *_) -> int:
    if args.name in score_weights.SCORE_NETWORKS:
        files, converted = score_weights.fetch(args.name)
        print("published weights: " + ", ".join(map(str, files)) + f"\nconverted: {converted}")
        return 0
    downloaded, converted = weights.fetch(network=args.name)
    print(f"official weights: {downloaded}\nconverted: {converted}")
    return 0


def _cmd_weights_convert(args: argparse.Namespace, *_) -> int:
    from nst_jax.session import outputs

    if args.network in score_weights.SCORE_NETWORKS:
        return _convert_score_weights(args)
    if args.lin is not None:
        raise InputError("--lin: only with --network lpips")
    dest = weights.converted_path(args.dest, args.network)
    planned = [outputs.Output(dest, "the converted file")]
    source = weights.find_weights(args.source, args.network)
    outputs.check_outputs(planned, [(source, "IN")], force=args.force)
    print(f"converted: {weights.convert(args.source, dest, args.network)}")
    return 0


def _convert_score_weights(args: argparse.Namespace) -> int:
    from nst_jax.session import outputs

    network = score_weights.SCORE_NETWORKS[args.network]
    sources = [args.source, args.lin] if args.network == "lpips" else [args.source]
    if None in sources:
        raise InputError("--network lpips converts two files: IN (AlexNet) and --lin FILE")
    dest = Path(args.dest) if args.dest else score_weights.weights_dir() / network.converted
    reads = [(Path(source), "IN") for source in sources]
    outputs.check_outputs([outputs.Output(dest, "the converted file")], reads, force=args.force)
    print(f"converted: {score_weights.convert(args.network, sources, dest)}")
    return 0


def _cmd_weights_info(args: argparse.Namespace, *_) -> int:
    for key, value in weights.info(args.path, args.network).items():
        print(f"{key}: {value}")
    return 0


COMMANDS = {
    ("stylize", None): _cmd_stylize,
    ("info", None): lambda args, *_: _cmd_info(args),
    ("video", None): _cmd_video,
    ("train", None): _cmd_train,
    ("score", None): _cmd_score,
    ("weights", "fetch"): _cmd_weights_fetch,
    ("weights", "convert"): _cmd_weights_convert,
    ("weights", "info"): _cmd_weights_info,
    ("models", "import"): models.cmd_import,
    ("models", "fetch"): models.cmd_fetch,
    ("models", "export"): models.cmd_export,
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
    except (InputError, DivergedError) as e:
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
    except Exception as e:
        return _plugins_fault(e) or _internal_error()


def _command(argv: Sequence[str] | None) -> int:
    from PIL import Image

    from nst_jax.session import plugins, process

    process.configure_for_program()
    # The command's own pixel limit (--max-pixels) is the one that counts, per file.
    Image.MAX_IMAGE_PIXELS = None
    # JAX warns at every fork; the command forks only to exec (ffmpeg for videos, Ray), which
    # is safe, and its stderr is for the user's one line.
    warnings.filterwarnings("ignore", r"os\.fork\(\) was called", RuntimeWarning)
    if not getattr(sys.unraisablehook, "quiet_closed_loop", False):
        sys.unraisablehook = _quiet_closed_loop(sys.unraisablehook)
    if not getattr(warnings.showwarning, "mends_cache", False):
        warnings.showwarning = _mending_cache(warnings.showwarning)
    absl = logging.getLogger("absl")
    if _not_orbax not in absl.filters:
        absl.addFilter(_not_orbax)
    argv = list(sys.argv[1:] if argv is None else argv)
    # Plug-ins first: the options name their terms (--style-loss covariance).
    plugins.load_plugins(plugin_specs(argv))
    args = build_parser().parse_args(argv)
    with signals.handling(getattr(args, "verbose", False)) as control:
        action = getattr(args, "weights_command", None) or getattr(args, "models_command", None)
        command = COMMANDS[(args.command, action)]
        return command(args, argv, control)


def _not_orbax(record: logging.LogRecord) -> bool:
    """Drop orbax's own log records: it logs what it tolerates (a checkpoint's damaged
    metadata file, twice a read) as errors, while the command says in one line what it
    could not do."""
    return f"{os.sep}orbax{os.sep}" not in record.pathname


def _quiet_closed_loop(default: Callable) -> Callable:
    """``sys.unraisablehook`` without orbax's leftovers: a restore that fails on damaged data
    closes its asyncio loop while tensorstore's reads still finish, and each posts to the
    closed loop, which would print a traceback after the command's one line."""

    def hook(unraisable) -> None:
        error = unraisable.exc_value
        if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
            default(unraisable)

    hook.quiet_closed_loop = True
    return hook


_CACHE_READ = re.compile(r"Error reading persistent compilation cache entry for '([^']*)'")


def _mending_cache(default: Callable) -> Callable:
    """``warnings.showwarning`` that answers JAX's warning about a compilation-cache entry it
    cannot read: the module's damaged entries are removed (so the program is cached whole
    again, :func:`nst_jax.files.compile_cache.remove_damaged`) and one line is printed, once
    a run, instead of two lines an entry."""
    told = []

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        read_error = _CACHE_READ.match(str(message))
        if read_error is None:
            default(message, category, filename, lineno, file, line)
            return
        import jax

        from nst_jax.files import compile_cache

        folder = jax.config.jax_compilation_cache_dir
        removed = []
        with contextlib.suppress(OSError):  # a cache that cannot be mended is only slower
            removed = compile_cache.remove_damaged(folder, read_error[1]) if folder else []
        if not told:
            told.append(True)
            what = (
                "removed a damaged entry"
                if removed
                else "could not read an entry (deleting the folder clears the cache)"
            )
            print(f"nst-jax: warning: compilation cache {folder}: {what}; its program is "
                  "compiled again", file=sys.stderr)  # fmt: skip

    show.mends_cache = True
    return show


def plugin_specs(argv: Sequence[str]) -> list[str]:
    """The ``--plugin`` values of a command line, before it is parsed (up to ``--``)."""
    specs = []
    for index, word in enumerate(argv):
        if word == "--":
            break
        option, equals, value = word.partition("=")
        # argparse takes any unambiguous prefix: --plu (--pl is also --plot's).
        if len(option) < len("--plu") or not "--plugin".startswith(option):
            continue
        if equals:
            specs.append(value)
        elif index + 1 < len(argv):
            specs.append(argv[index + 1])
        else:
            raise InputError("--plugin: expected a .py file or a module name")
    return specs


def build_parser() -> argparse.ArgumentParser:
    """The ``nst-jax`` argument parser: each command's options from its module."""
    from nst_jax.cli import score, stylize, train, video

    parser = Parser(prog="nst-jax", description="Neural style transfer in JAX.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    stylize.add_parser(sub)
    _add_weights_parser(sub)
    info = sub.add_parser("info", help="print the provenance stored in an output PNG")
    info.add_argument("path", metavar="PNG")
    video.add_parser(sub)
    train.add_parser(sub)
    score.add_parser(sub)
    models.add_parser(sub)
    return parser


def _add_weights_parser(sub) -> None:
    weights_parser = sub.add_parser("weights", help="fetch, convert or describe weights files")
    wsub = weights_parser.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    names = sorted(weights.NETWORKS) + sorted(score_weights.SCORE_NETWORKS)
    fetch = wsub.add_parser("fetch", help="download an official file (hash-checked), convert it")
    fetch.add_argument("name", metavar="NAME", nargs="?", default="vgg19", choices=names,
                       help=f"one of {', '.join(names)} (default vgg19)")  # fmt: skip
    convert = wsub.add_parser("convert", help="convert a Keras .h5 to the Flax-native file")
    convert.add_argument("source", metavar="IN")
    convert.add_argument("dest", metavar="OUT", nargs="?")
    convert.add_argument("--force", action="store_true", help="replace an existing OUT")
    convert.add_argument("--lin", metavar="FILE", help="with --network lpips: LPIPS' lin file")
    info = wsub.add_parser("info", help="describe a weights file (default: the one found)")
    info.add_argument("path", metavar="PATH", nargs="?")
    convert.add_argument("--network", choices=names, default="vgg19",
                         help="the network the file holds (default vgg19)")  # fmt: skip
    info.add_argument("--network", choices=sorted(weights.NETWORKS), default="vgg19",
                      help="the network the file holds (default vgg19)")  # fmt: skip


def _plugins_fault(error: Exception) -> int | None:
    """Exit status 2 and one line for an error in a plug-in's code: the user's to fix."""
    from nst_jax.session import plugins

    line = plugins.plugin_fault(error)
    if line is None:
        return None
    print(f"nst-jax: error: {line}", file=sys.stderr)
    return EXIT_INPUT


def _internal_error() -> int:
    traceback.print_exc()
    print("nst-jax: internal error (the traceback above helps a bug report)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
