"""Dataset loaders on tiny files in the published formats: items, normalisation, errors."""

import json
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import data_fixtures as fx
from recon_fast.data import (PROMPT_PREFIXES, PROMPT_SUFFIXES, DatasetFileError, ModelNet,
                             ModelNetFewShot, ScanObjectNN, ShapeNet55, ShapeNetPaths,
                             dataset_from_config, read_bgr_image, read_category_table)
from recon_fast.data.modelnet import build_modelnet_cache


def ref_pc_norm(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64) - x.astype(np.float64).mean(axis=0)
    return x / np.sqrt((x ** 2).sum(axis=1)).max()


def assert_unit_normalised(points: torch.Tensor) -> None:
    p = points.double()
    assert p.mean(dim=0).abs().max() < 1e-5
    assert abs(p.norm(dim=1).max().item() - 1.0) < 1e-5


# ---------------------------------------------------------------------------------- ShapeNet-55

@pytest.fixture
def shapenet(tmp_path):
    content = fx.write_shapenet(str(tmp_path), n_points=256, per_split=2)
    return ShapeNetPaths.from_root(tmp_path), content


def test_category_table_layouts(tmp_path):
    expected = [(0, "02691156", "airplane, aeroplane, plane: an aircraft"),
                (1, "03001627", "chair: a seat for one")]
    layouts = {
        "columns_maps": fx.SHAPENET_TABLE,
        "columns_lists": {"catalogue": ["02691156", "3001627"],  # numeric strings as pandas reads
                          "describe": [t for _, _, t in expected]},
        "records": [{"catalogue": 2691156, "describe": expected[0][2]},
                    {"catalogue": 3001627, "describe": expected[1][2]}],
    }
    for name, table in layouts.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(table))
        assert read_category_table(str(path)) == expected, name
    # Row keys are the labels (pandas' index), in file order.
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"catalogue": {"5": 2691156, "2": 3001627},
                                "describe": {"5": "a", "2": "b"}}))
    assert read_category_table(str(path)) == [(5, "02691156", "a"), (2, "03001627", "b")]


@pytest.mark.parametrize("table", [
    fx.SHAPENET_TABLE,
    {"catalogue": {"0": "02691156", "1": "03001627"}, "describe": {"0": "a", "1": "b"}},
    {"catalogue": {"5": 2691156, "2": 3001627, "10": 4401088}, "describe": {"5": "a", "2": "b",
                                                                            "10": "c"}},
    {"catalogue": {"1": 2691156, "0": 3001627}, "describe": {"0": "b", "1": "a"}},
    {"catalogue": ["02691156", 3001627], "describe": ["a", "b"]},
    [{"catalogue": 2691156, "describe": "a", "id": 1}, {"catalogue": "03001627", "describe": "b"}],
])
def test_category_table_matches_pandas(tmp_path, table):
    """The official loader's reading: pd.read_json(path).iterrows(), label = index."""
    pd = pytest.importorskip("pandas", reason="pandas is the reference here, not a dependency")
    path = tmp_path / "table.json"
    path.write_text(json.dumps(table))
    expected = [(int(index), "0" + str(row["catalogue"]), row["describe"])
                for index, row in pd.read_json(str(path)).iterrows()]
    assert read_category_table(str(path)) == expected


def test_shapenet_whole_concatenates_test_then_train(shapenet):
    paths, _ = shapenet
    train_only = ShapeNet55(paths, "train", 64, whole=False, n_points=256, image="none")
    whole = ShapeNet55(paths, "train", 64, whole=True, n_points=256, image="none")
    test_only = ShapeNet55(paths, "test", 64, whole=False, n_points=256, image="none")
    names = lambda ds: [r.file_name for r in ds.records]  # noqa: E731
    assert names(whole) == names(test_only) + names(train_only)
    half = ShapeNet55(paths, "train", 64, whole=True, ratio=0.5, n_points=256, image="none")
    assert names(half) == names(whole)[:2]
    record = whole.records[0]
    assert (record.taxonomy_id, record.model_id) == ("02691156", "testmodel0abc")


def test_shapenet_item(shapenet):
    paths, content = shapenet
    ds = ShapeNet55(paths, "train", 64, whole=False, n_points=256, image="center")
    item = ds[1]
    name = ds.records[1].file_name
    assert set(item) == {"index", "taxonomy_id", "model_id", "points", "image", "label",
                         "prefix_id", "suffix_id", "text"}
    assert item["index"] == 1 and item["taxonomy_id"] == "03001627"
    assert item["label"].dtype == torch.int64 and item["label"].item() == 1
    assert item["points"].shape == (64, 3) and item["points"].dtype == torch.float32
    assert_unit_normalised(item["points"])
    describe = fx.SHAPENET_TABLE["describe"]["1"]
    assert item["text"] == (PROMPT_PREFIXES[item["prefix_id"]] + describe
                            + PROMPT_SUFFIXES[item["suffix_id"]])
    # Points: the documented sampler (a shuffled index prefix of the first n_points rows) + pc_norm.
    torch.manual_seed(5)
    got = ds.load_points(1)
    torch.manual_seed(5)
    chosen = torch.randperm(256)[:64].numpy()
    np.testing.assert_allclose(got, ref_pc_norm(content[name][0][chosen]), atol=2e-6)
    # Image ("center" view): the render read as BGR, resized to 256, centre crop 224, ImageNet norm.
    rgb = content[name][1]
    pil = Image.fromarray(np.ascontiguousarray(rgb[:, :, ::-1])).resize((256, 256))
    crop = np.asarray(pil.crop((16, 16, 240, 240)), dtype=np.float32) / 255.0
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = ((crop - mean) / std).transpose(2, 0, 1)
    np.testing.assert_allclose(item["image"].numpy(), expected, atol=1e-5)


def test_shapenet_prompts_and_augmented_images(shapenet):
    paths, _ = shapenet
    no_images = ShapeNet55(paths, "train", 32, whole=True, n_points=256, image="none")
    torch.manual_seed(0)
    items = [no_images[0] for _ in range(300)]
    assert "image" not in items[0]
    pairs = {(int(it["prefix_id"]), int(it["suffix_id"])) for it in items}
    assert {p for p, _ in pairs} == set(range(20)) and {s for _, s in pairs} == {0, 1, 2}
    ds = ShapeNet55(paths, "train", 32, whole=True, n_points=256, image="augment")
    torch.manual_seed(1)
    a = ds[2]["image"]
    torch.manual_seed(1)
    b = ds[2]["image"]
    c = ds[2]["image"]
    assert a.shape == (3, 224, 224) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)  # seeded, and random from draw to draw


def test_read_bgr_image_matches_opencv_rules(tmp_path):
    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert (read_bgr_image(str(tmp_path / "rgb.png"))[0, 0] == [50, 100, 200]).all()
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., :3], rgba[..., 3] = (10, 20, 30), 0  # fully transparent: OpenCV ignores alpha
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert (read_bgr_image(str(tmp_path / "rgba.png"))[0, 0] == [30, 20, 10]).all()
    Image.fromarray(np.full((3, 3), 77, np.uint8), "L").save(tmp_path / "grey.png")
    assert (read_bgr_image(str(tmp_path / "grey.png")) == 77).all()
    Image.fromarray(np.full((3, 3), 0x1234, np.uint16)).save(tmp_path / "grey16.png")
    assert (read_bgr_image(str(tmp_path / "grey16.png")) == 0x12).all()
    out = read_bgr_image(str(tmp_path / "rgb.png"))
    assert out.dtype == np.uint8 and out.shape == (4, 5, 3) and out.flags.c_contiguous


# --------------------------------------------------------------------------------- ScanObjectNN

@pytest.mark.parametrize("variant,folder,name", [
    ("hardest", "main_split", "{}_objectdataset_augmentedrot_scale75.h5"),
    ("PB_T50_RS", "main_split", "{}_objectdataset_augmentedrot_scale75.h5"),
    ("objectbg", "main_split", "{}_objectdataset.h5"),
    ("OBJ_ONLY", "main_split_nobg", "{}_objectdataset.h5"),
])
def test_scanobjectnn_files_and_items(tmp_path, variant, folder, name):
    data = {}
    for split, prefix in (("train", "training"), ("test", "test")):
        data[split] = fx.write_scanobjectnn(str(tmp_path / folder / name.format(prefix)),
                                            seed=len(split))
    for root in (tmp_path, tmp_path / folder):  # ScanObjectNN/ or the official ROOT
        test = ScanObjectNN(root, "test", variant)
        points, labels = data["test"]
        assert len(test) == 5
        for i in range(5):
            item = test[i]
            assert item["points"].dtype == torch.float32
            assert torch.equal(item["points"], torch.from_numpy(points[i]))  # not normalised
            assert item["label"].item() == labels[i] and item["label"].dtype == torch.int64
    train = ScanObjectNN(tmp_path, "train", variant)
    points, _ = data["train"]
    got = train[3]["points"].numpy()
    assert not np.array_equal(got, points[3])  # shuffled point order for train
    np.testing.assert_array_equal(np.sort(got.view("f4,f4,f4"), axis=0),
                                  np.sort(points[3].copy().view("f4,f4,f4"), axis=0))
    got[:] = 0  # items are copies: the dataset's array is untouched
    assert np.array_equal(train.points[3], points[3])


# ------------------------------------------------------------------------------------- ModelNet

def test_modelnet_builds_official_fps_cache(tmp_path):
    from reference import fps_reference

    clouds = fx.write_modelnet_txt(str(tmp_path), rows=40)
    ds = ModelNet(tmp_path, "test", 40, n_points=16)
    cache = tmp_path / "modelnet40_test_16pts_fps.dat"
    with open(cache, "rb") as f:
        points_list, labels_list = pickle.load(f)
    ids = (tmp_path / "modelnet40_test.txt").read_text().split()
    assert len(points_list) == len(labels_list) == len(ids) == len(ds) == 6
    for shape_id, points, label in zip(ids, points_list, labels_list):
        assert points.dtype == np.float32 and points.shape == (16, 6)
        assert label.dtype == np.int32 and label.shape == (1,)
        assert fx.MODELNET_CLASSES[label[0]] == "_".join(shape_id.split("_")[:-1])
        # FPS from the chosen start: compare with the reference started at the same row.
        source = clouds[shape_id]
        start = int(np.flatnonzero((source == points[0]).all(axis=1))[0])
        idx = fps_reference(torch.from_numpy(source[None, :, :3]), 16,
                            start_idx=torch.tensor([start]))[0].numpy()
        np.testing.assert_array_equal(points, source[idx])
    item = ds[2]
    assert set(item) == {"index", "points", "label"} and item["label"].item() == 1
    np.testing.assert_allclose(item["points"].numpy(), ref_pc_norm(points_list[2][:, :3]),
                               atol=2e-6)  # test split: order kept
    assert ModelNet(tmp_path, "test", 40, n_points=16, use_normals=True)[2]["points"].shape == \
        (16, 6)


def test_modelnet_reads_existing_cache_and_shuffles_train(tmp_path):
    (tmp_path / "modelnet10_shape_names.txt").write_text("a\nb\nc\n")
    points, labels = fx.write_modelnet_dat(str(tmp_path / "modelnet10_train_32pts_fps.dat"))
    ds = ModelNet(tmp_path, "train", 10, n_points=32, build_cache=False)
    assert len(ds) == 4
    item = ds[1]
    assert item["label"].item() == labels[1][0]
    assert_unit_normalised(item["points"])
    expected = ref_pc_norm(points[1][:, :3])
    got = item["points"].numpy().astype(np.float64)
    assert not np.allclose(got, expected)  # shuffled
    np.testing.assert_allclose(np.sort(got, axis=0), np.sort(expected, axis=0), atol=2e-6)


def test_modelnet_fewshot(tmp_path):
    content = fx.write_fewshot(str(tmp_path), way=5, shot=2, fold=3)
    test = ModelNetFewShot(tmp_path, 5, 2, 3, "test")
    assert len(test) == 15 and len(ModelNetFewShot(tmp_path, 5, 2, 3, "train")) == 10
    points, label, original = content["test"][4]
    item = test[4]
    assert item["label"].item() == label and item["original_label"].item() == int(original)
    np.testing.assert_allclose(item["points"].numpy(), ref_pc_norm(points[:, :3]), atol=2e-6)
    assert np.array_equal(test.samples[4][0], points)  # the stored array is not normalised in place


def test_dataset_from_official_config(tmp_path):
    fx.write_shapenet(str(tmp_path / "ShapeNet55-34"), n_points=256)
    fx.write_scanobjectnn(str(tmp_path / "ScanObjectNN/main_split_nobg/test_objectdataset.h5"))
    base = {"NAME": "ShapeNet", "DATA_PATH": "ShapeNet55-34/ShapeNet-55", "N_POINTS": 256,
            "PC_PATH": "ShapeNet55-34/shapenet_pc", "IMG_PATH": "ShapeNet55-34/shapenet_img",
            "TEXT_PATH": "ShapeNet55-34/shapenet55.json", "ratio": 1.0}
    ds = dataset_from_config(base, {"subset": "train", "npoints": 64, "whole": True},
                             data_root=str(tmp_path))
    assert isinstance(ds, ShapeNet55) and len(ds) == 4
    scan = dataset_from_config({"NAME": "ScanObjectNN", "ROOT": "ScanObjectNN/main_split_nobg"},
                               {"subset": "test"}, data_root=str(tmp_path))
    assert isinstance(scan, ScanObjectNN) and scan.variant == "objectonly"
    with pytest.raises(ValueError, match="unknown dataset NAME 'Foo'"):
        dataset_from_config({"NAME": "Foo"}, {"subset": "train"})


# ------------------------------------------------------------------------------- bad input files

def test_missing_paths_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="ScanObjectNN directory not found"):
        ScanObjectNN(tmp_path / "nowhere", "train")
    (tmp_path / "main_split").mkdir()
    with pytest.raises(FileNotFoundError, match="training_objectdataset_augmentedrot_scale75.h5"):
        ScanObjectNN(tmp_path, "train", "hardest")
    with pytest.raises(FileNotFoundError, match="modelnet40_shape_names.txt"):
        ModelNet(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match=r"5way_10shot.0\.pkl"):
        ModelNetFewShot(tmp_path, 5, 10, 0)
    with pytest.raises(FileNotFoundError, match="train.txt"):
        ShapeNet55(ShapeNetPaths(str(tmp_path), "a", "b", "c"))


def test_shapenet_bad_files_are_named(tmp_path):
    fx.write_shapenet(str(tmp_path), n_points=256)
    paths = ShapeNetPaths.from_root(tmp_path)
    ds = ShapeNet55(paths, "train", 64, whole=False, n_points=256, image="center")
    npy, png = ds.point_path(0), ds.image_path(0)
    with open(npy, "wb") as f:
        f.write(b"not a numpy file")
    with pytest.raises(DatasetFileError, match=os.path.basename(npy)):
        ds[0]
    np.save(npy, np.zeros((256, 2), np.float32))
    with pytest.raises(DatasetFileError, match=r"shape \(256, 2\)"):
        ds[0]
    np.save(npy, np.zeros((100, 3), np.float32))  # fewer rows than N_POINTS
    with pytest.raises(DatasetFileError, match=r"N >= 256"):
        ds[0]
    np.save(npy, np.zeros((256, 3), np.float32))  # all points coincide
    with pytest.raises(DatasetFileError, match="degenerate"):
        ds[0]
    with open(png, "wb") as f:
        f.write(b"\x89PNG garbage")
    with pytest.raises(DatasetFileError, match=os.path.basename(png)):
        ds.load_image(0)
    os.remove(png)
    with pytest.raises(FileNotFoundError, match=os.path.basename(png)):
        ds.load_image(0)
    (tmp_path / "shapenet55.json").write_text('{"catalogue": {"0": 2691156}, "describe": {"0": '
                                              '"x"}}')
    with pytest.raises(DatasetFileError, match=r"shapenet55.json.*03001627"):
        ShapeNet55(paths, "train", 64, whole=False, n_points=256)
    (tmp_path / "shapenet55.json").write_text("{broken")
    with pytest.raises(DatasetFileError, match="shapenet55.json: not valid JSON"):
        ShapeNet55(paths, "train", 64, n_points=256)


def test_bad_h5_and_pickles_are_named(tmp_path):
    h5_path = tmp_path / "main_split" / "test_objectdataset.h5"
    h5_path.parent.mkdir()
    h5_path.write_bytes(b"definitely not hdf5")
    with pytest.raises(DatasetFileError, match="test_objectdataset.h5: not a readable HDF5"):
        ScanObjectNN(tmp_path, "test", "objectbg")
    import h5py
    with h5py.File(h5_path, "w") as f:
        f["data"] = np.zeros((3, 8, 3), np.float32)
    with pytest.raises(DatasetFileError, match=r"missing HDF5 dataset\(s\) \['label'\]"):
        ScanObjectNN(tmp_path, "test", "objectbg")
    with h5py.File(h5_path, "w") as f:
        f["data"], f["label"] = np.zeros((3, 8, 2), np.float32), np.zeros(3)
    with pytest.raises(DatasetFileError, match=r"'data' must be numeric \(N, P, 3\)"):
        ScanObjectNN(tmp_path, "test", "objectbg")
    with h5py.File(h5_path, "w") as f:
        f["data"], f["label"] = np.zeros((3, 8, 3), np.float32), np.zeros(4)
    with pytest.raises(DatasetFileError, match=r"'label' must have shape \(3,\)"):
        ScanObjectNN(tmp_path, "test", "objectbg")

    (tmp_path / "modelnet40_shape_names.txt").write_text("a\nb\n")
    dat = tmp_path / "modelnet40_test_32pts_fps.dat"
    dat.write_bytes(b"\x80\x04garbage")
    with pytest.raises(DatasetFileError, match="modelnet40_test_32pts_fps.dat"):
        ModelNet(tmp_path, "test", n_points=32)
    with open(dat, "wb") as f:
        pickle.dump([[np.zeros((32, 2), np.float32)], [np.array([0], np.int32)]], f)
    with pytest.raises(DatasetFileError, match=r"entry 0.*shape \(32, 2\)"):
        ModelNet(tmp_path, "test", n_points=32)
    with open(dat, "wb") as f:
        pickle.dump([[np.ones((32, 6), np.float32)], [np.array([7], np.int32)]], f)
    with pytest.raises(DatasetFileError, match=r"label entry 0 must be one int in \[0, 1\]"):
        ModelNet(tmp_path, "test", n_points=32)
    with open(dat, "wb") as f:
        pickle.dump(os.system, f)  # a pickle that would call code must be refused
    with pytest.raises(DatasetFileError, match="refusing to unpickle"):
        ModelNet(tmp_path, "test", n_points=32)


def test_modelnet_txt_errors_name_the_file(tmp_path):
    fx.write_modelnet_txt(str(tmp_path), rows=40)
    bad = tmp_path / "vase" / "vase_0101.txt"
    bad.write_text("1,2,3\n4,5\n")
    with pytest.raises(DatasetFileError, match="vase_0101.txt"):
        build_modelnet_cache(str(tmp_path), "test", 40, n_points=16, progress=False)
    bad.write_text("1,2,3,4,5,6\n" * 4)
    with pytest.raises(DatasetFileError, match=r"vase_0101.txt.*N >= 16"):
        build_modelnet_cache(str(tmp_path), "test", 40, n_points=16, progress=False)
    assert not (tmp_path / "modelnet40_test_16pts_fps.dat").exists()  # no partial cache
