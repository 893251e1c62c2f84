"""Import a file of ``scripts/`` as a module, for the tests of the tutorial and benchmark code
kept there (``scripts/`` is not a package)."""

import functools
import importlib.util
import pathlib
import types

SCRIPTS = pathlib.Path(__file__).parents[1] / "scripts"


@functools.cache
def load_script(name: str) -> types.ModuleType:
    """``scripts/<name>.py``, imported under ``name``, once per session (a script may
    register something, as ``own_style_loss.py`` its style term)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
