"""A harder classification set of the embedded shapes, for telling a pretrained encoder from an
untrained one.

On the plain embedded test shapes a linear SVM on the features of a randomly initialised
ReCon-tiny already scores 98-99%, so that number cannot show whether pretraining taught the
encoder anything. The probe set draws new instances of the same classes (an RNG stream the
pretraining shapes never use) and makes them harder in the ways real scans are hard:

* partial clouds: only the points facing a random viewpoint are kept (`keep` of the surface),
* a random orientation: yaw only (`rotate: y`, as the pretraining augmentation) or any
  rotation (`rotate: so3`),
* stronger jitter (`noise`, std after unit-sphere normalisation).

Everything is generated in memory from the seed (a few seconds for 16 x 32 shapes): the same
settings give the same clouds on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from recon_fast.data.embedded.shapes import CATALOGUE, CLASS_NAMES, make_shape, rotation
from recon_fast.errors import ConfigError

# Mixed into every probe shape's RNG seed, so no probe shape equals a pretraining shape.
PROBE_STREAM = 0x70726F62
ROTATIONS = ("none", "y", "so3")


@dataclass(frozen=True)
class ProbeConfig:
    """What defines a probe set; per class the first shapes train, the last `test_per_class` test."""

    seed: int = 0
    classes: tuple[str, ...] = CLASS_NAMES
    shapes_per_class: int = 32
    test_per_class: int = 8
    n_points: int = 2048
    keep: float = 0.5
    rotate: str = "so3"
    noise: float = 0.02

    def validate(self) -> None:
        unknown = [c for c in self.classes if c not in CLASS_NAMES]
        if unknown or not self.classes or len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"probe CLASSES must be distinct names from {list(CLASS_NAMES)}, "
                              f"got {list(self.classes)}")
        if not 0 < self.test_per_class < self.shapes_per_class:
            raise ConfigError(f"probe needs 0 < TEST_PER_CLASS < SHAPES_PER_CLASS, got "
                              f"{self.test_per_class} and {self.shapes_per_class}")
        if self.n_points < 16:
            raise ConfigError(f"probe N_POINTS must be >= 16, got {self.n_points}")
        if not 0 < self.keep <= 1:
            raise ConfigError(f"probe KEEP must be in (0, 1], got {self.keep}")
        if self.rotate not in ROTATIONS:
            raise ConfigError(f"probe ROTATE must be one of {', '.join(ROTATIONS)}, got "
                              f"{self.rotate!r}")
        if not 0 <= self.noise < 1:
            raise ConfigError(f"probe NOISE must be in [0, 1), got {self.noise}")


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation drawn uniformly from SO(3) (a normalised Gaussian quaternion)."""
    a, b, c, d = rng.normal(size=4)
    norm = np.sqrt(a * a + b * b + c * c + d * d)
    a, b, c, d = a / norm, b / norm, c / norm, d / norm
    return np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                     [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
                     [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d]])


def visible_part(points: np.ndarray, keep: float, rng: np.random.Generator) -> np.ndarray:
    """The `keep` fraction of the points lying furthest towards a random viewing direction."""
    towards = rng.normal(size=3)
    count = max(int(round(len(points) * keep)), 1)
    return points[np.argsort(-(points @ towards), kind="stable")[:count]]


def probe_shape(config: ProbeConfig, class_name: str, instance: int) -> np.ndarray:
    """One probe cloud: float32 (n_points, 3), centred, inside the unit sphere."""
    index = CLASS_NAMES.index(class_name)
    rng = np.random.default_rng([config.seed, index, instance, PROBE_STREAM])
    drawn = int(np.ceil(config.n_points / config.keep))
    points, _, _ = make_shape(CATALOGUE[index], drawn, rng, noise=0.0)
    points = visible_part(points.astype(np.float64), config.keep, rng)[:config.n_points]
    if config.rotate == "so3":
        points = points @ random_rotation(rng).T
    elif config.rotate == "y":
        points = points @ rotation("y", float(rng.uniform(0, 2 * np.pi))).T
    points = points + rng.normal(scale=config.noise, size=points.shape)
    points -= points.mean(axis=0)
    points /= max(float(np.linalg.norm(points, axis=1).max()), 1e-12)
    return points.astype(np.float32)


class EmbeddedProbe(Dataset):
    """Train or test split of a probe set. Item: {"index", "points" float32 (n_points, 3),
    "label" int64}, like :class:`EmbeddedClassification`."""

    name = "EmbeddedProbe"

    def __init__(self, config: ProbeConfig, split: str = "train"):
        if split not in ("train", "test"):
            raise ConfigError(f"probe split must be 'train' or 'test', got {split!r}")
        config.validate()
        self.config, self.split = config, split
        self.class_names = list(config.classes)
        first_test = config.shapes_per_class - config.test_per_class
        instances = range(first_test) if split == "train" else \
            range(first_test, config.shapes_per_class)
        pairs = [(label, i) for label in range(len(config.classes)) for i in instances]
        self.points = [probe_shape(config, config.classes[label], i) for label, i in pairs]
        self.labels = np.array([label for label, _ in pairs], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, index: int) -> dict:
        return {"index": index, "points": torch.from_numpy(self.points[index]),
                "label": torch.tensor(self.labels[index], dtype=torch.int64)}
