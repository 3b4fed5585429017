"""Writers of tiny datasets in the published on-disk formats (shared by the data tests)."""

from __future__ import annotations

import json
import os
import pickle

import h5py
import numpy as np
from PIL import Image

SHAPENET_TABLE = {  # the pandas "columns" layout, catalogue as integers (leading zero dropped)
    "catalogue": {"0": 2691156, "1": 3001627},
    "describe": {"0": "airplane, aeroplane, plane: an aircraft", "1": "chair: a seat for one"},
}


def write_shapenet(root: str, n_points: int = 8192, per_split: int = 2, seed: int = 0,
                   image_size: int = 40) -> dict:
    """ShapeNet55-34 layout with two synsets; returns {file name: (points, rgb image)}."""
    rng = np.random.default_rng(seed)
    for sub in ("shapenet_pc", "shapenet_img", "ShapeNet-55"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    with open(os.path.join(root, "shapenet55.json"), "w") as f:
        json.dump(SHAPENET_TABLE, f)
    content, lists = {}, {"train": [], "test": []}
    for split in ("train", "test"):
        for i in range(per_split):
            synset = "02691156" if i % 2 == 0 else "03001627"
            name = f"{synset}-{split}model{i}abc.npy"
            points = rng.normal(size=(n_points, 3)).astype(np.float64) * [1.0, 2.0, 0.5] + 3.0
            rgb = rng.integers(0, 256, size=(image_size, image_size + 4, 3), dtype=np.uint8)
            np.save(os.path.join(root, "shapenet_pc", name), points)
            Image.fromarray(rgb).save(os.path.join(root, "shapenet_img", name[:-4] + ".png"))
            content[name] = (points, rgb)
            lists[split].append(name)
    for split, names in lists.items():
        with open(os.path.join(root, "ShapeNet-55", f"{split}.txt"), "w") as f:
            f.write("\n".join(names) + "\n")
    return content


def write_scanobjectnn(path: str, count: int = 5, n_points: int = 64, seed: int = 0,
                       classes: int = 15) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(count, n_points, 3)).astype(np.float32) * 3 + 1
    label = rng.integers(0, classes, size=count).astype(np.int64)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with h5py.File(path, "w") as f:
        f["data"] = data
        f["label"] = label
        f["normal"] = np.zeros_like(data)  # other keys exist in the real files and are ignored
    return data, label


MODELNET_CLASSES = ["airplane", "night_stand", "vase"]


def write_modelnet_txt(root: str, rows: int = 40, per_class: int = 2, seed: int = 0) -> dict:
    """modelnet40_normal_resampled-style text files for three classes (train and test)."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "modelnet40_shape_names.txt"), "w") as f:
        f.write("\n".join(MODELNET_CLASSES) + "\n")
    clouds = {}
    for split in ("train", "test"):
        ids = []
        for cls in MODELNET_CLASSES:
            os.makedirs(os.path.join(root, cls), exist_ok=True)
            for i in range(per_class):
                shape_id = f"{cls}_{(0 if split == 'train' else 100) + i + 1:04d}"
                cloud = rng.normal(size=(rows, 6)).astype(np.float32)
                np.savetxt(os.path.join(root, cls, shape_id + ".txt"), cloud, delimiter=",",
                           fmt="%.6f")
                clouds[shape_id] = np.loadtxt(os.path.join(root, cls, shape_id + ".txt"),
                                              delimiter=",").astype(np.float32)
                ids.append(shape_id)
        with open(os.path.join(root, f"modelnet40_{split}.txt"), "w") as f:
            f.write("\n".join(ids) + "\n")
    return clouds


def write_modelnet_dat(path: str, count: int = 4, n_points: int = 32, classes: int = 3,
                       seed: int = 0) -> tuple[list, list]:
    """A *_fps.dat cache exactly as the official code pickles it."""
    rng = np.random.default_rng(seed)
    points = [rng.normal(size=(n_points, 6)).astype(np.float32) for _ in range(count)]
    labels = [np.array([i % classes], dtype=np.int32) for i in range(count)]
    with open(path, "wb") as f:
        pickle.dump([points, labels], f)
    return points, labels


def write_fewshot(root: str, way: int = 5, shot: int = 2, fold: int = 0, n_points: int = 32,
                  seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    content = {}
    for split, per_class in (("train", shot), ("test", 3)):
        items = [(rng.normal(size=(n_points, 6)).astype(np.float32), i % way,
                  np.int32(10 + i % way)) for i in range(way * per_class)]
        content[split] = items
    folder = os.path.join(root, f"{way}way_{shot}shot")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{fold}.pkl"), "wb") as f:
        pickle.dump(content, f)
    return content
