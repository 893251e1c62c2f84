"""Scores of a method over folders (``nst-jax score CONTENTS/ STYLES/ RESULTS/``).

Pairing is ArtFID's (Wright & Ommer, "ArtFID: Quantitative Evaluation of Neural Style
Transfer", GCPR 2022, their code): each folder's images sorted by name, the i-th result
paired with the i-th content. Styles pair the same way when there are as many as results;
one style serves every result.

Each row holds, for one result: CFSD against its content (:func:`nst_jax.metrics.cfsd`),
the content distance summed over the content layers, and every registered style term's
distance to its style, averaged over the style layers (:func:`nst_jax.metrics.
style_distances`); with LPIPS' weights, its LPIPS to its content. The summary is each
column's mean over the rows; with ArtFID's weights too, the FID of the results to the styles
(ArtFID's Inception, each image at ``max_dim``) and ArtFID, ``(LPIPS + 1) * (FID + 1)``.
The results are compared with every style at once for FID, as ArtFID does; with few images
FID is dominated by its estimate's bias (papers use hundreds).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from nst_jax import metrics
from nst_jax.core import extractors, style_terms, targets
from nst_jax.core.fields import as_count
from nst_jax.core.objective import CONTENT_LAYERS, STYLE_LAYERS
from nst_jax.errors import InputError, shown
from nst_jax.files import image, score_weights, weights
from nst_jax.files.atomic import atomic_write
from nst_jax.files.walk import IMAGE_SUFFIXES, walk_inputs
from nst_jax.session import outputs

Row = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ScoreRequest:
    """Scores of the results in a folder (module docstring).

    Attributes:
      contents, styles, results: the folders (or single files) paired.
      output: the CSV written, one row per result.
      extractor: ``vgg19`` or ``vgg16`` (the networks whose weights files load by name).
      weights: its weights file (``None``: searched).
      max_dim: the longer side every image is scaled to (``None``: as they are).
      max_pixels: images larger than this, in the file or scaled, are refused (``None``:
        no limit).
      terms: the style terms scored (``None``: :func:`default_terms`).
      force: replace an existing ``output`` (never an input).
      lpips: add each result's LPIPS to its content (``nst-jax weights fetch lpips``).
      artfid: add the set's FID to the styles and ArtFID (also ``... fetch artfid``).
    """

    contents: str
    styles: str
    results: str
    output: str = "scores.csv"
    extractor: str = "vgg19"
    weights: str | None = None
    max_dim: int | None = image.DEFAULT_MAX_DIM
    max_pixels: int | None = image.MAX_PIXELS
    terms: tuple[str, ...] | None = None
    force: bool = False
    lpips: bool = False
    artfid: bool = False


def run_score(
    request: ScoreRequest, report: Callable[[int, int], None] = lambda done, total: None
) -> tuple[list[Row], dict[str, float]]:
    """Score ``request``'s results, write the CSV, and return the rows and the summary
    (each column's mean, then the set's FID and ArtFID where asked).

    Raises:
      InputError: a refused input or output, before any work (one line).
    """
    network = request.extractor
    if network not in weights.NETWORKS:
        known = ", ".join(sorted(weights.NETWORKS))
        raise InputError(f"--extractor {network}: scores load the weights of {known}")
    for name in request.terms or ():
        if name not in style_terms.names():
            raise InputError(f"--terms: unknown style term {name!r}")
    image.check_max_pixels(request.max_pixels)
    found = weights.find_weights(request.weights, network)
    wanted = [
        n
        for n, on in (("lpips", request.lpips or request.artfid), ("artfid", request.artfid))
        if on
    ]
    score_files = [score_weights.find(name) for name in wanted]  # one line if one is missing
    triples = paired_files(request.contents, request.styles, request.results)
    if request.artfid and len({t[1] for t in triples}) < 2:
        raise InputError(f"{shown(request.styles)}: ArtFID's FID needs two styles or more")
    reads = [(found, "--weights"), *((p, "weights") for p in score_files)]
    reads += [(p, "an input") for triple in triples for p in triple]
    planned = [outputs.Output(Path(request.output), "-o")]
    outputs.check_outputs(planned, reads, force=request.force)
    params = weights.load_weights(found, network)
    loaded = {
        name: score_weights.load(name, path) for name, path in zip(wanted, score_files, strict=True)
    }
    rows, whole = score_folders(
        params, request.contents, request.styles, request.results, request.extractor,
        request.max_dim, request.terms, report,
        Networks(loaded.get("lpips"), loaded.get("artfid")), request.max_pixels,
    )  # fmt: skip
    write_csv(rows, request.output, replace=request.force)
    return rows, summary(rows) | whole


def paired_files(
    contents: str | Path, styles: str | Path, results: str | Path
) -> list[tuple[Path, Path, Path]]:
    """``(content, style, result)`` triples, paired by sorted names (module docstring).

    Raises:
      InputError: a folder that is missing or holds no image, or counts that do not pair.
    """
    found = {}
    for name, folder in (("contents", contents), ("styles", styles), ("results", results)):
        walked = walk_inputs([folder])
        # An image's name that is no image (a link to nothing, a pipe) would shift the
        # pairing by names if the counts still matched: refused rather than passed over.
        named = [(p, why) for p, why in walked.passed if p.suffix.lower() in IMAGE_SUFFIXES]
        if named:
            path, why = named[0]
            raise InputError(f"{shown(path)}: {why}; the {name} pair with the other folders' "
                             "files by sorted names, so none may be missing")  # fmt: skip
        found[name] = [path for path, _ in sorted(walked.found, key=lambda item: str(item[0]))]
    n = len(found["results"])
    if len(found["contents"]) != n:
        raise InputError(
            f"{shown(results)}: {n} results for {len(found['contents'])} contents in "
            f"{shown(contents)}; results pair with contents one to one, by sorted names"
        )
    if len(found["styles"]) not in (1, n):
        raise InputError(
            f"{shown(styles)}: {len(found['styles'])} styles for {n} results; give one style "
            "or one per result (paired by sorted names)"
        )
    styles_each = found["styles"] * n if len(found["styles"]) == 1 else found["styles"]
    return list(zip(found["contents"], styles_each, found["results"], strict=True))


class Networks(NamedTuple):
    """The params of the optional scoring networks: LPIPS' and ArtFID's Inception
    (``None``: that score is not computed)."""

    lpips: Any = None
    inception: Any = None


def score_folders(
    params: Any,
    contents: str | Path,
    styles: str | Path,
    results: str | Path,
    extractor: str = "vgg19",
    max_dim: int | None = image.DEFAULT_MAX_DIM,
    terms: Sequence[str] | None = None,
    report: Callable[[int, int], None] = lambda done, total: None,
    networks: Networks | None = None,
    max_pixels: int | None = image.MAX_PIXELS,
) -> tuple[list[Row], dict[str, float]]:
    """One row of scores per result (module docstring), and the scores of the whole set.

    Args:
      params: the extractor's params.
      contents, styles, results: folders (or files) of images.
      extractor: a registered extractor; its default layers for VGG (``block3_conv1`` for
        CFSD, the tutorial's content and style layers).
      max_dim: each image is loaded with its longer side scaled to this (``None``: as is);
        a result and its content must then be one size.
      terms: the style terms to score (default: :func:`default_terms`).
      report: called with ``(done, total)`` after each result.
      networks: with LPIPS' params, each row's ``lpips`` to its content; with Inception's
        too, the set's ``fid`` (results to every style) and ``artfid``.
      max_pixels: images larger than this, in the file or scaled, are refused (``None``:
        no limit).

    Raises:
      InputError: unpairable folders, an unreadable image, sizes that differ (one line).
      ValueError: an unknown extractor or term, or params that are not the extractor's.
    """
    max_dim = as_count("max_dim", max_dim, optional=True)
    image.check_max_pixels(max_pixels)
    extractors.check_params(extractor, params)
    networks = networks or Networks()
    names = tuple(default_terms() if terms is None else terms)
    for name in names:
        style_terms.style_term(name)
    triples = paired_files(contents, styles, results)
    for path in dict.fromkeys(path for triple in triples for path in triple):
        _check_pixels(path, max_dim, max_pixels)  # every file before the first score
    scores = jax.jit(_scores, static_argnums=(4, 5))
    rows, features = [], {"results": [], "styles": {}}
    for done, paths in enumerate(triples, 1):
        content, style, result = _loaded(paths, max_dim, max_pixels)
        try:
            values = _out_of_memory_is_one_line(scores, paths[2], max_dim)(
                params, content, style, result, extractor, names
            )
        except metrics.ImageTooSmallError as e:
            raise _too_small(paths, (content, style, result), max_dim, e.need) from None
        columns = ["cfsd", "content_distance", *(f"style_{name}" for name in names)]
        row = {"result": str(paths[2]), "content": str(paths[0]), "style": str(paths[1])}
        row |= {key: float(values[key]) for key in columns}  # in this order (jit sorts keys)
        if networks.lpips is not None:
            row["lpips"] = float(_lpips(networks.lpips, result, content))
        if networks.inception is not None:
            features["results"].append(_inception(networks.inception, result))
            if paths[1] not in features["styles"]:
                features["styles"][paths[1]] = _inception(networks.inception, style)
        rows.append(row)
        report(done, len(triples))
    return rows, _set_scores(rows, features, networks)


def default_terms() -> tuple[str, ...]:
    """Every registered term but those comparing patches (``min_side`` over 1: ``mrf``),
    whose memory grows with the square of the positions (hundreds of GB at 512 px); name
    them in ``terms`` with a small ``max_dim``."""
    return tuple(n for n in style_terms.names() if style_terms.style_term(n).min_side == 1)


def _check_pixels(path: Path, max_dim: int | None, max_pixels: int | None) -> None:
    """Refuse, from its header, a file larger than ``max_pixels`` as it is or as scaled to
    ``max_dim`` (its decoding checks the file again)."""
    if max_pixels is None:
        return  # no limit: no header to read
    size = image.probe_size(path)
    if size is None:
        return  # unreadable: its decoding says so, in the order the rows are scored
    scaled = image.scaled_shape(*size, max_dim) if max_dim else size
    for (height, width), at in ((size, ""), (scaled, f" at max_dim={max_dim}")):
        if why := image.over_pixel_limit(width, height, max_pixels, at):
            raise InputError(f"{shown(path)}: {why}")


def _loaded(
    paths: tuple[Path, Path, Path], max_dim: int | None, max_pixels: int | None
) -> list[np.ndarray]:
    content, style, result = (image.load(path, max_dim, max_pixels) for path in paths)
    if content.shape != result.shape:
        raise InputError(
            f"{shown(paths[2])}: {_size(result)}, its content {shown(paths[0])} "
            f"{_size(content)}; scores compare images of one size (--max-dim scales both)"
        )
    return [content, style, result]


def _too_small(paths, images, max_dim: int | None, need: int) -> InputError:
    """The metrics name their argument; the user wants the file (the result first)."""
    for path, x in sorted(zip(paths, images, strict=True), key=lambda pair: pair[0] != paths[2]):
        at = f" at max_dim={max_dim}" if max_dim else ""
        if why := targets.too_small(x.shape[1], x.shape[0], need, at):
            return InputError(f"{shown(path)}: {why}")
    return InputError(f"{shown(paths[2])}: too small for the scores' layers ({need} px)")


def _out_of_memory_is_one_line(fn: Callable, path: Path, max_dim: int | None) -> Callable:
    def call(*args):
        try:
            return jax.block_until_ready(fn(*args))  # the allocation fails on the device
        except jax.errors.JaxRuntimeError as e:
            if "RESOURCE_EXHAUSTED" not in str(e):
                raise
            raise InputError(
                f"{shown(path)}: out of memory scoring it at --max-dim {max_dim}; a smaller "
                "--max-dim or fewer --terms fits"
            ) from None

    return call


@jax.jit
def _lpips(params, result, content):
    return metrics.lpips(params, result, content)


@jax.jit
def _inception(params, x):
    return metrics.inception_features(params, x)


def _set_scores(rows: list[Row], features: dict, networks: Networks) -> dict[str, float]:
    """FID of the results to the styles, and ArtFID, where Inception's params are given."""
    if networks.inception is None or networks.lpips is None:
        return {}
    styles = list(features["styles"].values())
    fid = metrics.fid(np.stack(features["results"]), np.stack(styles))
    return {"fid": fid, "artfid": metrics.art_fid(fid, np.mean([r["lpips"] for r in rows]))}


def _size(x: np.ndarray) -> str:
    return f"{x.shape[1]}x{x.shape[0]} px"


def _scores(params, content, style, result, extractor: str, names: tuple) -> dict:
    distances = metrics.style_distances(params, result, style, STYLE_LAYERS, extractor, names)
    content_terms = metrics.content_distance(params, result, content, CONTENT_LAYERS, extractor)
    return {
        "cfsd": metrics.cfsd(params, content, result, extractor),
        "content_distance": sum(content_terms.values()),
        **{f"style_{name}": sum(d.values()) / len(d) for name, d in distances.items()},
    }


def summary(rows: Sequence[Row]) -> dict[str, float]:
    """Each score's mean over the rows (``nan`` where a row has none, as for a term whose
    patches do not fit a small layer)."""
    keys = [key for key in rows[0] if key not in ("result", "content", "style")] if rows else []
    return {key: float(np.mean([row[key] for row in rows])) for key in keys}


def csv_text(rows: Sequence[Row]) -> str:
    """The rows as CSV, one header line (floats with 9 significant digits)."""
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.9g}" if isinstance(v, float) else v for k, v in row.items()})
    return out.getvalue()


def write_csv(rows: Sequence[Row], path: str | Path, replace: bool = False) -> None:
    """Write :func:`csv_text` of ``rows`` to ``path`` in one step (never half a file)."""
    text = csv_text(rows).encode()
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(text), replace=replace)


def summary_table(means: dict[str, float]) -> str:
    """The summary as aligned lines, ``score  mean``."""
    width = max((len(key) for key in means), default=0)
    return "\n".join(
        f"{key:<{width}}  {value:.6g}" if math.isfinite(value) else f"{key:<{width}}  nan"
        for key, value in means.items()
    )
