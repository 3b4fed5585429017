"""Linear SVM on frozen ReCon features (the official runner_svm and pretraining validation)."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from recon_fast.data import fps_sample
from recon_fast.eval.batchnorm import recompute_bn_statistics
from recon_fast.data.loader import build_loader, to_device


@torch.no_grad()
def extract_features(model: torch.nn.Module, batches: Iterable[dict], npoints: int,
                     device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Features of every cloud after plain FPS to `npoints`, model in eval mode."""
    model.eval()
    features, labels = [], []
    for batch in batches:
        batch = to_device(batch, device)
        features.append(model(fps_sample(batch["points"], npoints)).float().cpu())
        labels.append(batch["label"].cpu())
    return torch.cat(features).numpy(), torch.cat(labels).numpy()


def svm_accuracy(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                 C: float = 0.075) -> float:
    """sklearn LinearSVC(C=0.075), default settings, no feature scaling (as the official code)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    clf = LinearSVC(C=C)
    with warnings.catch_warnings():
        # The official settings (max_iter=1000) often stop before liblinear's tolerance.
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(*train)
    return float(np.mean(clf.predict(test[0]) == test[1]))


def svm_accuracy_of_pretrained(pretrain_model: torch.nn.Module, config, opts, device) -> float:
    """SVM accuracy of a pretraining model's encoder on config.dataset.extra_train/extra_val
    (with BatchNorm statistics recomputed on extra_train first when config.run.precise_bn)."""
    return svm_accuracies_of_pretrained({"model": pretrain_model}, config, opts, device)["model"]


def svm_accuracies_of_pretrained(models: dict[str, torch.nn.Module], config, opts,
                                 device) -> dict[str, float]:
    """name -> SVM accuracy of each pretraining model's encoder, all measured the same way on
    the same extra_train/extra_val clouds (datasets built once)."""
    from recon_fast.data import dataset_from_config
    from recon_fast.model import build_model
    from recon_fast.model.checkpoint import unwrap

    for split in ("extra_train", "extra_val"):
        if split not in config.dataset:
            raise ValueError(f"validate: 'svm' needs dataset.{split} (a classification set)")
    loaders = []
    for split in ("extra_train", "extra_val"):
        cfg = config.dataset[split]
        dataset = dataset_from_config(cfg._base_, cfg.get("others", {}), opts.data_root,
                                      cache_dir=opts.cache_dir, progress=False)
        loaders.append(build_loader(dataset, int(config.total_bs), False, 0, distributed=False))
    npoints = int(config.get("npoints", 1024))
    precise_bn = config.get("run", {}).get("precise_bn", False)
    accuracies = {}
    for name, pretrain_model in models.items():
        extractor = svm_model_like(unwrap(pretrain_model), build_model).to(device)
        if precise_bn:
            recompute_bn_statistics(extractor, loaders[0], npoints, device)
        train = extract_features(extractor, loaders[0], npoints, device)
        test = extract_features(extractor, loaders[1], npoints, device)
        accuracies[name] = svm_accuracy(train, test)
    return accuracies


def svm_model_like(pretrain_model: torch.nn.Module, build_model) -> torch.nn.Module:
    """A PointTransformerSVM with the pretraining model's encoder weights (MAE_encoder.*)."""
    config = pretrain_model.config
    extractor = build_model(type(config)(**{**config.to_dict(), "name": "PointTransformerSVM"}))
    encoder_state = {k[len("MAE_encoder."):]: v for k, v in pretrain_model.state_dict().items()
                     if k.startswith("MAE_encoder.")}
    missing, unexpected = extractor.load_state_dict(encoder_state, strict=False)
    if unexpected:
        raise RuntimeError(f"unexpected encoder keys for the SVM model: {unexpected[:5]}")
    return extractor
