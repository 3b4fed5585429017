"""`recon-fast eval`: evaluate a checkpoint with one of the official protocols."""

from __future__ import annotations

from recon_fast.train.config import Config, ConfigError
from recon_fast.train.finetune import dataset_name, plain_batches, split_dataset
from recon_fast.train.loop import build_model_from_config
from recon_fast.train.runtime import Dist, Logger, RunOptions, autocast_context, resolve_device

# The model NAME each protocol needs (the official cfgs/svm, cfgs/zeroshot, cfgs/full configs).
PROTOCOL_MODELS = {"svm": "PointTransformerSVM", "zeroshot": "PointTransformerZeroShot",
                   "vote": "PointTransformer", "accuracy": "PointTransformer"}


def class_names_of(dataset) -> list[str]:
    """Class names in label order, for the zero-shot prompts."""
    from recon_fast.data import SCANOBJECTNN_CLASSES

    for attr in ("class_names", "classes"):
        names = getattr(dataset, attr, None)
        if names:
            return list(names)
    if dataset_name(dataset).startswith("ScanObjectNN"):
        return list(SCANOBJECTNN_CLASSES)
    raise ConfigError(f"cannot tell the class names of {type(dataset).__name__}")


def run_evaluation(protocol: str, config: Config, opts: RunOptions, *, ckpt: str, votes: int = 10,
                   vote_rounds: int = 1) -> dict:
    from recon_fast import ops
    from recon_fast.model import load_official_checkpoint

    if protocol not in PROTOCOL_MODELS:
        raise ConfigError(f"unknown protocol {protocol!r}; choose from {sorted(PROTOCOL_MODELS)}")
    want = PROTOCOL_MODELS[protocol]
    if config.model.get("NAME") != want:
        raise ConfigError(f"eval {protocol} needs a config whose model.NAME is {want!r} (as the "
                          f"official cfgs/{protocol if protocol != 'vote' else 'full'}/ files), got "
                          f"{config.model.get('NAME')!r}")
    device = resolve_device(opts.device)
    logger = Logger(opts.out_dir, Dist(), tensorboard=False, progress=opts.progress)
    model = build_model_from_config(config.model, opts).to(device)
    report = load_official_checkpoint(ckpt, model)
    logger.info(f"loaded {ckpt}: {report}")
    npoints = int(config.get("npoints", 1024))
    batch_size = int(config.get("total_bs", 32))
    try:
        with ops.checks(data=True):  # evaluation reads new data: validate it
            recomputed = _maybe_recompute_bn(config, opts, model, ckpt, npoints, batch_size,
                                             device, logger)
            result = _evaluate(protocol, config, opts, model, npoints, batch_size, device,
                               logger, votes, vote_rounds)
            return {**result, "recompute_bn": recomputed}
    finally:
        logger.close()


def _maybe_recompute_bn(config, opts, model, ckpt, npoints, batch_size, device, logger) -> bool:
    """--recompute-bn: BatchNorm statistics from the config's train split before measuring
    (auto: when the checkpoint records a short run; see recon_fast.eval.batchnorm)."""
    from recon_fast.eval.batchnorm import recompute_bn_statistics, should_recompute
    from recon_fast.train.state import load_checkpoint_file

    steps = None
    if opts.recompute_bn == "auto":
        steps = load_checkpoint_file(ckpt).get("global_step")
    if not should_recompute(opts.recompute_bn, steps):
        return False
    if "train" not in config.dataset:
        if opts.recompute_bn == "on":
            raise ConfigError("--recompute-bn on needs a dataset.train section (the clouds the "
                              "statistics are computed on)")
        return False
    train = split_dataset(config, "train", opts)
    layers = recompute_bn_statistics(model, plain_batches(train, batch_size, opts.workers),
                                     npoints, device)
    logger.info(f"[eval] BatchNorm statistics of {layers} layers recomputed on {len(train)} "
                f"train clouds (--recompute-bn {opts.recompute_bn})")
    return True


def _evaluate(protocol, config, opts, model, npoints, batch_size, device, logger, votes,
              vote_rounds) -> dict:
    if protocol == "svm":
        return {"svm_accuracy": _svm(config, opts, model, npoints, batch_size, device, logger)}
    if protocol == "zeroshot":
        return {"zero_shot_accuracy": _zeroshot(config, opts, model, npoints, batch_size,
                                                device, logger)}
    test = split_dataset(config, "test" if "test" in config.dataset else "val", opts)
    autocast = lambda: autocast_context(opts.amp, device)  # noqa: E731
    if protocol == "accuracy":
        from recon_fast.eval.classification import accuracy

        acc = accuracy(model, plain_batches(test, batch_size, opts.workers), npoints, device,
                       autocast)
        logger.info(f"[eval] accuracy (plain FPS): {acc * 100:.2f}%")
        return {"accuracy": acc}
    from recon_fast.data import vote_augmentation
    from recon_fast.eval.classification import vote_accuracy

    best, rounds = vote_accuracy(model, lambda: plain_batches(test, batch_size, opts.workers),
                                 npoints, device, vote_augmentation(dataset_name(test)),
                                 votes=votes, rounds=vote_rounds, autocast=autocast)
    logger.info(f"[eval] voting accuracy: {best * 100:.2f}% (best of {vote_rounds} rounds)")
    return {"vote_accuracy": best, "rounds": rounds}


def _svm(config, opts, model, npoints, batch_size, device, logger) -> float:
    from recon_fast.eval.svm import extract_features, svm_accuracy

    train = split_dataset(config, "train", opts)
    test = split_dataset(config, "test" if "test" in config.dataset else "val", opts)
    features = [extract_features(model, plain_batches(ds, batch_size, opts.workers), npoints, device)
                for ds in (train, test)]
    acc = svm_accuracy(*features)
    logger.info(f"[eval] linear SVM accuracy: {acc * 100:.2f}%")
    return acc


def _zeroshot(config, opts, model, npoints, batch_size, device, logger) -> float:
    from recon_fast import teachers
    from recon_fast.eval.zeroshot import zero_shot_accuracy
    from recon_fast.train.teachers import _clip_name

    text_name = config.model.get("text_encoder", "ViT-B/32")
    teacher = teachers.build_text_teacher(_clip_name(text_name), opts.teacher_weights or "openai",
                                          seed=opts.seed, cache_dir=opts.cache_dir).to(device)
    # Accuracy over train + test together, as the official zero-shot runner counts it.
    datasets = [split_dataset(config, s, opts) for s in ("train", "test") if s in config.dataset]
    names = class_names_of(datasets[0])
    table = teachers.build_text_feature_table(teacher, names, opts.cache_dir, progress=logger.progress)
    correct_total = []
    for ds in datasets:
        acc = zero_shot_accuracy(model, table.class_embeddings(),
                                 plain_batches(ds, batch_size, opts.workers), npoints, device)
        correct_total.append((acc * len(ds), len(ds)))
    acc = sum(c for c, _ in correct_total) / max(sum(n for _, n in correct_total), 1)
    logger.info(f"[eval] zero-shot accuracy: {acc * 100:.2f}% over {len(names)} classes")
    return acc
