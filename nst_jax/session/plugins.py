"""Plug-ins: Python files or modules that register style terms (or extractors) before a run.

A plug-in is code the user names (``nst-jax stylize --plugin own_loss.py``); loading it runs
it, as ``python own_loss.py`` would. It registers what it brings through the public
registries (:func:`nst_jax.register_style_term`, :func:`nst_jax.register_extractor`), and the
run records each plug-in's name and the SHA-256 of its file, so that:

- a result's provenance says which code made it;
- ``--from`` replays it only when the same plug-ins are given again on the command line
  (a record never loads code: it names files, and the user chooses to run them);
- dataset jobs record them in their manifest, refuse a rerun with other ones, and load them
  in every worker.

Loading is idempotent per file content: the same file twice is loaded once.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import stat
import sys
import traceback
from pathlib import Path
from typing import Any, NamedTuple

from nst_jax.errors import InputError, shown


class Plugin(NamedTuple):
    """One loaded plug-in: what a record stores (``name``, ``sha256``) and where it was."""

    name: str
    path: str
    sha256: str

    def record(self) -> dict[str, str]:
        """The plug-in as stored in provenance and manifests (no path: it is machine's)."""
        return {"name": self.name, "sha256": self.sha256}


_LOADED: dict[str, Plugin] = {}  # by sha256: the same code is run once per process


def load_plugin(spec: str) -> Plugin:
    """Run the plug-in ``spec``: a ``.py`` file, or an importable module's dotted name.

    Raises:
      InputError: no such file or module, not Python, or the plug-in raised (one line naming
        it and its error).
    """
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"--plugin: expected a .py file or a module name, got {spec!r}")
    path = Path(spec)
    if spec.endswith(".py") or path.exists():
        return _load_file(path)
    return _load_module(spec.strip())


def _load_file(path: Path) -> Plugin:
    try:
        if path.exists() and not path.is_dir() and not stat.S_ISREG(path.stat().st_mode):
            raise InputError(f"{shown(path)}: a plug-in is a regular .py file")  # a pipe blocks
        data = path.read_bytes()
    except IsADirectoryError:
        raise InputError(f"{shown(path)}: a plug-in is a .py file, not a directory") from None
    except OSError as e:
        raise InputError(f"{shown(path)}: cannot read the plug-in ({e.strerror})") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest in _LOADED:
        return _LOADED[digest]
    # A name of its own per content: two files called loss.py never replace each other.
    module_name = f"nst_jax_plugin_{digest[:16]}"
    try:
        source = data.decode("utf-8")
        # dont_inherit: the plug-in gets its own __future__ flags, not this module's.
        code = compile(source, str(path.resolve()), "exec", dont_inherit=True)
    except (UnicodeDecodeError, SyntaxError, ValueError) as e:
        raise InputError(f"{shown(path)}: not a Python plug-in ({_first_line(e)})") from None
    module = importlib.util.module_from_spec(
        importlib.util.spec_from_loader(module_name, loader=None, origin=str(path))
    )
    module.__file__ = str(path.resolve())
    _run(lambda: exec(code, module.__dict__), path, str(path.resolve()))
    sys.modules[module_name] = module
    plugin = Plugin(path.name, str(path.resolve()), digest)
    _LOADED[digest] = plugin
    return plugin


def _load_module(name: str) -> Plugin:
    try:
        spec = importlib.util.find_spec(name)  # imports the parent packages
    except (ImportError, ValueError) as e:
        raise InputError(f"--plugin {name}: no such module ({_first_line(e)})") from None
    except Exception as e:  # noqa: BLE001 - a parent package's own code failed
        raise InputError(f"--plugin {name}: its package failed: {_first_line(e)}") from None
    if spec is None or spec.origin is None or not Path(spec.origin).is_file():
        raise InputError(f"--plugin {name}: no such file or importable module")
    digest = hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()
    if digest in _LOADED:
        return _LOADED[digest]
    _run(lambda: importlib.import_module(name), name)
    plugin = Plugin(name, spec.origin, digest)
    _LOADED[digest] = plugin
    return plugin


def _run(load: Any, where: Any, code_file: str = "") -> None:
    """Run a plug-in's code; what it raises becomes one line naming it and the line."""
    try:
        load()
    except SystemExit as e:
        raise InputError(f"{shown(where)}: the plug-in called exit({e.code})") from None
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - any error of user code, reported in one line
        # The line of the plug-in's own code that raised (not of the library it called).
        frames = [
            f
            for f in traceback.extract_tb(e.__traceback__)
            if f.filename in (str(where), code_file)
        ]
        at = f" at line {frames[-1].lineno}" if frames else ""
        raise InputError(
            f"{shown(where)}: the plug-in failed{at}: {type(e).__name__}: {_first_line(e)}"
        ) from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def plugin_records(plugins: tuple[Plugin, ...]) -> dict[str, list[dict[str, str]]]:
    """``{"plugins": [...]}`` to add to a record, or nothing when there are none (so a
    record of a run without plug-ins is as it was before they existed)."""
    return {"plugins": [plugin.record() for plugin in plugins]} if plugins else {}


def plugin_fault(error: BaseException) -> str | None:
    """One line for an error raised in a loaded plug-in's code (a term that fails when it is
    traced, say), naming the plug-in's file and line; ``None`` when no plug-in's code is in
    the traceback (an error of nst_jax itself)."""
    paths = {plugin.path for plugin in _LOADED.values()}
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename in paths]
    if not frames:
        return None
    return (
        f"{shown(frames[-1].filename)}: the plug-in failed at line {frames[-1].lineno}: "
        f"{type(error).__name__}: {_first_line(error)}"
    )


def loaded() -> tuple[Plugin, ...]:
    """The plug-ins this process has loaded, in order."""
    return tuple(_LOADED.values())


def load_plugins(specs: tuple[str, ...] | list[str]) -> tuple[Plugin, ...]:
    """Load each plug-in in order (see :func:`load_plugin`)."""
    return tuple(load_plugin(spec) for spec in specs)


def load_same(wanted: tuple[Plugin, ...] | list[Plugin]) -> None:
    """Load plug-ins another process loaded (a Ray worker's setup), each from its path.

    Raises:
      InputError: a file that is not there, or whose contents differ from the loaded one's.
    """
    for plugin in wanted:
        found = load_plugin(plugin.path)
        if found.sha256 != plugin.sha256:
            raise InputError(f"{plugin.path}: the plug-in changed since the job started")


def check_records(records: Any, plugins: tuple[Plugin, ...], where: str) -> None:
    """Refuse to continue or replay a run made with plug-ins that are not loaded now.

    ``records`` is untrusted (a PNG's provenance, a manifest): a list of ``{name, sha256}``.

    Raises:
      InputError: a damaged list, or a recorded plug-in whose code is not among ``plugins``.
    """
    if records is None:
        records = []
    if not isinstance(records, list) or not all(_is_record(r) for r in records):
        raise InputError(f"{where}: damaged record: plugins is not a list of name and sha256")
    have = {plugin.sha256 for plugin in plugins}
    for record in records:
        if record["sha256"] not in have:
            raise InputError(
                f"{where}: made with the plug-in {shown(repr(record['name']), 80)} "
                f"(sha256 {record['sha256'][:12]}...); give --plugin with that same file"
            )


def _is_record(record: Any) -> bool:
    return (
        isinstance(record, dict)
        and set(record) == {"name", "sha256"}
        and isinstance(record["name"], str)
        and isinstance(record["sha256"], str)
        and len(record["sha256"]) == 64
        and all(c in "0123456789abcdef" for c in record["sha256"])
    )
