"""``nst-jax stylize CONTENT... --model MODEL/ -o OUT``: a trained feed-forward model
(:mod:`nst_jax.feedforward.model`) applied in one forward pass per batch.

A Johnson model carries its style; an AdaIN model takes ``--style`` (one result per style,
or one mix with ``--style-blend``) and ``--alpha``. One content and an image ``-o`` make one
result; anything else is a dataset job into the folder ``-o`` (planned, streamed, continued
by rerunning, ``--shard``), with the model in place of optimisation.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from nst_jax.cli import jobs, outputs, values, watch
from nst_jax.cli.options import DEFAULT_MAX_DIM, config_from_args
from nst_jax.config import StyleConfig
from nst_jax.errors import InputError, shown
from nst_jax.files import image, weights


def alpha(text: str) -> float:
    """``--alpha``: a number from 0 to 1."""
    value = values.number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def add_options(sub: Any) -> None:
    """``--model`` and ``--alpha`` of the ``stylize`` command."""
    group = sub.choices["stylize"].add_argument_group("feed-forward models (nst-jax train)")
    group.add_argument("--model", metavar="MODEL", help="apply a trained model, no optimisation")
    group.add_argument("--alpha", type=alpha, help="adain: content (0) to style (1); default 1")


def run(args: argparse.Namespace) -> int:
    """``stylize --model``; returns the exit status."""
    from nst_jax.feedforward import model as models

    if not (args.content or args.files_from) or not args.output:
        raise InputError("CONTENT and -o are required")
    args.style = args.style or []
    record = models.read_record(args.model)
    config = _config(args, record["method"])
    if args.engine == "ray":
        raise InputError("--engine ray runs optimisation; a model job runs here")
    args.max_dim = args.max_dim or DEFAULT_MAX_DIM
    vgg_path = _vgg_path(args, record)
    meta = _metadata(args, record)
    plan = None if _one_result(args) else _plan(args, config, meta, vgg_path)
    if plan is None:
        _check_single(args)
    model = models.load_model(args.model)
    vgg = weights.load_vgg19(vgg_path) if vgg_path is not None else None
    styles = [image.load(s, args.max_dim, args.max_pixels) for s in args.style]
    apply = _applier(model, vgg, styles, config, 1.0 if args.alpha is None else args.alpha)
    if plan is None:
        return _single(args, apply, meta)
    from nst_jax import dataset

    continuing = dataset.start(plan, force=args.force)
    resources = dataset.Resources(
        None, config, metadata=meta, replace=args.force, workers=args.workers,
        continuing=continuing, apply=apply,
    )  # fmt: skip
    return jobs.report(args, plan, resources, jobs.shard_of(args))


def _plan(args: argparse.Namespace, config: StyleConfig, meta: dict, vgg_path):
    """The dataset job's plan, its outputs checked. A Johnson model's job names the
    model's params as its one style (the plan's settings then hold the model)."""
    from nst_jax import dataset
    from nst_jax.feedforward import model as models

    params = Path(args.model) / models.PARAMS_FILE
    plan = dataset.plan_job(
        args.content, args.style or [str(params)], args.output, config, jobs.job_settings(args),
        args.files_from, extra_settings={"model": meta["model"], "alpha": meta["alpha"]},
    )  # fmt: skip
    jobs.check_outputs(args, plan, config, vgg_path or params)
    return plan


def _config(args: argparse.Namespace, method: str) -> StyleConfig:
    """Refuse what a model does not take (optimisation's settings, the other method's
    options); the config keeps ``--style-blend`` (an AdaIN mix)."""
    given = [
        "--" + f.name.replace("_", "-")
        for f in dataclasses.fields(StyleConfig)
        if getattr(args, f.name, None) is not None and f.name != "style_blend"
    ]
    given += ["--" + o.replace("_", "-") for o in watch.WATCH_OPTIONS if getattr(args, o)]
    given += [o for o, v in (("--mask", args.mask), ("--mask-labels", args.mask_labels)) if v]
    if given:
        raise InputError(
            f"{', '.join(given)}: optimisation's settings; --model stylises in one pass"
        )
    if method == "johnson" and (args.style or args.alpha is not None or args.style_blend):
        raise InputError(f"{shown(args.model)}: a johnson model has its style built in; "
                         "--style, --alpha and --style-blend are for adain models")  # fmt: skip
    if method == "adain" and not args.style:
        raise InputError(f"{shown(args.model)}: an adain model needs --style")
    return config_from_args(args)


def _vgg_path(args: argparse.Namespace, record: dict) -> Path | None:
    """AdaIN's encoder weights: they must be those the decoder was trained with."""
    if record["method"] != "adain":
        return None
    path = weights.find_weights(args.weights)
    digest = weights.md5sum(path)
    if digest != record.get("vgg_md5"):
        raise InputError(f"{shown(path)}: VGG19 weights MD5 {digest}, but {shown(args.model)} "
                         f"was trained with {record.get('vgg_md5')}")  # fmt: skip
    return path


def _applier(model, vgg, styles: list, config: StyleConfig, alpha: float):
    """``apply(contents, style_sets)`` for the dataset engine: each run of items that share
    a style set in one pass. The styles are encoded once, for every batch."""
    from nst_jax.feedforward.model import apply_model, encode_styles

    encoded = encode_styles(vgg, styles) if model.settings.method == "adain" else []

    def apply(contents: np.ndarray, style_sets: list[tuple[int, ...]]) -> np.ndarray:
        results = np.empty_like(contents)
        for chosen in dict.fromkeys(style_sets):
            rows = [i for i, s in enumerate(style_sets) if s == chosen]
            blend = config.style_blend if len(chosen) > 1 else None
            mixed = [encoded[s] for s in chosen] if encoded else None
            out = apply_model(model, contents[rows], vgg, (), blend, alpha, mixed)
            results[rows] = np.asarray(out)
        return results

    return apply


def _metadata(args: argparse.Namespace, record: dict) -> dict:
    """Provenance stored in each PNG result."""
    return {
        "command": args.argv,
        "model": {"path": str(Path(args.model).resolve()), "method": record["method"],
                  "params_sha256": record["params_sha256"]},
        "alpha": args.alpha,
        "style": [str(s) for s in args.style or []],
        "max_dim": args.max_dim,
    }  # fmt: skip


def _one_result(args: argparse.Namespace) -> bool:
    """One content file, one style set, and an image ``-o``."""
    sets = 1 if args.style_blend or len(args.style or []) <= 1 else len(args.style)
    suffix = Path(args.output).suffix.lower()
    one = len(args.content) == 1 and not args.files_from and not Path(args.content[0]).is_dir()
    return one and sets == 1 and suffix in image.SAVE_FORMATS


def _check_single(args: argparse.Namespace) -> None:
    """The one result's path: writable, and not an input."""
    reads = [(Path(args.content[0]), "CONTENT"), *((Path(s), "--style") for s in args.style)]
    reads.append((Path(args.model), "--model"))
    planned = [outputs.Output(Path(args.output), "the result")]
    outputs.check_outputs(planned, reads, force=args.force)


def _single(args: argparse.Namespace, apply, meta: dict) -> int:
    """Stylise one content into ``-o``."""
    out = Path(args.output)
    content = image.load(args.content[0], args.max_dim, args.max_pixels)
    chosen = tuple(range(len(args.style))) if args.style else ()
    result = apply(content[None], [chosen])[0]
    image.save(out, result, metadata={**meta, "content": args.content[0]}, replace=args.force)
    print(f"stylised {args.content[0]} -> {out}")
    return 0
