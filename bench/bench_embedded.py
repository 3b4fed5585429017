"""Generating the embedded default set (16 classes x 32 shapes of 8192 points, with renders).

Target: the whole default set builds in about 20 s on 2 CPU cores, so a first run of
`recon-fast pretrain --config embedded` starts training quickly. This times the generation of
one train and one test shape per class at full size and reports the extrapolation to the
default set (the time per shape is what the table shows).
"""

import time

import numpy as np
import pytest

from recon_fast.data import EMBEDDED_CLASS_NAMES, EmbeddedConfig
from recon_fast.data.embedded import generate_embedded

DEFAULT_SET_TARGET_S = 20.0


@pytest.mark.parametrize("device", ["cpu"])
def test_embedded_generation(benchmark, device, tmp_path_factory):
    shapes = 2 * len(EMBEDDED_CLASS_NAMES)

    def generate():
        root = tmp_path_factory.mktemp("embedded")
        start = time.perf_counter()
        generate_embedded(str(root), EmbeddedConfig(seed=0, shapes_per_class=2, test_per_class=1),
                          progress=False)
        return root, time.perf_counter() - start

    root, took = benchmark.pedantic(generate, rounds=1, iterations=1)
    points = np.load(next(iter(sorted((root / "shapenet_pc").iterdir()))))
    assert points.shape == (8192, 3) and points.dtype == np.float32
    default_shapes = len(EMBEDDED_CLASS_NAMES) * EmbeddedConfig().shapes_per_class
    estimate = took / shapes * default_shapes
    benchmark.extra_info.update(per_shape_ms=took / shapes * 1e3, default_set_s=estimate,
                                target_s=DEFAULT_SET_TARGET_S)
    print(f"embedded generation: {took / shapes * 1e3:.1f} ms per shape, default set ~{estimate:.1f} s "
          f"(target {DEFAULT_SET_TARGET_S:.0f} s on 2 cores)")
