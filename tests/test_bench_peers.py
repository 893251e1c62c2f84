"""The peers benchmark's own VGG constants and weights reader (``scripts/bench_peers.py``).

Its PyTorch and TensorFlow workers must not import nst_jax: JAX's pages would count in their
peak RSS (about 160 MiB, measured), which the benchmark compares with nst_jax's. So the script
keeps its own copy of VGG19's layer order and Keras' mean, and reads the ``.h5`` itself; these
tests hold the copies to nst_jax's originals.
"""

import pathlib
import subprocess
import sys

import numpy as np
import pytest
from scripts_loader import load_script

from nst_jax.core import conv, vgg
from nst_jax.core import layers as vgg_layers
from nst_jax.files import keras_h5

bench_peers = load_script("bench_peers")


def test_constants_match_nst_jax():
    assert bench_peers.LAYERS == vgg_layers.LAYERS
    assert bench_peers.BGR_MEAN == vgg.BGR_MEAN


@pytest.mark.parametrize("naming", ["official", "keras2"])
def test_h5_reader_matches_nst_jax(tmp_path, numpy_params, naming):
    path = tmp_path / "w.h5"
    keras_h5.write_keras_h5(numpy_params, path, naming=naming)
    read = bench_peers._read_h5(str(path))
    assert list(read) == list(vgg_layers.CONV_LAYERS)
    for name, (kernel, bias) in read.items():  # bit for bit: both are reads of one file
        np.testing.assert_array_equal(kernel, numpy_params[name]["kernel"])
        np.testing.assert_array_equal(bias, numpy_params[name]["bias"])


def test_reader_does_not_import_jax(weights_h5):
    code = (
        f"import sys; sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})\n"
        "from scripts_loader import load_script\n"
        f"load_script('bench_peers')._read_h5({weights_h5!r})\n"
        "print('jax' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_sweep_thresholds_are_vgg_input_widths():
    # Each sweep worker must select a different set of Winograd layers: its threshold is an
    # input-channel count that VGG19 has (vgg_layers.conv_shapes), above the default's.
    widths = {kernel[2] for kernel, _ in vgg_layers.conv_shapes().values()}
    thresholds = [bench_peers.winograd_from(kind) for kind in bench_peers.SWEEP]
    assert all(t in widths and t > conv.WINOGRAD_MIN_CHANNELS for t in thresholds)
    assert len(set(thresholds)) == len(thresholds)
    assert all(bench_peers.winograd_from(kind) is None for kind in bench_peers.WORKERS)
