"""ShapeNet-55 pretraining set with renders and category text (ReCon's ``ShapeNet`` dataset).

Layout (``ShapeNet55-34/``)::

    shapenet_pc/<synset>-<model>.npy      8192 x 3 points
    shapenet_img/<synset>-<model>.png     one render per shape (same stem)
    ShapeNet-55/{train,test}.txt          one "<synset>-<model>.npy" per line
    shapenet55.json                       55 rows: catalogue (synset), describe (class text)

Item (a dict; the default collate batches it):

    index        int     position in this dataset (key of the per-view image-feature cache)
    taxonomy_id  str     synset, e.g. "02691156"
    model_id     str
    points       float32 (npoints, 3): random npoints of the first n_points rows, then pc_norm
    image        float32 (3, 224, 224), BGR order, ImageNet-normalised (absent if image="none")
    label        int64   row label of the synset in shapenet55.json
    prefix_id    int64   uniform in 0..19 (text prompt prefix)
    suffix_id    int64   uniform in 0..2 (text prompt suffix)
    text         str     PROMPT_PREFIXES[prefix_id] + describe + PROMPT_SUFFIXES[suffix_id]
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from recon_fast.data.image import IMAGE_MODES, ImageTransform
from recon_fast.data.io import (DatasetFileError, PathLike, read_bgr_image, read_category_table,
                                read_list_file, read_npy_points, require_dir)
from recon_fast.data.pointcloud import pc_norm
from recon_fast.data.prompts import build_prompt, draw_prompt_ids


@dataclass(frozen=True)
class ShapeNetPaths:
    """The four locations of a ShapeNet-55 style set (the official config keys in comments)."""

    list_dir: str    # DATA_PATH, holds train.txt / test.txt
    pc_dir: str      # PC_PATH
    img_dir: str     # IMG_PATH
    text_path: str   # TEXT_PATH

    @classmethod
    def from_root(cls, root: PathLike) -> "ShapeNetPaths":
        """Paths under a ``ShapeNet55-34`` folder laid out as the official DATASET.md says."""
        root = os.fspath(root)
        return cls(os.path.join(root, "ShapeNet-55"), os.path.join(root, "shapenet_pc"),
                   os.path.join(root, "shapenet_img"), os.path.join(root, "shapenet55.json"))


@dataclass(frozen=True)
class ShapeRecord:
    taxonomy_id: str
    model_id: str
    file_name: str   # "<synset>-<model>.npy" as listed


def parse_list_line(line: str, list_path: str) -> ShapeRecord:
    """'02691156-abc.npy' -> ShapeRecord('02691156', 'abc', line) (split at the first '-')."""
    if "-" not in line:
        raise DatasetFileError(list_path, f"line {line!r} is not '<synset>-<model>.npy'")
    taxonomy_id, rest = line.split("-", 1)
    return ShapeRecord(taxonomy_id, rest.split("-")[0].split(".")[0], line)


def read_shape_list(list_dir: str, subset: str, whole: bool, ratio: float) -> list[ShapeRecord]:
    """The shapes of `subset`; with `whole`, the test lines come first, then the subset's lines.

    `ratio` keeps the first ``int(ratio * len)`` lines (after concatenation), as the official
    loader does.
    """
    require_dir(list_dir, "ShapeNet list (DATA_PATH)")
    list_path = os.path.join(list_dir, f"{subset}.txt")
    lines = read_list_file(list_path, f"ShapeNet {subset} list")
    if whole:
        lines = read_list_file(os.path.join(list_dir, "test.txt"), "ShapeNet test list") + lines
    kept = lines[: int(ratio * len(lines))]
    return [parse_list_line(line, list_path) for line in kept]


class ShapeNet55(Dataset):
    """ReCon's pretraining set: points + one render + class text per shape.

    Args:
        paths: where the lists, points, renders and category file are (see ShapeNetPaths).
        subset: "train" or "test" list.
        npoints: points per sample (random subset of the first `n_points` rows).
        whole: prepend the test list (the pretraining setting, ~52.5k shapes).
        ratio: fraction of lines kept.
        n_points: rows of each .npy the sampler draws from (official N_POINTS = 8192).
        image: "augment" (official training transform), "center" (deterministic view) or "none"
            (skip reading renders, e.g. when image features come from a cache).
    """

    def __init__(self, paths: ShapeNetPaths, subset: str = "train", npoints: int = 1024, *,
                 whole: bool = True, ratio: float = 1.0, n_points: int = 8192,
                 image: str = "augment"):
        if image not in IMAGE_MODES + ("none",):
            raise ValueError(f"image must be one of {IMAGE_MODES + ('none',)}, got {image!r}")
        if not 0 < npoints <= n_points:
            raise ValueError(f"npoints must be in [1, n_points={n_points}], got {npoints}")
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1], got {ratio}")
        self.paths = paths
        self.npoints, self.n_points = npoints, n_points
        self.image_mode = image
        self.transform = ImageTransform(image) if image != "none" else None
        self.records = read_shape_list(paths.list_dir, subset, whole, ratio)
        self.categories = read_category_table(paths.text_path)
        self.synset_to_label = {synset: label for label, synset, _ in self.categories}
        self.synset_to_text = {synset: text for _, synset, text in self.categories}
        self._check_synsets()
        require_dir(paths.pc_dir, "ShapeNet point cloud (PC_PATH)")
        if image != "none":
            require_dir(paths.img_dir, "ShapeNet render (IMG_PATH)")

    def _check_synsets(self) -> None:
        unknown = sorted({r.taxonomy_id for r in self.records} - set(self.synset_to_label))
        if unknown:
            raise DatasetFileError(self.paths.text_path, f"has no row for synset(s) {unknown[:5]} "
                                   f"listed in {self.paths.list_dir}")

    @property
    def class_texts(self) -> list[str]:
        """Descriptions indexed by label (for the text-feature table)."""
        texts = {label: text for label, _, text in self.categories}
        if sorted(texts) != list(range(len(self.categories))):
            raise DatasetFileError(self.paths.text_path, "labels must be 0..K-1 (one row each) to "
                                   f"build a per-class table, got {sorted(texts)[:10]}")
        return [texts[i] for i in range(len(texts))]

    def __len__(self) -> int:
        return len(self.records)

    def point_path(self, index: int) -> str:
        return os.path.join(self.paths.pc_dir, self.records[index].file_name)

    def image_path(self, index: int) -> str:
        png_name = self.records[index].file_name.replace(".npy", ".png")
        return os.path.join(self.paths.img_dir, png_name)

    def load_points(self, index: int) -> np.ndarray:
        """Random `npoints` of the first `n_points` rows, then pc_norm -> float32 (npoints, 3)."""
        path = self.point_path(index)
        cloud = read_npy_points(path, min_rows=self.n_points)[: self.n_points]
        chosen = torch.randperm(self.n_points)[: self.npoints].numpy()
        try:
            return pc_norm(cloud[chosen]).astype(np.float32)
        except ValueError as e:
            raise DatasetFileError(path, str(e)) from e

    def load_image(self, index: int) -> Optional[torch.Tensor]:
        if self.transform is None:
            return None
        return self.transform(read_bgr_image(self.image_path(index)))

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        prefix_id, suffix_id = draw_prompt_ids()
        item = {
            "index": index,
            "taxonomy_id": record.taxonomy_id,
            "model_id": record.model_id,
            "points": torch.from_numpy(self.load_points(index)),
            "label": torch.tensor(self.synset_to_label[record.taxonomy_id], dtype=torch.int64),
            "prefix_id": torch.tensor(prefix_id, dtype=torch.int64),
            "suffix_id": torch.tensor(suffix_id, dtype=torch.int64),
            "text": build_prompt(self.synset_to_text[record.taxonomy_id], prefix_id, suffix_id),
        }
        image = self.load_image(index)
        if image is not None:
            item["image"] = image
        return item
