"""Import a file of ``scripts/`` as a module, for the tests of the tutorial and benchmark code
kept there (``scripts/`` is not a package)."""

import importlib.util
import pathlib
import types

SCRIPTS = pathlib.Path(__file__).parents[1] / "scripts"


def load_script(name: str) -> types.ModuleType:
    """``scripts/<name>.py``, imported under ``name``."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
