"""Training a feed-forward model with its lifecycle (what ``nst-jax train`` runs): the run's
record, its folder, checkpoints, the loss log, progress, stopping when asked, and the model
written at the end (:mod:`nst_jax.feedforward`).

The model folder gets the training record (``train.json``: what the run depends on; a run
continues only on the same record), orbax checkpoints (``checkpoints/``), the loss log
(``log.jsonl``: a line a step, its ``step`` the steps done, as a stylisation's log counts
them) and, at the end, the model (``model.json``, ``params.msgpack``). A stopped or killed
run continues with ``resume=True`` to the params an uninterrupted one reaches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import NamedTuple

from nst_jax.core.objective import WEIGHT_FIELDS, ObjectiveConfig
from nst_jax.errors import InputError, shown
from nst_jax.feedforward.train import TrainSettings
from nst_jax.files import image, json_record, weights
from nst_jax.files.atomic import atomic_write
from nst_jax.files.digest import sha256
from nst_jax.session import inputs, outputs, train_checkpoints
from nst_jax.session.control import Control
from nst_jax.session.watch import Watcher, check_extras

RECORD_VERSION = 1
RUN_FILE, LOG_FILE, CHECKPOINTS = "train.json", "log.jsonl", "checkpoints"
OWN_FILES = (RUN_FILE, LOG_FILE, CHECKPOINTS, "model.json", "params.msgpack")


@dataclasses.dataclass(frozen=True)
class TrainRequest:
    """A training run: its settings, data, style and folder.

    Attributes:
      settings: the training settings (``None`` fields: the paper's).
      objective: johnson: what the network is trained to minimise; adain: ``None``.
      data: the folder of training images.
      output: the model folder.
      style: johnson: the style image.
      styles: adain: the folder of style images.
      style_size: johnson: the style's longest side (default: the crops' size).
      checkpoint_every: steps between checkpoints.
      resume: continue the run the folder holds; ``force``: start it over.
      plot: a plot of the loss terms, written at the end.
      weights: the VGG19 weights file (``None``: searched).
      progress: draw a progress bar.
      max_pixels: the style and the training images larger than this are refused (the
        style) or passed over (a training image); ``None``: no limit.
    """

    settings: TrainSettings
    data: str
    output: str
    objective: ObjectiveConfig | None = None
    style: str | None = None
    styles: str | None = None
    style_size: int | None = None
    checkpoint_every: int = 500
    resume: bool = False
    force: bool = False
    plot: str | None = None
    weights: str | None = None
    progress: bool = False
    max_pixels: int | None = image.MAX_PIXELS


class TrainOutcome(NamedTuple):
    """What a training run did: its folder, the closing line, and the step it stopped at
    when asked to stop (else ``None``)."""

    folder: Path
    line: str
    stopped: int | None


def check_request(request: TrainRequest) -> TrainRequest:
    """``request`` with its settings resolved, checked as a whole (one line each)."""
    method = request.settings.method
    if method == "johnson" and request.styles is not None:
        raise InputError("--styles DIR is adain's; johnson trains one --style")
    if method == "adain" and request.style is not None:
        raise InputError("--style is johnson's (one style); adain takes --styles DIR")
    if method == "johnson" and request.style is None:
        raise InputError("johnson trains one style: give --style")
    if method == "adain" and request.styles is None:
        raise InputError("adain trains on a folder of styles: give --styles DIR")
    outputs.check_resume_or_force(request.resume, request.force)
    image.check_max_pixels(request.max_pixels)
    if (method == "johnson") != (request.objective is not None):
        raise InputError("an objective is johnson's; adain trains on its paper's loss")
    if request.objective is not None:
        check_one_objective(request.objective)
    if not isinstance(request.output, (str, os.PathLike)) or not str(request.output):
        raise InputError("-o: an empty path; give the model's folder")
    try:
        settings = request.settings.resolved()
    except ValueError as e:
        raise InputError(str(e)) from None
    return dataclasses.replace(request, settings=settings)


def check_one_objective(objective) -> None:
    """A network learns one objective: no sweep of the term weights (one result each when
    stylising) and no blend of several styles (johnson trains one ``--style``)."""
    swept = [f for f in WEIGHT_FIELDS.values() if isinstance(getattr(objective, f), tuple)]
    if swept:
        options = ", ".join("--" + f.replace("_", "-") for f in swept)
        raise InputError(f"{options}: a training run takes one value, not a sweep")
    if objective.style_blend is not None:
        raise InputError("--style-blend: johnson trains one --style; a blend is stylize's")


def files_digest(files: list[Path], folder: str) -> dict:
    """A folder's training files as the record keeps them: count and names' SHA-256."""
    names = "\n".join(p.relative_to(folder).as_posix() for p in files)
    return {"folder": str(Path(folder).resolve()), "files": len(files),
            "names_sha256": hashlib.sha256(names.encode()).hexdigest()}  # fmt: skip


def record(request: TrainRequest, contents: list, styles: list | None, weights_path) -> dict:
    """What the run depends on: ``resume`` continues only the same record."""
    import jax

    objective = request.objective
    return {
        "version": RECORD_VERSION,
        "backend": jax.default_backend(),  # another backend rounds differently
        "settings": dataclasses.asdict(request.settings),
        "config": None if objective is None else dataclasses.asdict(objective),
        "style_size": request.style_size,
        "style_sha256": None if request.style is None else sha256(request.style),
        "data": files_digest(contents, request.data),
        "styles": None if styles is None else files_digest(styles, request.styles),
        "weights_md5": weights.md5sum(weights_path),
    }


def check_folder(folder: Path, record: dict, request: TrainRequest) -> None:
    """The model folder must be new, empty or this run's own (``resume``, ``force``)."""
    outputs.check_folder(folder, "the model")
    if not folder.exists() or not any(folder.iterdir()):
        return  # a new run, resume or not: the same command starts it and continues it
    run_file = folder / RUN_FILE
    if not run_file.is_file():
        raise InputError(f"{shown(folder)}: not empty and not a training run; choose another -o")
    if request.force:
        return
    if not request.resume:
        raise InputError(f"{shown(folder)}: holds a training run; --resume continues it, "
                         "--force starts over")  # fmt: skip
    _check_same(folder, _stored(run_file), record)


def _stored(run_file: Path) -> dict:
    try:
        stored = json_record.read(run_file)
    except (OSError, ValueError) as e:
        raise InputError(f"{shown(run_file)}: damaged training record ({e})") from None
    if not isinstance(stored, dict):
        raise InputError(f"{shown(run_file)}: not a training record of this version")
    return stored


def _check_same(folder: Path, stored: dict, record: dict) -> None:
    """Refuse to continue another run, naming what differs. The objective is compared on
    its own fields: a record of earlier versions held every stylisation setting there."""
    if stored.keys() != record.keys():
        raise InputError(f"{shown(folder / RUN_FILE)}: not a training record of this version")
    method = (stored.get("settings") or {}).get("method")
    if method != record["settings"]["method"]:
        raise InputError(f"{shown(folder)}: a {method} training run; --method "
                         f"{record['settings']['method']} cannot resume it")  # fmt: skip
    record = json.loads(json.dumps(record))  # tuples as the file holds them: lists
    if isinstance(stored["config"], dict) and isinstance(record["config"], dict):
        stored = {**stored, "config": {k: stored["config"].get(k) for k in record["config"]}}
    changed = [key for key in record if stored[key] != record[key]]
    if changed:
        raise InputError(f"{shown(folder)}: --resume with other {', '.join(changed)} than the "
                         "run's; --force starts over")  # fmt: skip


def start_over(folder: Path) -> None:
    """Remove the run's own files (nothing else) from the model folder."""
    for name in OWN_FILES:
        path = folder / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


class Prepared(NamedTuple):
    """A training run checked before any work: its request (resolved), record, files."""

    request: TrainRequest
    record: dict
    contents: list
    styles: list | None
    weights_path: Path


def prepare(request: TrainRequest, control: Control) -> Prepared:
    """Everything checked before any work: the request, its files, its record, its folder."""
    from nst_jax.feedforward import data

    control.phase("checking settings")
    request = check_request(request)
    found = data.image_files(request.data, "--data", request.max_pixels)
    theirs = (
        data.image_files(request.styles, "--styles", request.max_pixels) if request.styles else None
    )
    check_outside_inputs(Path(request.output), request)
    contents, styles = found.files, theirs.files if theirs else None
    if request.style is not None:
        image.decode(request.style, request.max_pixels)  # one line now, not after loading
    weights_path = weights.find_weights(request.weights, training_network(request))
    made = record(request, contents, styles, weights_path)
    check_folder(Path(request.output), made, request)
    if request.plot:
        check_plot(request, contents, styles, weights_path)
    for passed in (found.passed, theirs.passed if theirs else []):  # once nothing is refused
        if passed:
            control.note(inputs.passed_note(passed))
    return Prepared(request, made, contents, styles, weights_path)


def check_plot(request: TrainRequest, contents: list, styles: list | None, weights_path) -> None:
    """``--plot`` is checked as every output is: it never replaces an input (a training
    image, a style, the weights) nor the run's record or log, and replaces another file
    only with ``--force`` (or, resuming, the plot the run wrote before)."""
    check_extras(Path(request.plot), None)
    folder = Path(request.output)
    reads = [(Path(p), "--data") for p in contents] + [(Path(p), "--styles") for p in styles or []]
    reads += [(Path(request.style), "--style")] if request.style is not None else []
    reads += [(Path(weights_path), "the weights")] if weights_path is not None else []
    reads += [(folder / RUN_FILE, "the run's record"), (folder / LOG_FILE, "the run's log")]
    plot = outputs.Output(Path(request.plot), "--plot", own=True)
    outputs.check_outputs([plot], reads, force=request.force, resume=request.resume)


def check_outside_inputs(folder: Path, request: TrainRequest) -> None:
    """The model folder must not lie in ``--data`` or ``--styles``: its files would be
    walked as training images by every later run over that folder."""
    for option, images in (("--data", request.data), ("--styles", request.styles)):
        if images is None:
            continue
        inside = Path(images).resolve()
        if folder.resolve() == inside or inside in folder.resolve().parents:
            raise InputError(f"{shown(folder)}: the model folder lies inside {option} "
                             f"{shown(images)}; choose -o outside it")  # fmt: skip


def training_network(request: TrainRequest) -> str:
    """The network whose weights a training run loads: the objective's extractor (Johnson),
    VGG19 (AdaIN's encoder, by its paper)."""
    return inputs.network(request.objective) if request.objective is not None else "vgg19"


def run_training(request: TrainRequest, control: Control | None = None) -> TrainOutcome:
    """Train (or continue) ``request``'s run; the model is written at its end.

    Raises:
      InputError: refused before any work (one line).
    """
    import jax

    from nst_jax.feedforward import train

    control = control or Control()
    request, made, contents, styles, weights_path = prepare(request, control)
    folder = Path(request.output)
    if request.force:
        start_over(folder)
    control.phase("loading weights")
    vgg_params = weights.load_weights(weights_path, training_network(request))
    targets = _style_targets(request, vgg_params)
    state = _start_state(request, folder)
    start = int(state["step"])
    control.own_outputs()
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(made, indent=2, sort_keys=True) + "\n"
    atomic_write(folder / RUN_FILE, lambda tmp: tmp.write_text(text))
    watcher = _watcher(request, folder, start, control)
    unreadable: set = set()
    if start < request.settings.steps:
        batches = train.step_batches(
            request.settings,
            contents,
            styles,
            start,
            unreadable=unreadable,
            max_pixels=request.max_pixels,
        )
        control.phase("running")
        state = train.fit(
            request.settings, state, vgg_params, batches, targets, request.objective, watcher
        )
        watcher.checkpoint.save(state)
        if unreadable:
            first = shown(sorted(unreadable)[0])
            control.note(f"{len(unreadable)} training images could not be decoded; each "
                         f"was replaced by the next readable one ({first}, ...)")  # fmt: skip
        if int(state["step"]) < request.settings.steps:  # stopped when asked
            return TrainOutcome(folder, "", int(state["step"]))
    watcher.finish()
    _finish(request, made, folder, jax.device_get(state["params"]))
    last = watcher.records[-1]["total"] if watcher.records else float("nan")
    line = f"trained {request.settings.method} for {request.settings.steps} steps -> {folder} "
    return TrainOutcome(folder, f"{line}(last loss {last:.6g})", None)


def _start_state(request: TrainRequest, folder: Path) -> dict:
    from nst_jax.feedforward import train

    state = train.init_state(request.settings)
    saved = folder / CHECKPOINTS
    if request.resume and train_checkpoints.latest_step(saved) is not None:
        state = train_checkpoints.restore(saved, state)
    return state


def _watcher(request: TrainRequest, folder: Path, start: int, control: Control) -> Watcher:
    return Watcher(
        progress=request.progress,
        log=folder / LOG_FILE,
        resume_step=start,
        checkpoint=train_checkpoints.TrainCheckpoints(folder / CHECKPOINTS),
        checkpoint_every=request.checkpoint_every,
        plot=Path(request.plot) if request.plot else None,
        stop=control.stop_requested,
    )


def _style_targets(request: TrainRequest, vgg_params):
    """Johnson's style targets (the style's Grams, or its registered term's statistics)."""
    if request.settings.method != "johnson":
        return None
    import jax.numpy as jnp

    from nst_jax.core.targets import make_targets

    size = request.settings.size
    style = image.load(request.style, request.style_size or size, request.max_pixels)
    placeholder = jnp.zeros((size, size, 3), jnp.float32)
    return make_targets(vgg_params, placeholder, style, request.objective)


def _finish(request: TrainRequest, made: dict, folder: Path, params) -> None:
    """The model folder's model."""
    from nst_jax.feedforward import model

    style = None
    if request.style is not None:
        style = {"path": str(Path(request.style).resolve()), "sha256": made["style_sha256"],
                 "size": request.style_size or request.settings.size}  # fmt: skip
    info = {"config": made["config"], "style": style, "vgg_md5": made["weights_md5"],
            "data": made["data"], "styles": made["styles"]}  # fmt: skip
    model.save_model(folder, request.settings, params, info)
