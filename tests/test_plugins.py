"""Plug-in terms everywhere (nst_jax.session.plugins): the command loads them before its
options, records their SHA-256, ``--from`` replays only with the same file, dataset jobs and
video record them; hostile plug-ins and records are one line each."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from nst_jax.cli.main import plugin_specs
from nst_jax.core import style_terms
from nst_jax.errors import InputError
from nst_jax.files import image
from nst_jax.session import plugins

from conftest import FAST, assert_refused, exit_code

OWN_LOSS = Path(__file__).resolve().parents[1] / "scripts" / "own_style_loss.py"


@pytest.fixture(autouse=True)
def _own_registries(monkeypatch):
    """Each test's plug-ins and the terms they register leave with it: the worker process
    runs other tests next, which score every registered term and record loaded plug-ins."""
    monkeypatch.setattr(plugins, "_LOADED", {p.sha256: p for p in plugins.loaded()})
    terms = {name: style_terms.style_term(name) for name in style_terms.names()}
    monkeypatch.setattr(style_terms, "_TERMS", terms)


def run_argv(files: Path, out: str, *extra) -> list[str]:
    return [
        "stylize", files / "content.png", "--style", files / "style.png", "-o", files / out,
        "--weights", files / "w.h5", "--steps", "2", *FAST, *extra,
    ]  # fmt: skip


@pytest.fixture
def made(files, capsys):
    """A result made with the plug-in's term, through the command."""
    argv = run_argv(files, "out/own.png", "--plugin", OWN_LOSS, "--style-loss", "covariance")
    assert exit_code(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    return files / "out" / "own.png"


def test_a_plugin_term_runs_is_recorded_and_replays_to_the_same_pixels(files, made, capsys):
    """Acceptance 3: provenance names the plug-in by hash; --from with it gives the same
    pixels (one machine, one program: bit-identical), and without it is one line."""
    record = image.read_provenance(made)
    digest = hashlib.sha256(OWN_LOSS.read_bytes()).hexdigest()
    assert record["plugins"] == [{"name": "own_style_loss.py", "sha256": digest}]
    assert record["config"]["style_loss"] == "covariance"
    again = files / "out" / "again.png"
    argv = ["stylize", "--from", made, "-o", again, "--weights", files / "w.h5", "-q"]
    assert exit_code([*argv, "--plugin", OWN_LOSS]) == 0, capsys.readouterr().err
    first, second = (np.asarray(image.decode(p)) for p in (made, again))
    assert np.array_equal(first, second)


def test_from_without_the_plugin_is_one_line(files, made, capsys, monkeypatch):
    monkeypatch.setattr(plugins, "_LOADED", {})  # a new process: nothing loaded
    argv = ["stylize", "--from", made, "-o", files / "out" / "x.png", "--weights", files / "w.h5"]
    assert_refused(files, argv, "own.png", "own_style_loss.py", "--plugin", capsys=capsys)


def test_from_with_another_file_of_that_name_is_one_line(files, made, capsys, monkeypatch):
    monkeypatch.setattr(plugins, "_LOADED", {})
    other = files / "elsewhere" / "own_style_loss.py"
    other.parent.mkdir()
    other.write_text("# another file of the same name\n")
    argv = ["stylize", "--from", made, "-o", files / "out" / "x.png", "--plugin", other]
    assert_refused(files, [*argv, "--weights", files / "w.h5"], "sha256", capsys=capsys)


@pytest.mark.slow
def test_a_dataset_job_runs_with_a_plugin_and_records_it(files, capsys, monkeypatch):
    """Acceptance 3: a job (a folder of contents) with the plug-in's term; its manifest
    records the plug-in, and a rerun without it is refused in one line."""
    contents = files / "contents"
    contents.mkdir()
    for name in ("a.png", "b.png"):
        (contents / name).write_bytes((files / "content.png").read_bytes())
    argv = [
        "stylize", contents, "--style", files / "style.png", "-o", files / "job",
        "--weights", files / "w.h5", "--steps", "2", *FAST, "--style-loss", "covariance",
    ]  # fmt: skip
    assert exit_code([*argv, "--plugin", OWN_LOSS]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in (files / "job").glob("*.png")) == ["a.png", "b.png"]
    manifest = json.loads(next((files / "job").rglob("plan.json")).read_text())
    assert "own_style_loss.py" in json.dumps(manifest)
    capsys.readouterr()
    monkeypatch.setattr(plugins, "_LOADED", {})  # a new process: no plug-in given
    code = exit_code(argv)  # the term is still registered here; the record is what differs
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "plugins" in err, err


BAD_PLUGINS = {
    "missing": (None, "cannot read the plug-in"),
    "directory": ("dir", "not a directory"),
    "syntax": ("def (:\n", "not a Python plug-in"),
    "raises": ("x = 1\nraise RuntimeError('no GPU here')\n", "line 2: RuntimeError: no GPU here"),
    "exits": ("import sys\nsys.exit(3)\n", "exit(3)"),
    "not_utf8": (b"\xff\xfe\x00", "not a Python plug-in"),
    "bad_term": ("import nst_jax\nnst_jax.register_style_term('gram', None)\n", "built in"),
}


@pytest.mark.parametrize("case", sorted(BAD_PLUGINS))
def test_a_bad_plugin_is_one_line_before_any_work(files, case, capsys):
    text, fragment = BAD_PLUGINS[case]
    path = files / f"bad_{case}.py"
    if text == "dir":
        path.mkdir()
    elif isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    assert_refused(files, run_argv(files, "out/x.png", "--plugin", path), fragment, capsys=capsys)


def test_a_module_plugin_and_its_errors():
    plugin = plugins.load_plugin("json")  # any importable module; its hash is its file's
    assert plugin.name == "json" and len(plugin.sha256) == 64
    assert plugins.load_plugin("json") is plugin  # loaded once
    with pytest.raises(InputError, match="no such"):
        plugins.load_plugin("nst_jax_no_such_plugin_module")
    for bad in ("", "   ", None, 3):
        with pytest.raises(InputError, match="--plugin"):
            plugins.load_plugin(bad)


def test_a_file_is_loaded_once_per_content(tmp_path):
    path = tmp_path / "count.py"
    path.write_text("import builtins\nbuiltins.nst_jax_test_loads = getattr(builtins, "
                    "'nst_jax_test_loads', 0) + 1\n")  # fmt: skip
    import builtins

    first = plugins.load_plugin(str(path))
    assert plugins.load_plugin(str(path)) is first
    assert builtins.nst_jax_test_loads == 1
    del builtins.nst_jax_test_loads


def test_plugin_options_are_found_before_parsing():
    assert plugin_specs(["stylize", "--plugin", "a.py", "x", "--plugin=b", "--", "--plugin"]) == [
        "a.py",
        "b",
    ]
    with pytest.raises(InputError, match="--plugin"):
        plugin_specs(["stylize", "--plugin"])


@pytest.mark.parametrize(
    "records",
    ["x", [{"name": "a"}], [{"name": "a", "sha256": "z" * 64}], [{"name": 1, "sha256": "a" * 64}]],
)
def test_damaged_plugin_records_are_refused(records):
    with pytest.raises(InputError, match="damaged record"):
        plugins.check_records(records, (), "r.png")


@pytest.mark.slow
def test_a_video_runs_with_a_plugin_and_records_it(files, capsys, monkeypatch):
    """Video takes plug-ins too: its record names them; continuing without them is refused."""
    pytest.importorskip("cv2")
    from PIL import Image

    clip = files / "clip"
    clip.mkdir()
    rng = np.random.default_rng(0)
    for index in range(3):
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(
            clip / f"frame{index}.png"
        )
    out = files / "frames"
    argv = [
        "video", clip, "--style", files / "style.png", "-o", out, "--weights", files / "w.h5",
        "--max-dim", "32", "--steps", "1", "-q", "--style-loss", "covariance",
    ]  # fmt: skip
    assert exit_code([*argv, "--plugin", OWN_LOSS]) == 0, capsys.readouterr().err
    record = json.loads(next(out.rglob("video.json")).read_text())
    assert record["plugins"][0]["name"] == "own_style_loss.py"
    monkeypatch.setattr(plugins, "_LOADED", {})
    assert_refused(files, [*argv, "--resume"], "plugins", capsys=capsys)


TERM_FAULTS = {
    "raises": ("def f(x):\n    raise RuntimeError('boom at trace')\n", "line 2: RuntimeError"),
    "non_scalar": ("import jax.numpy as jnp\ndef f(x):\n    return x\n", "not a scalar"),
}


@pytest.mark.parametrize("case", sorted(TERM_FAULTS))
def test_a_plugin_term_that_fails_is_one_line(files, case, capsys):
    """The plug-in's fault, not nst-jax's: exit 2, its file and line (or what is wrong)."""
    body, fragment = TERM_FAULTS[case]
    name = f"bad_term_{case}"
    loss = "lambda s, t, w=1.0, lw=None: f(next(iter(s.values())))"
    source = body + (
        f"import nst_jax\nnst_jax.register_style_term({name!r}, nst_jax.StyleTerm("
        f"nst_jax.losses.gram_matrix, nst_jax.losses.gram_matrix, {loss}))\n"
    )
    path = files / f"{name}.py"
    path.write_text(source)
    argv = run_argv(files, "out/x.png", "--plugin", path, "--style-loss", name)
    assert_refused(files, argv, fragment, capsys=capsys)


def test_probed_plugin_options(files, capsys, tmp_path):
    """An abbreviated --plug loads the plug-in as argparse reads it; a pipe is refused
    without blocking; a package whose __init__ raises is one line."""
    assert plugin_specs(["stylize", "--plu", "a.py", "--plug=b.py", "--pl", "c"]) == [
        "a.py",
        "b.py",
    ]
    fifo = files / "fifo.py"
    os.mkfifo(fifo)
    assert_refused(files, run_argv(files, "out/x.png", "--plugin", fifo), "regular", capsys=capsys)
    with pytest.raises(InputError, match="its package failed"):
        package = tmp_path / "nst_jax_bad_package"
        package.mkdir()
        (package / "__init__.py").write_text("raise RuntimeError('init fails')\n")
        (package / "sub.py").write_text("")
        import sys

        sys.path.insert(0, str(tmp_path))
        try:
            plugins.load_plugin("nst_jax_bad_package.sub")
        finally:
            sys.path.remove(str(tmp_path))
