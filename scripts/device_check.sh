#!/usr/bin/env bash
# GPU checks, in one prepared run, for a machine that has JAX with its CUDA plugin, flax,
# optax, h5py, pillow, tqdm, pytest and PyTorch already installed and reaches no registry:
# nst_jax is put on the path, nothing is installed.
#
#   bash scripts/device_check.sh   # its timeouts bound it at 22 minutes; steps 1-5 at 13
#
# 1. The tests that run the compiled device loop, batches and sweeps, on the GPU (float32
#    matrix products at full precision there: XLA's GPU default, TF32, rounds to ~1e-3).
# 2. The chip's measured matmul rate (float32 and bfloat16), for the fraction achieved.
# 3. nst_jax's 512 px step at batch 1 and 8 (scripts/bench.py).
# 4. nst_jax beside the PyTorch port on the same GPU (scripts/bench_peers.py).
# 5. The largest untiled size the GPU holds (the memory estimate's answer), and one tiled
#    4096 px step (scripts/bench_tiled.py).
# 6. The feed-forward models' images/s at 256 and 512 px, batch 32, and training steps/s
#    (scripts/bench_feedforward.py); needs orbax-checkpoint, which flax brings.
# 7. A dataset job's images/s at 224 px x 300 steps, batches of 32 (scripts/bench_dataset.py),
#    and the video loop's seconds a frame (scripts/bench_video.py speed).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$python" -c "import jax, torch; print('jax', jax.__version__, jax.devices(), '| torch', torch.__version__)"

echo "== 1. device-loop tests"
JAX_DEFAULT_MATMUL_PRECISION=highest timeout 200 "$python" -m pytest -q -p no:cacheprovider \
    tests/test_core.py tests/test_batch.py -k "device or batch or sweep or lr_sweep" 2>&1 | tail -4

echo "== 2. matmul rate"
timeout 60 "$python" - <<'EOF'
import time

import jax
import jax.numpy as jnp

n = 8192
for dtype in (jnp.float32, jnp.bfloat16):
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    matmul = jax.jit(lambda x: x @ x)
    matmul(a).block_until_ready()
    start = time.perf_counter()
    for _ in range(10):
        out = matmul(a)
    out.block_until_ready()
    seconds = (time.perf_counter() - start) / 10
    print(f"{jnp.dtype(dtype).name} {n}^3 matmul: {2 * n**3 / seconds / 1e12:.0f} TFLOP/s")
EOF

echo "== 3. nst_jax 512 px, batch 1 and 8"
timeout 200 "$python" scripts/bench.py --sizes 512 --batches 1 8 --steps-per-call 20 --repeats 3

echo "== 4. beside PyTorch, 512 px"
timeout 150 "$python" scripts/bench_peers.py --sizes 512 --steps 20 --repeats 3 --only torch nst_jax

echo "== 5. largest untiled size; one tiled 4096 px step"
timeout 60 "$python" -c "
from nst_jax import StyleConfig, memory
try:
    memory.check_fits(StyleConfig(), 1, 16384, 16384)
except MemoryError as e:
    print(e)
"
timeout 150 "$python" scripts/bench_tiled.py --sizes 4096 --steps 2 --tile 1024

echo "== 6. feed-forward models: images/s applied, training steps/s"
timeout 120 "$python" scripts/bench_feedforward.py apply --sizes 256,512 --batches 32 --repeats 5
timeout 60 "$python" scripts/bench_feedforward.py train --repeats 5

echo "== 7. a dataset job, 224 px x 300 steps, batches of 32; one video frame"
timeout 150 "$python" scripts/bench_dataset.py throughput --sizes 224 --batches 32 --steps 300
timeout 90 "$python" scripts/bench_video.py speed --frames 3
