"""`recon-fast eval`: evaluate a checkpoint (svm, zeroshot, vote, accuracy) under the official or
the strict protocol (recon_fast.eval.protocol)."""

from __future__ import annotations

from recon_fast.eval.protocol import (DEFAULT_PROTOCOL, EVAL_SEED, check_protocol, check_voting,
                                      seeded)
from recon_fast.train.config import Config, ConfigError
from recon_fast.train.finetune import dataset_name, plain_batches, split_dataset
from recon_fast.train.loop import build_model_from_config
from recon_fast.train.runtime import Dist, Logger, RunOptions, autocast_context, resolve_device

# The model NAME each evaluation needs (the official cfgs/svm, cfgs/zeroshot, cfgs/full configs).
EVALUATION_MODELS = {"svm": "PointTransformerSVM", "zeroshot": "PointTransformerZeroShot",
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


def run_evaluation(method: str, config: Config, opts: RunOptions, *, ckpt: str,
                   protocol: str = DEFAULT_PROTOCOL, votes: int = 10, vote_rounds: int = 1) -> dict:
    """Evaluate `ckpt` with `method`; returns the metric, the protocol, the seeds and the size
    of every split read."""
    from recon_fast import ops
    from recon_fast.model import load_official_checkpoint

    if method not in EVALUATION_MODELS:
        raise ConfigError(f"unknown evaluation {method!r}; choose from {sorted(EVALUATION_MODELS)}")
    check_protocol(protocol)
    if method == "vote":
        check_voting(protocol, votes, vote_rounds)
    want = EVALUATION_MODELS[method]
    if config.model.get("NAME") != want:
        raise ConfigError(f"eval {method} needs a config whose model.NAME is {want!r} (as the "
                          f"official cfgs/{method if method != 'vote' else 'full'}/ files), got "
                          f"{config.model.get('NAME')!r}")
    device = resolve_device(opts.device)
    logger = Logger(opts.out_dir, Dist(), tensorboard=False, progress=opts.progress)
    model = build_model_from_config(config.model, opts).to(device)
    report = load_official_checkpoint(ckpt, model)
    logger.info(f"loaded {ckpt}: {report}")
    npoints = int(config.get("npoints", 1024))
    batch_size = int(config.get("total_bs", 32))
    sizes: dict[str, int] = {}
    try:
        with ops.checks(data=True):  # evaluation reads new data: validate it
            recomputed = _maybe_recompute_bn(config, opts, model, ckpt, npoints, batch_size,
                                             device, logger, sizes)
            with seeded(EVAL_SEED, device):
                result = _evaluate(method, protocol, config, opts, model, npoints, batch_size,
                                   device, logger, votes, vote_rounds, sizes)
            return {**result, "recompute_bn": recomputed, "protocol": protocol,
                    "seeds": {"run": opts.seed, "eval": EVAL_SEED}, "split_sizes": sizes}
    finally:
        logger.close()


def _split(config, split, opts, sizes: dict):
    """A dataset section, its size noted in `sizes` (what results.json records)."""
    dataset = split_dataset(config, split, opts)
    sizes["test" if split == "val" else split] = len(dataset)
    return dataset


def _maybe_recompute_bn(config, opts, model, ckpt, npoints, batch_size, device, logger,
                        sizes) -> bool:
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
    train = _split(config, "train", opts, sizes)
    layers = recompute_bn_statistics(model, plain_batches(train, batch_size, opts.workers),
                                     npoints, device)
    logger.info(f"[eval] BatchNorm statistics of {layers} layers recomputed on {len(train)} "
                f"train clouds (--recompute-bn {opts.recompute_bn})")
    return True


def _evaluate(method, protocol, config, opts, model, npoints, batch_size, device, logger, votes,
              vote_rounds, sizes) -> dict:
    if method == "svm":
        return {"svm_accuracy": _svm(config, opts, model, npoints, batch_size, device, logger,
                                     sizes)}
    if method == "zeroshot":
        return {"zero_shot_accuracy": _zeroshot(config, opts, model, npoints, batch_size,
                                                device, logger, protocol, sizes)}
    test = _split(config, "test" if "test" in config.dataset else "val", opts, sizes)
    autocast = lambda: autocast_context(opts.amp, device)  # noqa: E731
    if method == "accuracy":
        from recon_fast.eval.classification import accuracy

        acc = accuracy(model, plain_batches(test, batch_size, opts.workers), npoints, device,
                       autocast)
        logger.info(f"[eval] accuracy (plain FPS): {acc * 100:.2f}%")
        return {"accuracy": acc}
    from recon_fast.data import vote_augmentation
    from recon_fast.eval.classification import round_reporter, vote_accuracy

    best, rounds = vote_accuracy(model, lambda: plain_batches(test, batch_size, opts.workers),
                                 npoints, device, vote_augmentation(dataset_name(test)),
                                 votes=votes, rounds=vote_rounds, autocast=autocast,
                                 seed=EVAL_SEED,
                                 on_round=round_reporter(logger.info, "eval", vote_rounds, votes))
    how = (f"one pass, seed {EVAL_SEED}" if protocol == "strict" else
           f"best of {vote_rounds} rounds, seeds {EVAL_SEED}..{EVAL_SEED + vote_rounds - 1}")
    logger.info(f"[eval] voting accuracy ({votes} votes, {how}): {best * 100:.2f}%")
    return {"vote_accuracy": best, "rounds": rounds}


def _svm(config, opts, model, npoints, batch_size, device, logger, sizes) -> float:
    """Fit on train, score test once (both protocols: the reference selects nothing here)."""
    from recon_fast.eval.svm import extract_features, svm_accuracy

    train = _split(config, "train", opts, sizes)
    test = _split(config, "test" if "test" in config.dataset else "val", opts, sizes)
    features = [extract_features(model, plain_batches(ds, batch_size, opts.workers), npoints, device)
                for ds in (train, test)]
    acc = svm_accuracy(*features)
    logger.info(f"[eval] linear SVM accuracy: {acc * 100:.2f}%")
    return acc


def _zeroshot(config, opts, model, npoints, batch_size, device, logger, protocol, sizes) -> float:
    from recon_fast import teachers
    from recon_fast.eval.zeroshot import zero_shot_accuracy
    from recon_fast.train.teachers import _clip_name

    text_name = config.model.get("text_encoder", "ViT-B/32")
    teacher = teachers.build_text_teacher(_clip_name(text_name), opts.teacher_weights or "openai",
                                          seed=opts.seed, cache_dir=opts.cache_dir).to(device)
    # official: accuracy over train + test together, as the reference runner counts it;
    # strict: the test split only.
    wanted = ("train", "test") if protocol == "official" else ("test",)
    splits = [s for s in wanted if s in config.dataset]
    if not splits:
        raise ConfigError(f"eval zeroshot --protocol {protocol} needs a dataset.test section")
    datasets = [_split(config, s, opts, sizes) for s in splits]
    names = class_names_of(datasets[0])
    table = teachers.build_text_feature_table(teacher, names, opts.cache_dir, progress=logger.progress)
    correct_total = []
    for split, ds in zip(splits, datasets):
        # Each split's random subsets from its own seed: the test part is the same under both
        # protocols.
        with seeded(EVAL_SEED + (split != "test"), device):
            acc = zero_shot_accuracy(model, table.class_embeddings(),
                                     plain_batches(ds, batch_size, opts.workers), npoints, device)
        correct_total.append((acc * len(ds), len(ds)))
    acc = sum(c for c, _ in correct_total) / max(sum(n for _, n in correct_total), 1)
    logger.info(f"[eval] zero-shot accuracy: {acc * 100:.2f}% over {len(names)} classes, "
                f"{' + '.join(splits)} ({sum(len(d) for d in datasets)} clouds, --protocol "
                f"{protocol})")
    return acc
