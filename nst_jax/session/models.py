"""A trained or imported feed-forward model applied with its lifecycle (what ``nst-jax
stylize --model`` runs): one forward pass per batch (:mod:`nst_jax.feedforward.model`).

A Johnson model carries its style; an AdaIN or ``arbitrary`` model takes styles (one
result per style, or one mix with ``style_blend``) and ``alpha``; a ``magenta26`` model
takes style indices (``style_index``; none: all its styles, for ``styles_per_image`` to
pick among by hash, as among style files). One content and an image output make one
result; anything else is a dataset job into the output folder (planned, streamed,
continued by rerunning, sharded, on Ray), with the model in place of optimisation.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from nst_jax import dataset
from nst_jax.config import StyleConfig
from nst_jax.dataset.styles import Styles, job_styles
from nst_jax.errors import InputError, shown
from nst_jax.files import image, weights
from nst_jax.files.digest import sha256
from nst_jax.session import jobs, outputs
from nst_jax.session.control import Control
from nst_jax.session.request import StylizeRequest


@dataclasses.dataclass(frozen=True)
class ModelRequest:
    """A model applied to contents.

    Attributes:
      model: the model folder (``nst-jax train``'s).
      stylize: the contents, styles, output and job settings, as an optimisation's
        (:class:`~nst_jax.session.request.StylizeRequest`; its config holds
        ``style_blend`` and the seed that picks styles, nothing else is used).
      alpha: AdaIN: the content's features (0) to the style's statistics (1);
        ``arbitrary``: the content's own style vector (0) to the style's (1).
      style_index: ``magenta26``: the styles to apply (each alone, or one mix with
        ``style_blend``).
    """

    model: str
    stylize: StylizeRequest
    alpha: float | None = None
    style_index: tuple[int, ...] = ()


class ModelOutcome(NamedTuple):
    """One result (``output`` and ``line``) or a job's (``job``)."""

    line: str
    job: jobs.JobOutcome | None = None


def check_request(request: ModelRequest, record: dict) -> None:
    """What the model's method takes (one line for the rest)."""
    given = request.stylize
    needs_index = is_single(request)  # a job without indices picks among all the styles
    check_model_inputs(request.model, record, given.styles, request.alpha, request.style_index,
                       given.config.style_blend, needs_index)  # fmt: skip


def check_model_inputs(
    model: str, record: dict, styles, alpha, style_index, blend, needs_index: bool
) -> None:
    """What the model's method takes, for any driver (one line for the rest): style images
    (adain, arbitrary), style indices (magenta26; ``needs_index``: at least one), alpha,
    and a ``blend`` (``style_blend``) of one weight per style."""
    method, shown_model, blended = record["method"], shown(model), blend is not None
    count = len(styles) or len(style_index)
    if blended and method != "johnson" and count and len(blend) != count:
        raise InputError(f"--style-blend has {len(blend)} weights for {count} styles")
    if alpha is not None:
        from nst_jax.feedforward.model import check_alpha

        try:
            check_alpha(alpha)
        except ValueError as e:
            raise InputError(str(e)) from None
    if style_index and method != "magenta26":
        raise InputError(f"{shown_model}: --style-index picks a magenta26 model's styles; "
                         f"this is a {method} model")  # fmt: skip
    if method == "johnson" and (styles or alpha is not None or blended):
        raise InputError(f"{shown_model}: a johnson model has its style built in; "
                         "--style, --alpha and --style-blend are for adain models")  # fmt: skip
    if method in ("adain", "arbitrary") and not styles:
        raise InputError(f"{shown_model}: an {method} model needs --style")
    if method == "magenta26":
        _check_indices(shown_model, record, styles, alpha, style_index, needs_index)


def _check_indices(model: str, record: dict, styles, alpha, style_index, needs_index) -> None:
    """A magenta26 model: its own styles by index, no style images, no alpha."""
    from nst_jax.feedforward.pretrained import check_style_indices

    count = record["architecture"]["condition"]
    if styles or alpha is not None:
        raise InputError(f"{model}: a magenta26 model has {count} styles built in: pick them "
                         "with --style-index (--style and --alpha are for others)")  # fmt: skip
    if not style_index and needs_index:
        raise InputError(f"{model}: pick a style with --style-index (0 to {count - 1})")
    if style_index:
        try:
            check_style_indices(style_index, count)
        except (TypeError, ValueError) as e:
            raise InputError(f"{shown(model)}: {e}") from None


def model_styles(request: ModelRequest, record: dict, params: Path) -> Styles:
    """A magenta26 job's styles: the chosen indices (none: all), named ``style-NN``, each
    standing for the model's params and its index in the plan."""
    count = record["architecture"]["condition"]
    indices = request.style_index or tuple(range(count))
    digest = sha256(params)
    return Styles(tuple(f"{params}#{i}" for i in indices),
                  tuple(f"style-{i:02d}" for i in indices),
                  tuple(f"{digest}:{i}" for i in indices))  # fmt: skip


def vgg_path(request: ModelRequest, record: dict) -> Path | None:
    """AdaIN's encoder weights: they must be those the decoder was trained with."""
    return model_vgg(request.model, request.stylize.weights, record)


def model_vgg(model: str, given: str | None, record: dict) -> Path | None:
    """The VGG19 weights (``given``, or the ones found) an AdaIN model was trained with, by
    their MD5 (``None`` for other methods).

    Raises:
      InputError: no weights, or others than the model's (one line).
    """
    if record["method"] != "adain":
        return None
    path = weights.find_weights(given)
    digest = weights.md5sum(path)
    if digest != record.get("vgg_md5"):
        trained = record.get("vgg_md5")
        raise InputError(
            f"{shown(path)}: VGG19 weights MD5 {digest}, but {shown(model)} was "
            f"trained with {trained}"
        )
    return path


def export_onnx(
    model: str,
    output: str,
    weights_path: str | None = None,
    batch: int | None = None,
    force: bool = False,
) -> tuple[Path, str]:
    """Write the model in ``model`` as one ONNX file (:mod:`nst_jax.feedforward.onnx_export`),
    ``output`` checked before AdaIN's VGG19 weights (its encoder, in the file) are loaded.

    Returns:
      The file written and the model's method.

    Raises:
      TypeError: an argument of the wrong type, named.
      InputError: refused before any work (one line).
    """
    from nst_jax.feedforward.model import read_record
    from nst_jax.feedforward.onnx_export import check_output, export_model
    from nst_jax.session.training import LOG_FILE, RUN_FILE

    if not isinstance(model, (str, os.PathLike)) or not str(model):
        raise TypeError(f"model must be a model folder's path, got {model!r}")
    record = read_record(model)
    path = model_vgg(model, weights_path, record)
    # Never an input: the weights named (used or not) and a trained model's own record and log.
    given = () if weights_path is None else (weights_path,)
    own = tuple(Path(model) / name for name in (RUN_FILE, LOG_FILE))
    reads = (*([] if path is None else [path]), *given, *own)
    check_output(output, model, force, reads)
    vgg = None if path is None else weights.load_vgg19(path)
    return export_model(model, output, vgg, batch, force, reads), record["method"]


def applier(
    model, vgg, styles: list, config: StyleConfig, alpha: float, pixel_steps: int | None = None,
    indices: tuple[int, ...] = (),
):  # fmt: skip
    """``apply(contents, style_sets)`` for the dataset engine: each run of items that share
    a style set in one pass. The styles are encoded once, for every batch (AdaIN's
    features, an arbitrary model's style vectors); a magenta26 model's style sets index
    ``indices``. ``pixel_steps`` (the job's pixels, ``None``: each call's) chooses the
    convolutions of ``conv="auto"``, once for the whole job, so a continued job computes as
    an uninterrupted one."""
    from nst_jax.core.conv import NETWORK_WINOGRAD_MIN_PIXELS, prepare_params, resolve_conv
    from nst_jax.feedforward.adain import ENCODER_LAYER
    from nst_jax.feedforward.model import apply_model, encode_styles
    from nst_jax.feedforward.pretrained import predict_styles

    method = model.settings.method
    encoded = encode_styles(vgg, styles) if method == "adain" else []
    if method == "arbitrary":
        encoded = predict_styles(model.params["predictor"]["params"], styles)
    conv = config.conv
    if pixel_steps is not None:  # a job: its method chosen, and the encoder prepared, once
        conv = resolve_conv(conv, pixel_steps, NETWORK_WINOGRAD_MIN_PIXELS)
        vgg = (
            None
            if vgg is None
            else prepare_params(vgg, conv, layers=(ENCODER_LAYER,), input_gradient=False)
        )

    if method in ("magenta26", "arbitrary"):
        return _conditioned(model, encoded, indices, config, alpha, conv, pixel_steps)

    def apply(contents: np.ndarray, style_sets: list[tuple[int, ...]]) -> np.ndarray:
        results = np.empty_like(contents)
        for chosen in dict.fromkeys(style_sets):
            rows = [i for i, s in enumerate(style_sets) if s == chosen]
            blend = config.style_blend if len(chosen) > 1 else None
            mixed = [encoded[s] for s in chosen] if encoded else None
            picked = [indices[s] for s in chosen] if method == "magenta26" else None
            out = apply_model(model, contents[rows], vgg, (), blend, alpha, mixed, conv,
                              pixel_steps, picked)  # fmt: skip
            results[rows] = np.asarray(out)
        return results

    return apply


def job_applier(model: str, *made):
    """A job's ``apply`` made from the model folder (in a Ray actor: every argument is
    picklable; ``made`` as :func:`make_applier` takes it)."""
    from nst_jax.feedforward.model import load_model

    return make_applier(load_model(model), *made)


def make_applier(loaded, vgg_path, styles, max_dim, max_pixels, config, alpha, pixels, indices):
    """``apply`` (:func:`applier`) of a loaded model, its VGG19 and styles read from files."""
    vgg = weights.load_vgg19(vgg_path) if vgg_path is not None else None
    images = [image.load(s, max_dim, max_pixels) for s in styles]
    return applier(loaded, vgg, images, config, alpha, pixels, indices)


def _conditioned(model, vectors, indices, config: StyleConfig, alpha, conv, pixel_steps):
    """An imported model's ``apply``: each content with its own condition (its style set's
    weights or vector), the whole batch in one pass whatever its style sets."""
    from nst_jax.core.conv import NETWORK_WINOGRAD_MIN_PIXELS, resolve_conv
    from nst_jax.feedforward.pretrained import set_conditions, transform

    method = model.settings.method

    def apply(contents: np.ndarray, style_sets: list[tuple[int, ...]]) -> np.ndarray:
        if method == "magenta26":
            picks = [[indices[s] for s in chosen] for chosen in style_sets]
        else:
            picks = [list(chosen) for chosen in style_sets]
        pixels = pixel_steps or contents[..., 0].size
        run_conv = resolve_conv(conv, pixels, NETWORK_WINOGRAD_MIN_PIXELS)
        conditions = set_conditions(model, contents, picks, vectors, config.style_blend, alpha)
        network = model.params["transformer"]
        return np.asarray(transform(model.settings, run_conv, network, contents, conditions))

    return apply


def metadata(request: ModelRequest, record: dict) -> dict:
    """Provenance stored in each PNG result."""
    given = request.stylize
    return {
        "command": list(given.command),
        "model": {"path": str(Path(request.model).resolve()), "method": record["method"],
                  "params_sha256": record["params_sha256"]},
        "alpha": request.alpha,
        "style": [str(s) for s in given.styles],
        "style_index": list(request.style_index),
        "max_dim": given.max_dim,
    }  # fmt: skip


def is_single(request: ModelRequest) -> bool:
    """One content file, one style set, and an image output."""
    given = request.stylize
    count = len(request.style_index) or len(given.styles)
    sets = 1 if given.config.style_blend or count <= 1 else count
    one = len(given.contents) == 1 and not given.files_from
    one = one and not Path(given.contents[0]).is_dir()
    return one and sets == 1 and image.names_a_file(given.output)


def run_model(
    request: ModelRequest, control: Control | None = None, report=lambda outcome: None
) -> ModelOutcome:
    """Apply the model: one result, or a job (``report`` hears of each item).

    Raises:
      InputError: refused before any work (one line).
      Stopped: a job asked to stop (its finished results kept).
    """
    from nst_jax.feedforward import model as models

    control = control or Control()
    if not isinstance(request, ModelRequest):
        raise TypeError(f"request must be a ModelRequest, got {type(request).__name__}")
    given = request.stylize
    if given.styles or given.styles_from:  # folders and lists, expanded and checked
        styles = job_styles(given.styles, given.styles_from).paths
        request = dataclasses.replace(
            request, stylize=dataclasses.replace(given, styles=styles, styles_from=None)
        )
    record = models.read_record(request.model)
    check_request(request, record)
    given, path = request.stylize, vgg_path(request, record)
    meta = metadata(request, record)
    loaded = models.load_model(request.model)  # its params checked before a plan hashes them
    plan = None if is_single(request) else _plan(request, record, meta, path)
    if plan is None:
        _check_single(request)
    alpha = 1.0 if request.alpha is None else request.alpha
    # A job's pixels, from its plan: the same figure on every continuation, so the same
    # convolutions (an interrupted job's results equal an uninterrupted one's).
    job_pixels = None if plan is None else _plan_pixels(plan)
    indices = request.style_index
    if record["method"] == "magenta26" and plan is not None:
        indices = tuple(int(p.rsplit("#", 1)[1]) for p in plan.styles)
    made = (path, tuple(given.styles), given.max_dim, given.max_pixels, given.config, alpha,
            job_pixels, indices)  # fmt: skip
    if plan is None:
        return ModelOutcome(_single(given, make_applier(loaded, *made), meta, len(indices)))
    factory = functools.partial(job_applier, request.model, *made)
    apply = None if given.engine == "ray" else make_applier(loaded, *made)
    return ModelOutcome("", _run_job(given, plan, meta, apply, factory, control, report, path))


def _check_single(request: ModelRequest) -> None:
    """One result's output, checked against its inputs before any work."""
    given = request.stylize
    image.check_output_path(given.output)  # one line: an unknown extension
    reads = [(Path(given.contents[0]), "CONTENT"), *((Path(s), "--style") for s in given.styles)]
    planned = [outputs.Output(Path(given.output), "the result")]
    outputs.check_outputs(planned, [*reads, (Path(request.model), "--model")], force=given.force)


def _run_job(given, plan, meta, apply, factory, control, report, path) -> jobs.JobOutcome:
    """The job's batches, here (``apply``) or on Ray (each actor makes its own from
    ``factory``)."""
    continuing = jobs.start_job(given, plan)
    resources = dataset.Resources(
        None, given.config, metadata=meta, replace=given.force, workers=given.workers,
        continuing=continuing, apply=apply, apply_factory=factory, max_pixels=given.max_pixels,
    )  # fmt: skip
    return jobs.execute(given, plan, resources, control, report, path)


def _plan_pixels(plan: dataset.Plan) -> int | None:
    """The pixels of every result the plan will make (``None``: none)."""
    total = sum(item.shape[0] * item.shape[1] for item in plan.items if item.shape is not None)
    return total or None


def _plan(request: ModelRequest, record: dict, meta: dict, path: Path | None) -> dataset.Plan:
    """The job's plan, its outputs checked. A Johnson model's job names the model's params
    as its one style (the plan's settings then hold the model); a magenta26 model's, its
    params once per style index."""
    from nst_jax.feedforward import model as models

    params = Path(request.model) / models.PARAMS_FILE
    given = request.stylize
    extra = {"model": meta["model"], "alpha": meta["alpha"]}
    if given.styles:
        plan = jobs.job_plan(given, extra)
    elif record["method"] == "magenta26":
        plan = jobs.job_plan(given, extra, model_styles(request, record, params))
    else:  # the model's own style: its params stand for it in the plan
        own = Styles((str(params),), ("model",), (sha256(params),))
        plan = jobs.job_plan(given, extra, own)
    reads = [(Path(s), "--style") for s in given.styles] + [(path or params, "--weights")]
    jobs.check_job_outputs(given, plan, reads)
    return plan


def _single(given: StylizeRequest, apply, meta: dict, indices: int) -> str:
    """Stylise one content into the output (its style set: every style, or every one of
    ``indices`` style indices); the closing line."""
    out = Path(given.output)
    content = image.load(given.contents[0], given.max_dim, given.max_pixels)
    chosen = tuple(range(len(given.styles) or indices))
    result = apply(content[None], [chosen])[0]
    image.save(out, result, metadata={**meta, "content": given.contents[0]}, replace=given.force)
    return f"stylised {given.contents[0]} -> {out}"
