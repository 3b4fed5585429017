"""Embedded procedural dataset: surface samplers, renders, determinism, layout (its generation
time is measured in bench/bench_embedded.py)."""

import math
import os

import numpy as np
import pytest
import torch

from recon_fast.data import EMBEDDED_CLASS_NAMES, ShapeNet55, prepare_embedded
from recon_fast.data.embedded.generate import EmbeddedConfig, generate_embedded, synset_of
from recon_fast.data.embedded.render import render_points
from recon_fast.data.embedded.shapes import (CATALOGUE, Box, Ellipsoid, Frustum, Pyramid, Torus,
                                             make_shape)

SMALL = dict(shapes_per_class=3, test_per_class=1, n_points=1024, image_size=64, progress=False)


def _rng():
    return np.random.default_rng(0)


# ---------------------------------------------------------------------------------- samplers

def test_ellipsoid_points_lie_on_the_surface_uniformly():
    pts, normals = Ellipsoid(1.0, 1.0, 1.0).sample(20000, _rng())
    assert np.allclose(np.linalg.norm(pts, axis=1), 1.0)
    # Archimedes: on a sphere the height is uniform in [-1, 1].
    hist = np.histogram(pts[:, 1], bins=10, range=(-1, 1))[0]
    assert hist.min() > 1800 and hist.max() < 2200
    pts, normals = Ellipsoid(2.0, 0.5, 1.0).sample(5000, _rng())
    assert np.allclose(((pts / [2.0, 0.5, 1.0]) ** 2).sum(axis=1), 1.0)
    assert np.allclose(np.linalg.norm(normals, axis=1), 1.0)


def test_box_faces_get_points_in_proportion_to_their_area():
    box = Box(2.0, 1.0, 0.5)
    pts, normals = box.sample(30000, _rng())
    assert np.allclose(np.abs(pts).max(axis=0), [1.0, 0.5, 0.25])
    on_x_faces = np.isclose(np.abs(pts[:, 0]), 1.0).mean()
    assert abs(on_x_faces - 2 * 0.5 / box.area()) < 0.01  # two 1.0 x 0.5 faces
    assert np.allclose((pts * normals).sum(axis=1), np.abs(pts * normals).sum(axis=1))  # outwards


def test_cone_and_torus_area_densities():
    cone = Frustum(1.0, 0.0, 2.0, bottom=False, top=False)
    pts, _ = cone.sample(40000, _rng())
    radius = np.hypot(pts[:, 0], pts[:, 2])
    assert np.allclose(radius, 0.5 * (1.0 - pts[:, 1]), atol=1e-9)  # r = 1 at y=-1, 0 at y=+1
    # The lower half of the lateral surface holds 3/4 of its area.
    assert abs((pts[:, 1] < 0).mean() - 0.75) < 0.01
    R, r = 1.0, 0.4
    pts, _ = Torus(R, r).sample(40000, _rng())
    ring = np.hypot(pts[:, 0], pts[:, 2])
    assert np.allclose((ring - R) ** 2 + pts[:, 1] ** 2, r * r)
    outer = (ring > R).mean()  # area of the outer half: (pi R + 2 r) / (2 pi R)
    assert abs(outer - (math.pi * R + 2 * r) / (2 * math.pi * R)) < 0.01


def test_pyramid_surface():
    pyramid = Pyramid(2.0, 1.0)
    slant = math.sqrt(1.0 ** 2 + 1.0 ** 2)  # height 1, half base 1
    assert abs(pyramid.area() - (4.0 + 4 * 0.5 * 2.0 * slant)) < 1e-9
    pts, _ = pyramid.sample(10000, _rng())
    on_base = np.isclose(pts[:, 1], -0.5)
    assert abs(on_base.mean() - 4.0 / pyramid.area()) < 0.015
    side = pts[~on_base]  # |x| or |z| equals the half width at that height
    half = (0.5 - side[:, 1]) / 1.0
    assert np.allclose(np.maximum(np.abs(side[:, 0]), np.abs(side[:, 2])), half, atol=1e-9)


def test_make_shape_is_normalised_and_seeded():
    for shape_class in CATALOGUE:
        pts, normals, closed = make_shape(shape_class, 2048, np.random.default_rng(1))
        assert pts.shape == normals.shape == (2048, 3) and pts.dtype == np.float32
        assert np.abs(pts.mean(axis=0)).max() < 0.02
        assert abs(np.linalg.norm(pts, axis=1).max() - 1.0) < 0.03  # unit sphere + jitter
        assert closed.dtype == bool and closed.shape == (2048,)
    a = make_shape(CATALOGUE[6], 512, np.random.default_rng(3))[0]
    b = make_shape(CATALOGUE[6], 512, np.random.default_rng(3))[0]
    assert np.array_equal(a, b)


def test_render_draws_the_shape_on_white():
    pts, normals, closed = make_shape(CATALOGUE[1], 4096, _rng())
    img = render_points(pts, normals, np.array([0.2, 0.4, 0.8]), size=96, closed=closed)
    assert img.shape == (96, 96, 3) and img.dtype == np.uint8
    covered = (img != 255).any(axis=2)
    assert 0.15 < covered.mean() < 0.9
    assert covered[0].sum() == 0 and covered[:, 0].sum() == 0  # margin around the unit sphere
    blue = img[covered].astype(int)
    assert (blue[:, 2] >= blue[:, 0]).all()  # shading scales the base colour
    assert np.array_equal(img, render_points(pts, normals, np.array([0.2, 0.4, 0.8]), size=96,
                                             closed=closed))


# ---------------------------------------------------------------------------------- generation

def _all_files(root):
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def test_generation_is_byte_identical_per_seed(tmp_path):
    classes = ("cube", "torus", "chair")
    a = prepare_embedded(str(tmp_path / "a"), seed=4, classes=classes, **SMALL)
    b = prepare_embedded(str(tmp_path / "b"), seed=4, classes=classes, **SMALL)
    files_a, files_b = _all_files(a.root), _all_files(b.root)
    assert len(files_a) == 2 * 9 + 4 and files_a == files_b
    other = prepare_embedded(str(tmp_path / "c"), seed=5, classes=classes, **SMALL)
    files_c = _all_files(other.root)
    assert {k for k in files_c if k.endswith(".npy")}.isdisjoint(files_a)  # new model ids
    # A class subset reproduces the same shapes for the classes it keeps.
    subset = prepare_embedded(str(tmp_path / "d"), seed=4, classes=("torus",), **SMALL)
    for name, data in _all_files(subset.root).items():
        if name.startswith(("shapenet_pc", "shapenet_img")):
            assert files_a[name] == data


def test_generation_reuses_the_cache(tmp_path, monkeypatch):
    first = prepare_embedded(str(tmp_path), seed=0, classes=("cube",), **SMALL)
    import recon_fast.data.embedded.generate as generate

    def fail(*args, **kwargs):
        raise AssertionError("regenerated a complete cache")

    monkeypatch.setattr(generate, "generate_embedded", fail)
    again = prepare_embedded(str(tmp_path), seed=0, classes=("cube",), **SMALL)
    assert again.root == first.root
    with pytest.raises(ValueError, match="classes must be distinct names"):
        prepare_embedded(str(tmp_path), classes=("cube", "spaceship"), **SMALL)


def test_embedded_reads_as_shapenet_and_as_classification(tmp_path):
    classes = ("sphere", "table", "mug", "airplane")
    emb = prepare_embedded(str(tmp_path), seed=1, classes=classes, **SMALL)
    train = emb.pretrain_dataset("train", 256, image="center")
    assert isinstance(train, ShapeNet55) and len(train) == 4 * 2
    assert len(emb.pretrain_dataset("train", 256, whole=True, image="none")) == 4 * 3
    for i in range(len(train)):
        item = train[i]
        label = int(item["label"])
        assert item["taxonomy_id"] == synset_of(classes[label])
        assert emb.descriptions[label] in item["text"]
        assert item["image"].shape == (3, 224, 224) and item["points"].shape == (256, 3)
    test = emb.classification_dataset("test")
    assert len(test) == 4 and sorted(test.labels.tolist()) == [0, 1, 2, 3]
    item = test[2]
    assert item["points"].shape == (1024, 3)
    assert abs(item["points"].norm(dim=1).max().item() - 1.0) < 1e-5
    assert item["points"].mean(dim=0).abs().max() < 1e-5
    assert emb.class_names == list(classes) and emb.classification_dataset("train").name == \
        "EmbeddedShapes"


def test_generated_clouds_have_the_full_size(tmp_path):
    """One train and one test shape per class at full size (the generation time of the default
    set is measured in bench/bench_embedded.py)."""
    config = EmbeddedConfig(seed=0, shapes_per_class=2, test_per_class=1)
    generate_embedded(str(tmp_path), config, progress=False)
    files = sorted((tmp_path / "shapenet_pc").iterdir())
    assert len(files) == 2 * len(EMBEDDED_CLASS_NAMES)
    points = np.load(files[0])
    assert points.shape == (8192, 3) and points.dtype == np.float32


@pytest.mark.slow
def test_default_embedded_set(tmp_path):
    emb = prepare_embedded(str(tmp_path), progress=False)
    assert len(emb.pretrain_dataset(whole=True, image="none")) == 16 * 32
    assert len(emb.classification_dataset("test")) == 16 * 8
    item = emb.pretrain_dataset()[0]
    assert item["points"].shape == (1024, 3) and torch.isfinite(item["image"]).all()
