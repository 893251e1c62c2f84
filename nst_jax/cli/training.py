"""The training run of ``nst-jax train``: loading, the loop with its progress bar, loss
log and checkpoints, stopping on a signal, and the model written at the end.

The loss log (``MODEL/log.jsonl``) has one line a step: the step, the loss before it and
its terms, and the seconds since the run (or its continuation) started. A continued run
keeps the lines of the steps its checkpoint holds and goes on from there, so the log of a
stopped-and-continued run lists each step once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from nst_jax.errors import OutputError
from nst_jax.files import weights
from nst_jax.files.atomic import atomic_write

RUN_FILE, LOG_FILE, CHECKPOINTS = "train.json", "log.jsonl", "checkpoints"
OWN_FILES = (RUN_FILE, LOG_FILE, CHECKPOINTS, "model.json", "params.msgpack")


def run(args, settings, config, record, contents, styles, weights_path, plot) -> int:
    """Train (or continue) the run ``record`` describes; returns the exit status."""
    import jax

    from nst_jax.feedforward import checkpoints, train

    folder = Path(args.output)
    args.signals.phase("loading weights")
    vgg_params = weights.load_vgg19(weights_path)
    targets = _style_targets(args, settings, config, vgg_params)
    state = train.init_state(settings)
    if args.resume and checkpoints.latest_step(folder / CHECKPOINTS) is not None:
        state = checkpoints.restore(folder / CHECKPOINTS, state)
    start = int(state["step"])
    args.signals.own_outputs()
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    atomic_write(folder / RUN_FILE, lambda tmp: tmp.write_text(text))
    log = _Log(folder / LOG_FILE, start)
    if start < settings.steps:
        batches = train.step_batches(settings, contents, styles, start)
        watcher = _Watcher(args, settings, folder, log, start)
        args.signals.phase("running")
        state = train.fit(settings, state, vgg_params, batches, targets, config, watcher)
        watcher.close()
        if int(state["step"]) < settings.steps:  # stopped by a signal
            checkpoints.save(folder / CHECKPOINTS, state)
            where = folder / CHECKPOINTS
            print(f"nst-jax: stopped at step {int(state['step'])}; the checkpoint is kept in "
                  f"{where}; rerun with --resume to continue", file=sys.stderr)  # fmt: skip
            return args.signals.status() or 0
        checkpoints.save(folder / CHECKPOINTS, state)
    _finish(args, settings, config, record, folder, jax.device_get(state["params"]), log, plot)
    return args.signals.status() or 0


def _style_targets(args, settings, config, vgg_params):
    """Johnson's style targets (the style's Grams, or its registered term's statistics)."""
    if settings.method != "johnson":
        return None
    import jax.numpy as jnp

    from nst_jax.core.objective import make_targets
    from nst_jax.files import image

    style = image.load(args.style, args.style_size or settings.size)
    placeholder = jnp.zeros((settings.size, settings.size, 3), jnp.float32)
    return make_targets(vgg_params, placeholder, style, config)


class _Log:
    """``log.jsonl``: the lines of the steps before ``start`` kept, then one a step."""

    def __init__(self, path: Path, start: int):
        self.path = path
        self.records = []
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError):
                    break  # a line cut by a kill: the steps after it are redone
                if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                    break
                if record["step"] >= start:
                    break
                self.records.append(record)
        lines = "".join(json.dumps(r) + "\n" for r in self.records)
        atomic_write(path, lambda tmp: tmp.write_text(lines))

    def add(self, record: dict) -> None:
        self.records.append(record)
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise OutputError(f"{self.path}: cannot write ({e.strerror})") from None


class _Watcher:
    """``fit``'s ``on_step``: progress, the log, checkpoints, and stopping on a signal."""

    def __init__(self, args: argparse.Namespace, settings, folder: Path, log: _Log, start: int):
        from tqdm import tqdm

        self.args, self.settings, self.folder, self.log = args, settings, folder, log
        self.every, self.began = args.checkpoint_every, time.perf_counter()
        self.bar = tqdm(
            total=settings.steps, initial=start, unit="step", disable=args.quiet, file=sys.stderr
        )

    def __call__(self, state, value, terms) -> bool:
        from nst_jax.feedforward import checkpoints

        step = int(state["step"])
        record = {"step": step - 1, "total": float(value)}
        record.update({name: float(v) for name, v in terms.items()})
        record["seconds"] = round(time.perf_counter() - self.began, 3)
        self.log.add(record)
        self.bar.update(1)
        self.bar.set_postfix_str(f"loss {record['total']:.4g}", refresh=False)
        if step % self.every == 0 and step < self.settings.steps:
            checkpoints.save(self.folder / CHECKPOINTS, state)
        return self.args.signals.received is not None

    def close(self) -> None:
        self.bar.close()


def _finish(args, settings, config, record, folder, params, log: _Log, plot) -> None:
    """The model folder's model, the plot, and the last line of the report."""
    from nst_jax.feedforward import model

    info = {
        "config": record["config"],
        "style": None if args.style is None else {
            "path": str(Path(args.style).resolve()), "sha256": record["style_sha256"],
            "size": args.style_size or settings.size,
        },
        "vgg_md5": record["weights_md5"],
        "data": record["data"],
        "styles": record["styles"],
    }  # fmt: skip
    model.save_model(folder, settings, params, info)
    if plot is not None:
        from nst_jax.cli import watch

        terms = ("total", "content", "style") + (("tv",) if settings.method == "johnson" else ())
        watch.plot_losses(log.records, plot, terms)
    last = log.records[-1]["total"] if log.records else float("nan")
    print(f"trained {settings.method} for {settings.steps} steps -> {folder} "
          f"(last loss {last:.6g})")  # fmt: skip
