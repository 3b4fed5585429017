"""Pretraining from a packed dataset (``--data packed:<dir>``): the shards' cached teacher
features replace the online teachers, and the packed sampler gives the data order."""

from __future__ import annotations

from typing import Optional

import torch

from recon_fast.train.config import Config, ConfigError

PACKED_PREFIX = "packed:"


def packed_dir(data: Optional[str]) -> Optional[str]:
    """The folder of ``--data packed:<dir>``; None when no --data is given."""
    if data is None:
        return None
    if not data.startswith(PACKED_PREFIX) or not data[len(PACKED_PREFIX):]:
        raise ConfigError(f"--data {data!r}: expected packed:<folder written by recon-fast pack>")
    return data[len(PACKED_PREFIX):]


def train_npoints(config: Config) -> int:
    others = config.dataset.train.get("others", {}) if "dataset" in config else {}
    return int(others.get("npoints", config.get("npoints", 1024)))


def check_teacher_dims(dataset, model_config, image_teacher: str, where: str) -> None:
    """The model's distillation heads need the features the pack holds, of the same width."""
    wanted = {"image": model_config.img_feature_dim if image_teacher != "off" else None,
              "text": model_config.text_feature_dim}
    held = {"image": dataset.image_dim, "text": dataset.text_dim}
    for kind, dim in wanted.items():
        if dim is None:
            continue
        if not held[kind]:
            raise ConfigError(f"--data {where}: the model distils {kind} features ({dim} dims) but "
                              f"the pack holds none (pack with --{kind}-teacher, or set "
                              f"model.{'img' if kind == 'image' else 'text'}_encoder to null)")
        if held[kind] != dim:
            raise ConfigError(f"--data {where}: the pack's {kind} features have {held[kind]} dims, "
                              f"the model's {kind} head expects {dim}")


class PackedTargets:
    """(img_feature, text_feature) of a packed batch, already on the device; `points` draws
    the batch's clouds there (the loader only copied the stored rows)."""

    def __init__(self, use_image: bool, use_text: bool, npoints: int):
        self.use_image, self.use_text, self.npoints = use_image, use_text, npoints

    def points(self, batch: dict) -> torch.Tensor:
        from recon_fast.data.packed.stream import sample_on_device

        return sample_on_device(batch, self.npoints)["points"]

    def __call__(self, batch: dict) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        image = batch.get("img_feature") if self.use_image else None
        text = batch.get("text_feature") if self.use_text else None
        return image, text


def packed_pretrain_data(config: Config, opts, dist_info, batch_size: int, log):
    """(dataset, loader, sampler) for ``--data packed:<dir>``."""
    from recon_fast.data.packed import PackedDataset, packed_loader

    root = packed_dir(opts.data)
    dataset = PackedDataset(root, train_npoints(config), seed=opts.seed,
                            skip_bad_shards=opts.skip_bad_shards, sample_on_device=True)
    for name, problem in dataset.skipped:
        log.info(f"--skip-bad-shards: skipped {name}: {problem}")
    if dataset.skipped:
        log.info(f"--skip-bad-shards: {len(dataset.skipped)} shard(s) skipped, "
                 f"{len(dataset)} samples left")
    loader, sampler = packed_loader(dataset, batch_size, train=True, seed=opts.seed,
                                    workers=opts.workers, rank=dist_info.rank,
                                    world=dist_info.world)
    return dataset, loader, sampler


def packed_targets(dataset, model: torch.nn.Module, opts) -> PackedTargets:
    """Targets from the batch's cached features, after checking they fit the model's heads."""
    check_teacher_dims(dataset, model.config, opts.image_teacher, opts.data)
    use_image = opts.image_teacher != "off" and model.config.img_feature_dim is not None
    return PackedTargets(use_image, model.config.text_feature_dim is not None, dataset.npoints)
