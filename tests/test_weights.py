"""Weights: Keras HDF5 layouts, conversion round trip, strict validation, search, fetch."""

import hashlib
import http.server
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from nst_jax.cli import main as cli
from nst_jax.core import layers as vgg_layers
from nst_jax.errors import WeightsError
from nst_jax.files import keras_h5, weights


def assert_bit_identical(a, b):
    assert set(a) == set(b) == set(vgg_layers.CONV_LAYERS)
    for layer in a:
        for key in ("kernel", "bias"):
            np.testing.assert_array_equal(np.asarray(a[layer][key]), np.asarray(b[layer][key]))
            assert np.asarray(a[layer][key]).dtype == np.float32


def test_official_layout_loads_the_values_written(weights_h5, numpy_params):
    with h5py.File(weights_h5) as f:  # the test file really uses the official naming
        assert list(f["block1_conv1"].attrs["weight_names"]) == [
            b"block1_conv1_W_1:0",
            b"block1_conv1_b_1:0",
        ]
    assert_bit_identical(keras_h5.read_keras_h5(weights_h5), numpy_params)


def test_keras2_naming_loads_identically(tmp_path, numpy_params):
    path = tmp_path / "keras2.h5"
    keras_h5.write_keras_h5(numpy_params, path, naming="keras2")
    with h5py.File(path) as f:
        assert list(f["block1_conv1"].attrs["weight_names"])[0] == b"block1_conv1/kernel:0"
    assert_bit_identical(keras_h5.read_keras_h5(path), numpy_params)


def test_split_layer_names_attribute(tmp_path, numpy_params):
    # Keras splits long attributes into layer_names0, layer_names1, ...
    path = tmp_path / "split.h5"
    keras_h5.write_keras_h5(numpy_params, path)
    with h5py.File(path, "a") as f:
        names = list(f.attrs["layer_names"])
        del f.attrs["layer_names"]
        f.attrs["layer_names0"] = names[:7]
        f.attrs["layer_names1"] = names[7:]
    assert_bit_identical(keras_h5.read_keras_h5(path), numpy_params)


def test_converted_file_round_trips_bit_for_bit(tmp_path, weights_h5, numpy_params):
    converted = weights.convert(weights_h5, tmp_path / "vgg19.msgpack")
    assert_bit_identical(weights.read_params(converted), numpy_params)
    assert_bit_identical(weights.load_vgg19(converted), numpy_params)


def test_convert_defaults_to_the_weights_dir(weights_h5):
    converted = weights.convert(weights_h5)
    assert converted == weights.weights_dir() / weights.CONVERTED_NAME
    assert weights.find_weights() == converted  # and the search finds it


def broken_files(tmp_path, weights_h5, numpy_params):
    """Each kind of broken file, with a fragment of the message it must give."""
    files = {}

    def h5_with(name, edit):
        path = tmp_path / f"{name}.h5"
        keras_h5.write_keras_h5(numpy_params, path)
        with h5py.File(path, "a") as f:
            edit(f)
        files[name] = (path, edit.__doc__)

    def missing_layer(f):
        """layer block3_conv2 is missing"""
        names = [n for n in f.attrs["layer_names"] if n != b"block3_conv2"]
        f.attrs["layer_names"] = names
        del f["block3_conv2"]

    def wrong_shape(f):
        """layer block2_conv1 kernel has shape (3, 3, 64, 64), expected (3, 3, 64, 128)"""
        del f["block2_conv1/block2_conv1_W_1:0"]
        f["block2_conv1"].create_dataset("block2_conv1_W_1:0", data=np.zeros((3, 3, 64, 64)))

    def nan_values(f):
        """layer block4_conv3 bias has non-finite values"""
        f["block4_conv3/block4_conv3_b_1:0"][5] = np.nan

    h5_with("missing_layer", missing_layer)
    h5_with("wrong_shape", wrong_shape)
    h5_with("nan_values", nan_values)

    data = Path(weights_h5).read_bytes()
    (tmp_path / "truncated.h5").write_bytes(data[: len(data) // 3])
    files["truncated"] = (tmp_path / "truncated.h5", "unreadable HDF5 file")
    (tmp_path / "not_hdf5.h5").write_text("this is not HDF5\n")
    files["not_hdf5"] = (tmp_path / "not_hdf5.h5", "not an HDF5 file")
    (tmp_path / "empty.h5").write_bytes(b"")
    files["empty"] = (tmp_path / "empty.h5", "empty file")
    converted = weights.convert(weights_h5, tmp_path / "good.msgpack").read_bytes()
    (tmp_path / "truncated.msgpack").write_bytes(converted[:1000])
    files["truncated_converted"] = (tmp_path / "truncated.msgpack", "truncated or corrupt")
    return files


@pytest.fixture(scope="module")
def broken(tmp_path_factory, weights_h5, numpy_params):
    return broken_files(tmp_path_factory.mktemp("broken"), weights_h5, numpy_params)


KINDS = [
    "missing_layer",
    "wrong_shape",
    "nan_values",
    "truncated",
    "not_hdf5",
    "empty",
    "truncated_converted",
]


@pytest.mark.parametrize("kind", KINDS)
def test_broken_file_raises_naming_file_and_fault(broken, kind):
    path, fault = broken[kind]
    with pytest.raises(WeightsError) as info:
        weights.load_vgg19(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert fault in message
    assert "\n" not in message


@pytest.mark.parametrize("kind", KINDS)
def test_broken_file_cli_exit_2_one_line(broken, kind, capsys):
    path, fault = broken[kind]
    assert cli.main(["weights", "info", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and fault in err and str(path) in err
    assert "Traceback" not in err


def test_search_order(tmp_path, weights_h5, monkeypatch):
    keras_file = weights.keras_cache_file()
    keras_file.parent.mkdir(parents=True)
    keras_file.write_bytes(Path(weights_h5).read_bytes())
    assert weights.find_weights() == keras_file
    converted = weights.convert(keras_file)
    assert weights.find_weights() == converted  # converted file before Keras' cache
    monkeypatch.setenv("NST_JAX_WEIGHTS", weights_h5)
    assert str(weights.find_weights()) == weights_h5  # the environment before both
    assert weights.find_weights(keras_file) == keras_file  # an explicit path before all


def test_missing_weights_message_names_places_and_command():
    with pytest.raises(WeightsError) as info:
        weights.find_weights()
    message = str(info.value)
    for _, place in weights.candidates():
        assert str(place) in message
    assert "nst-jax weights fetch" in message and "\n" not in message


def test_info(weights_h5, capsys):
    assert cli.main(["weights", "info", weights_h5]) == 0
    out = capsys.readouterr().out
    assert "kind: keras-hdf5" in out and "layers: 16" in out
    assert "parameters: 20024384" in out  # VGG19 notop: Keras' model.summary() count
    assert "official: False" in out


class _OneFile(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):  # noqa: N802 - the name http.server calls
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def local_server(weights_h5):
    """Serves the test weights file on 127.0.0.1 (loopback only) for the fetch tests."""
    _OneFile.body = Path(weights_h5).read_bytes()
    server = http.server.HTTPServer(("127.0.0.1", 0), _OneFile)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/{weights.OFFICIAL_NAME}"
    server.shutdown()


def test_fetch_downloads_checks_and_converts(local_server, weights_h5):
    md5 = hashlib.md5(Path(weights_h5).read_bytes()).hexdigest()
    downloaded, converted = weights.fetch(url=local_server, md5=md5)
    assert downloaded == weights.cache_dir() / weights.OFFICIAL_NAME
    assert weights.md5sum(downloaded) == md5
    assert converted == weights.weights_dir() / weights.CONVERTED_NAME
    assert not list(downloaded.parent.glob("*.part"))


def test_fetch_refuses_a_wrong_hash_and_leaves_nothing(local_server):
    with pytest.raises(WeightsError, match="MD5"):
        weights.fetch(url=local_server, md5="0" * 32)
    assert not weights.cache_dir().exists() or not list(weights.cache_dir().iterdir())


def test_fetch_offline_is_one_line_with_manual_steps(monkeypatch, capsys):
    # Port 9 (discard) on loopback: nothing listens, so the connection is refused at once.
    offline = weights.NETWORKS["vgg19"]._replace(url="http://127.0.0.1:9/vgg19.h5")
    monkeypatch.setitem(weights.NETWORKS, "vgg19", offline)
    assert cli.main(["weights", "fetch"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "http://127.0.0.1:9/vgg19.h5" in err and "weights convert" in err
    assert not weights.cache_dir().exists() or not list(weights.cache_dir().iterdir())


def test_a_named_weights_path_that_is_there_but_no_file_says_so(tmp_path):
    # A hostile probe's finding: a link loop or a pipe was "no such weights file".
    import os

    (tmp_path / "loop.h5").symlink_to(tmp_path / "loop.h5")
    os.mkfifo(tmp_path / "pipe.h5")
    for name in ("loop.h5", "pipe.h5"):
        with pytest.raises(WeightsError, match=f"{name}: not a regular file"):
            weights.find_weights(tmp_path / name)
    with pytest.raises(WeightsError, match="gone.h5: no such weights file"):
        weights.find_weights(tmp_path / "gone.h5")
