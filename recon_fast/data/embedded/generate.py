"""Generate the embedded dataset into a cache directory, in the ShapeNet-55 layout.

``prepare_embedded()`` returns an :class:`EmbeddedSet`; the files live under
``<cache>/embedded/<key>/``::

    shapenet_pc/<synset>-<model>.npy     float32 (n_points, 3), unit sphere, like ShapeNet
    shapenet_img/<synset>-<model>.png    224 x 224 RGB render (our point-splat renderer)
    ShapeNet-55/{train,test}.txt         per class: the first shapes train, the last test
    shapenet55.json                      pandas "columns" table: catalogue (synset), describe
    embedded.json                        the generation settings (the cache key's content)

so :class:`~recon_fast.data.ShapeNet55` reads it unchanged. Each shape is drawn from its own RNG
seeded by (seed, class id in the catalogue, instance), hence the same seed gives byte-identical
files whatever the class subset, order of generation or number of worker processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np
from tqdm import tqdm

from recon_fast.data.embedded.render import render_view
from recon_fast.data.embedded.shapes import CATALOGUE, CLASS_NAMES, make_shape, synset_of

FORMAT_VERSION = 1
META_FILE = "embedded.json"


def default_cache_dir() -> str:
    """``$RECON_FAST_CACHE`` or ``~/.cache/recon_fast``."""
    return os.environ.get("RECON_FAST_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                              "recon_fast")


@dataclass(frozen=True)
class EmbeddedConfig:
    """What defines an embedded dataset (every field is part of the cache key)."""

    seed: int = 0
    classes: tuple[str, ...] = CLASS_NAMES
    shapes_per_class: int = 32
    test_per_class: int = 8
    n_points: int = 8192
    image_size: int = 224
    noise: float = 0.004
    format_version: int = FORMAT_VERSION

    def validate(self) -> None:
        unknown = [c for c in self.classes if c not in CLASS_NAMES]
        if unknown or not self.classes or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be distinct names from {list(CLASS_NAMES)}, got "
                             f"{list(self.classes)}")
        if not 0 < self.test_per_class < self.shapes_per_class:
            raise ValueError(f"need 0 < test_per_class < shapes_per_class, got "
                             f"{self.test_per_class} and {self.shapes_per_class}")
        if self.n_points < 16 or self.image_size < 16:
            raise ValueError(f"n_points and image_size must be >= 16, got {self.n_points}, "
                             f"{self.image_size}")

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return f"s{self.seed}-{len(self.classes)}x{self.shapes_per_class}-" \
               f"{hashlib.sha256(blob).hexdigest()[:12]}"


def model_id_of(seed: int, class_name: str, instance: int) -> str:
    name = f"recon-embedded/{seed}/{class_name}/{instance}"
    return hashlib.sha256(name.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class EmbeddedSet:
    """A generated embedded dataset on disk."""

    root: str
    config: EmbeddedConfig

    @property
    def paths(self):
        from recon_fast.data.shapenet import ShapeNetPaths

        return ShapeNetPaths.from_root(self.root)

    @property
    def class_names(self) -> list[str]:
        return list(self.config.classes)

    @property
    def descriptions(self) -> list[str]:
        by_name = {c.name: c.describe for c in CATALOGUE}
        return [by_name[name] for name in self.config.classes]

    def pretrain_dataset(self, subset: str = "train", npoints: int = 1024, *, whole: bool = False,
                         image: str = "augment"):
        """The set as a :class:`ShapeNet55` (pretraining items with renders and prompts).

        `whole` defaults to False here so the test shapes stay unseen for the classification
        check; pass True for the official "test + train" pretraining set.
        """
        from recon_fast.data.shapenet import ShapeNet55

        return ShapeNet55(self.paths, subset, npoints, whole=whole, n_points=self.config.n_points,
                          image=image)

    def classification_dataset(self, split: str = "train"):
        """The set's train or test split as (points, label) items."""
        from recon_fast.data.embedded.dataset import EmbeddedClassification

        return EmbeddedClassification(self, split)


def _shape_files(config: EmbeddedConfig, class_name: str, instance: int) -> tuple[str, str]:
    stem = f"{synset_of(class_name)}-{model_id_of(config.seed, class_name, instance)}"
    return f"{stem}.npy", f"{stem}.png"


def _generate_one(args: tuple[EmbeddedConfig, str, int, str]) -> None:
    config, class_name, instance, root = args
    from PIL import Image

    catalogue_index = CLASS_NAMES.index(class_name)
    rng = np.random.default_rng([config.seed, catalogue_index, instance])
    points, normals, closed = make_shape(CATALOGUE[catalogue_index], config.n_points, rng,
                                         config.noise)
    colour = rng.uniform(0.25, 0.9, size=3)
    npy_name, png_name = _shape_files(config, class_name, instance)
    np.save(os.path.join(root, "shapenet_pc", npy_name), points)
    image = render_view(points, normals, colour, config.image_size, closed)
    Image.fromarray(image).save(os.path.join(root, "shapenet_img", png_name), compress_level=1)


def _write_tables(config: EmbeddedConfig, root: str) -> None:
    split_lines = {"train": [], "test": []}
    first_test = config.shapes_per_class - config.test_per_class
    for name in config.classes:
        for instance in range(config.shapes_per_class):
            split = "test" if instance >= first_test else "train"
            split_lines[split].append(_shape_files(config, name, instance)[0])
    for split, lines in split_lines.items():
        with open(os.path.join(root, "ShapeNet-55", f"{split}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    by_name = {c.name: c.describe for c in CATALOGUE}
    table = {"catalogue": {str(i): int(synset_of(n)) for i, n in enumerate(config.classes)},
             "describe": {str(i): by_name[n] for i, n in enumerate(config.classes)}}
    with open(os.path.join(root, "shapenet55.json"), "w") as f:
        json.dump(table, f, indent=1)
    with open(os.path.join(root, META_FILE), "w") as f:
        json.dump(asdict(config), f, indent=1, sort_keys=True)


def generate_embedded(root: str, config: EmbeddedConfig, workers: int = 0,
                      progress: bool = True) -> None:
    """Write every file of `config` into the (new or empty) directory `root`."""
    config.validate()
    for sub in ("shapenet_pc", "shapenet_img", "ShapeNet-55"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    jobs = [(config, name, i, root) for name in config.classes
            for i in range(config.shapes_per_class)]
    bar = tqdm(total=len(jobs), desc="embedded shapes", disable=not progress)
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_generate_one, jobs, chunksize=8):
                bar.update()
    else:
        for job in jobs:
            _generate_one(job)
            bar.update()
    bar.close()
    _write_tables(config, root)


def _is_complete(root: str, config: EmbeddedConfig) -> bool:
    try:
        with open(os.path.join(root, META_FILE)) as f:
            return json.load(f) == json.loads(json.dumps(asdict(config)))
    except (OSError, ValueError):
        return False


def prepare_embedded(cache_dir: Optional[str] = None, *, seed: int = 0,
                     classes: Optional[Sequence[str]] = None, shapes_per_class: int = 32,
                     test_per_class: int = 8, n_points: int = 8192, image_size: int = 224,
                     workers: int = 0, progress: bool = True) -> EmbeddedSet:
    """Return the embedded dataset for these settings, generating it on first use.

    Defaults: all 16 classes x 32 shapes (24 train + 8 test per class), 8192 points, 224 px
    renders; about 8 s on one core. Generation goes to a temporary directory that is renamed
    into place when complete, so an interrupted run never leaves a half-written set behind and
    concurrent runs do not collide.

    Args:
        cache_dir: parent folder (default :func:`default_cache_dir`); files go to
            ``<cache_dir>/embedded/<key>/``.
        classes: subset of ``CLASS_NAMES`` (labels follow this order).
        workers: > 1 generates in that many processes.
    """
    config = EmbeddedConfig(seed, tuple(classes) if classes else CLASS_NAMES, shapes_per_class,
                            test_per_class, n_points, image_size)
    config.validate()
    parent = os.path.join(cache_dir or default_cache_dir(), "embedded")
    root = os.path.join(parent, config.key())
    if not _is_complete(root, config):
        os.makedirs(parent, exist_ok=True)
        tmp = f"{root}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        generate_embedded(tmp, config, workers, progress)
        if _is_complete(root, config):  # another process finished first; both are identical
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(root, ignore_errors=True)  # an incomplete leftover of an older run
            try:
                os.rename(tmp, root)
            except OSError:  # lost a race with another process renaming its identical copy
                shutil.rmtree(tmp, ignore_errors=True)
    return EmbeddedSet(root, config)
