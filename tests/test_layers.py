"""The package's layers, read from the code: imports only go down (the core at the ground
floor imports nothing above it, ``errors`` and ``events`` aside), the ``nst-jax`` program is
imported by nothing else and stays small, no module imports itself through others, no
private name is used across modules, modules and functions stay short, and every name the
scripts import exists.

Every import counts, function-local ones included: a cycle hidden inside a function is
still a cycle a reader has to untangle.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "nst_jax"
# Each layer may import the layers before it and itself, nothing after it.
LAYER_ORDER = (
    "errors",
    "events",
    "core",
    "config",
    "presets",
    "files",
    "metrics",
    "run",
    "feedforward",
    "video",
    "dataset",
    "session",
    "cli",
)
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60  # a body's lines, its docstring left out
MAX_PROGRAM_LINES = 2000  # cli/: it parses, calls the library and prints


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(root: Path = ROOT) -> dict[str, Path]:
    """``{dotted name: path}`` of every module of the package."""
    return {module_name(p, root): p for p in sorted((root / PACKAGE).rglob("*.py"))}


def layer(module: str) -> str | None:
    """The layer of a package module: its first name below ``nst_jax``; None for the
    package's own ``__init__`` (the public facade)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def imports(tree: ast.AST, module: str, known: set[str]) -> Iterator[tuple[str, str, int]]:
    """``(imported module, name or "", line)`` for every import of a package module in
    ``tree``, anywhere in the file. ``from a import b`` counts as importing ``a.b`` when that
    is a module, else ``a`` (with the name ``b``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    yield alias.name, "", node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                anchor = module.split(".")[: -node.level] if node.level else []
                base = ".".join([*anchor, *filter(None, [node.module])])
            if base.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in known:
                    yield target, "", node.lineno
                else:
                    yield base, alias.name, node.lineno


def _parse(path: Path) -> ast.AST:
    return ast.parse(path.read_text(), filename=str(path))


def layering_faults(root: Path = ROOT) -> list[str]:
    """Imports that go up a layer, or into the program from outside it."""
    modules = package_modules(root)
    known = set(modules)
    faults = []
    for module, path in modules.items():
        own = layer(module)
        found = {(target, line) for target, _, line in imports(_parse(path), module, known)}
        for target, line in sorted(found):
            theirs = layer(target)
            where = f"{path.relative_to(root)}:{line}"
            if theirs is None or own is None:
                if theirs is None and own is not None:
                    faults.append(f"{where}: {module} imports the package facade")
                continue
            if theirs == "cli" and own != "cli":
                faults.append(f"{where}: {module} imports the program ({target})")
            elif own in LAYER_ORDER and theirs in LAYER_ORDER:
                if LAYER_ORDER.index(theirs) > LAYER_ORDER.index(own):
                    faults.append(f"{where}: {module} ({own}) imports {target} ({theirs})")
            else:
                faults.append(f"{where}: {module} or {target} is in no known layer")
    return faults


def import_cycles(root: Path = ROOT) -> list[list[str]]:
    """Groups of package modules that import each other in a loop (strongly connected
    components of the import graph, function-local imports included)."""
    modules = package_modules(root)
    known = set(modules)
    graph = {
        module: {t for t, _, _ in imports(_parse(path), module, known) if t in known} - {module}
        for module, path in modules.items()
    }
    return [sorted(c) for c in _components(graph) if len(c) > 1]


def _components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = [0]
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph.get(nxt, ()))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    found.append(component)
    return found


def _module_aliases(tree: ast.AST, module: str, known: set[str]) -> dict[str, str]:
    """Local names bound to package modules by imports (``import nst_jax.core.vgg as v``,
    ``from nst_jax.core import vgg``)."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known and alias.asname:
                    aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE):
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                if target in known:
                    aliases[alias.asname or alias.name] = target
    return aliases


def private_uses(root: Path = ROOT) -> list[str]:
    """Private names (``_name``) of a package module used from another file: imported
    (``from m import _f``) or read as an attribute (``m._f``), in the package, its tests and
    its scripts."""
    known = set(package_modules(root))
    files = [*sorted((root / PACKAGE).rglob("*.py"))]
    files += sorted((root / "tests").glob("*.py")) + sorted((root / "scripts").glob("*.py"))
    faults = []
    for path in files:
        if not path.is_file():
            continue
        module = module_name(path, root)
        tree = _parse(path)
        for target, name, line in imports(tree, module, known):
            if name.startswith("_") and not name.startswith("__"):
                faults.append(f"{path.relative_to(root)}:{line}: imports {target}.{name}")
        aliases = _module_aliases(tree, module, known)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                target = aliases[node.value.id]
                faults.append(f"{path.relative_to(root)}:{node.lineno}: uses {target}.{node.attr}")
    return faults


def size_faults(root: Path = ROOT) -> list[str]:
    """Modules over :data:`MAX_MODULE_LINES` lines, functions over
    :data:`MAX_FUNCTION_LINES` (their body, the docstring left out)."""
    faults = []
    for module, path in package_modules(root).items():
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            faults.append(f"{module}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body
                if ast.get_docstring(node) is not None and len(body) > 1:
                    body = body[1:]
                lines = node.end_lineno - body[0].lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    faults.append(f"{module}.{node.name}: {lines} lines")
    return faults


def program_lines(root: Path = ROOT) -> int:
    """Lines of the ``nst-jax`` program (``cli/``)."""
    return sum(p.read_text().count("\n") for p in (root / PACKAGE / "cli").glob("*.py"))


def script_names(root: Path = ROOT) -> list[tuple[str, str, str]]:
    """``(script, module, name)`` of every package name a script uses: imported from a
    module (``from nst_jax.x import y``) or read from an imported package module
    (``nst_jax.stylize``, ``dataset.plan_job``)."""
    known = set(package_modules(root)) | {PACKAGE}
    used = []
    for path in sorted((root / "scripts").glob("*.py")):
        tree = _parse(path)
        aliases = {"nst_jax": PACKAGE} if _imports_package(tree) else {}
        aliases.update(_module_aliases(tree, path.stem, known))
        for name in _bound_names(tree):  # a local of that name is not the module
            aliases.pop(name, None)
        for target, name, _ in imports(tree, path.stem, known):
            used.append((path.name, target, name))
        for node in ast.walk(tree):
            named = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            if named and node.value.id in aliases:
                used.append((path.name, aliases[node.value.id], node.attr))
    return used


def _bound_names(tree: ast.AST) -> set[str]:
    """Names a file binds other than by importing: assigned, or a function's arguments."""
    bound = {
        n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
    }
    return bound | {a.arg for n in ast.walk(tree) if isinstance(n, ast.arg) for a in [n]}


def _imports_package(tree: ast.AST) -> bool:
    return any(
        isinstance(node, ast.Import) and any(a.name == PACKAGE and not a.asname for a in node.names)
        for node in ast.walk(tree)
    )


def missing_script_names(root: Path = ROOT) -> list[str]:
    """The names :func:`script_names` finds that the package does not have, and any use
    of the program (scripts call the library only)."""
    import importlib

    faults = []
    for script, module, name in script_names(root):
        if layer(module) == "cli":
            faults.append(f"{script}: uses the program ({module})")
            continue
        try:
            found = importlib.import_module(module)
        except ImportError:
            faults.append(f"{script}: {module} does not exist")
            continue
        if name and not hasattr(found, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                faults.append(f"{script}: {module}.{name} does not exist")
    return faults


def test_the_program_only_parses_calls_and_prints():
    assert program_lines() <= MAX_PROGRAM_LINES


def test_every_name_the_scripts_use_exists():
    assert script_names(), "no script names found: the reader is broken"
    assert missing_script_names() == []


def test_imports_only_go_down_a_layer():
    assert layering_faults() == []


def test_no_module_imports_itself_through_others():
    assert import_cycles() == []


def test_no_private_name_is_used_across_modules():
    assert private_uses() == []


def test_modules_and_functions_stay_short():
    assert size_faults() == []


def test_every_layer_is_a_folder_of_its_own():
    # The layers a reader sees: core, run, files and cli are subpackages.
    for name in ("core", "run", "files", "cli"):
        assert (ROOT / PACKAGE / name / "__init__.py").is_file(), name


def test_the_rules_find_what_they_are_written_for(tmp_path):
    """The checks on a small made-up package: each rule catches its own fault."""
    pkg = tmp_path / PACKAGE
    for folder in ("core", "run", "cli"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "a.py").write_text("def f():\n    from nst_jax.run import b\n")
    (pkg / "run" / "b.py").write_text("from nst_jax.core import a\nfrom nst_jax.cli import c\n")
    (pkg / "cli" / "c.py").write_text("from nst_jax.core.d import _hidden\n")
    (pkg / "core" / "d.py").write_text("_hidden = 1\n")
    assert len(layering_faults(tmp_path)) == 2  # core -> run, run -> cli
    assert import_cycles(tmp_path) == [["nst_jax.core.a", "nst_jax.run.b"]]
    assert private_uses(tmp_path) == ["nst_jax/cli/c.py:1: imports nst_jax.core.d._hidden"]
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "s.py").write_text("import nst_jax\nnst_jax.nowhere\n")
    assert program_lines(tmp_path) == 1  # cli/c.py
    assert ("s.py", "nst_jax", "nowhere") in script_names(tmp_path)


def test_every_public_name_resolves():
    """``nst_jax.__all__`` spells the facade out for tools; each name is found lazily."""
    import nst_jax

    assert len(set(nst_jax.__all__)) == len(nst_jax.__all__)
    for name in nst_jax.__all__:
        assert getattr(nst_jax, name) is not None, name


if __name__ == "__main__":  # the same checks on another checkout: python test_layers.py DIR
    tree = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT
    for title, found in (
        ("layering", layering_faults(tree)),
        ("cycles", import_cycles(tree)),
        ("private names", private_uses(tree)),
        ("sizes", size_faults(tree)),
        ("scripts' names", missing_script_names(tree)),
    ):
        print(f"{title}: {len(found)}")
        for fault in found:
            print(f"  {fault}")
