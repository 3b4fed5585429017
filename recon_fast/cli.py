"""recon-fast: pretrain, finetune and evaluate ReCon from the command line.

Configs are the official ReCon YAML files (cfgs/pretrain/base.yaml, cfgs/full/
finetune_scan_hardest.yaml, ...) or the presets shipped with recon_fast (`recon-fast presets`),
changed with `--set key.path=value`. Examples:

  recon-fast pretrain --config embedded --teacher-weights random
  recon-fast pretrain --config cfgs/pretrain/base.yaml --data-root /data --teacher-weights ~/.cache/clip/ViT-B-32.pt
  recon-fast finetune --config cfgs/full/finetune_scan_hardest.yaml --init-ckpt runs/pretrain/ckpt-last.pth
  torchrun --nproc-per-node 8 -m recon_fast.cli pretrain --config cfgs/pretrain/base.yaml ...
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from recon_fast.attention import BACKENDS
from recon_fast.errors import InputError, ReconFastError
from recon_fast.eval.protocol import (DEFAULT_PROTOCOL, OFFICIAL_VOTE_ROUNDS, PROTOCOLS,
                                      default_vote_rounds)
from recon_fast.train.evaluate import EVALUATION_MODELS
from recon_fast.train.runtime import AMP_CHOICES, IMAGE_TEACHER_MODES


def _add_run_options(p: argparse.ArgumentParser, default_out: str) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--config", required=True,
                   help="official YAML config file, or a preset name (see `recon-fast presets`)")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set total_bs=64 --set "
                        "model.transformer_config.depth=4 (repeatable)")
    g.add_argument("--out", default=default_out,
                   help=f"run folder: checkpoints, log.txt, config.yaml, TensorBoard (default {default_out})")
    g.add_argument("--resume", action="store_true",
                   help="continue from <out>/ckpt-last.pth (exactly where it stopped); the "
                        "config must be the run's, except epochs and validation frequency")
    g.add_argument("--overwrite", action="store_true",
                   help="start over in an --out that holds a run (refused without this or "
                        "--resume); its checkpoints are kept as *.previous.pth until the new "
                        "run writes one")
    g.add_argument("--init-ckpt", help="start from the weights of this checkpoint (official or ours)")
    g.add_argument("--epochs", type=int,
                   help="train for N epochs (sets max_epoch=N-1 and scales the cosine schedule)")
    g.add_argument("--max-steps", type=int, help="stop after N optimizer steps (smoke runs)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--checkpoint-every", type=int, default=0,
                   help="also save ckpt-last.pth every N steps (default: at each epoch end)")
    g.add_argument("--log-every", type=int, default=20, help="log losses every N steps (default 20)")
    h = p.add_argument_group("hardware")
    h.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1 ...")
    h.add_argument("--amp", default="auto", choices=AMP_CHOICES,
                   help="mixed precision: auto = bf16 on CUDA, fp32 on the CPU")
    h.add_argument("--compile", action="store_true", help="torch.compile the model")
    h.add_argument("--attention-backend", choices=BACKENDS,
                   help="attention implementation (default: the config's, else auto)")
    h.add_argument("--workers", type=int,
                   help="DataLoader worker processes (default: this machine's cores - 1, at most "
                        "8; 0 loads in the main process)")
    h.add_argument("--validate-data", action="store_true",
                   help="keep the point ops' NaN/range checks on inside training steps (slower on CUDA)")
    d = p.add_argument_group("data and teachers")
    d.add_argument("--data-root", default=".",
                   help="folder the config's relative dataset paths (data/...) start from")
    d.add_argument("--cache-dir", help="embedded set + teacher feature caches "
                                       "(default $RECON_FAST_CACHE or ~/.cache/recon_fast)")
    o = p.add_argument_group("output")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    o.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard scalars")


def _add_teacher_options(p: argparse.ArgumentParser, image: bool) -> None:
    """The CLIP teachers: pretraining distils from both, zero-shot evaluation uses the text one;
    finetuning uses neither, so its help does not list them."""
    d = p.add_argument_group("teachers")
    d.add_argument("--teacher-weights",
                   help="CLIP teacher weights: a file (e.g. ~/.cache/clip/ViT-B-32.pt), or 'random' "
                        "for a smoke run (features are meaningless); default: look in local caches")
    if not image:
        return
    d.add_argument("--image-teacher-weights",
                   help="timm ViT image teacher weights file (default: timm's local cache)")
    d.add_argument("--image-teacher", default="cache", choices=IMAGE_TEACHER_MODES,
                   help="image targets: cached centre-view features (fast), the online teacher on "
                        "augmented renders (official), or no image distillation")


def _add_packed_data_options(p: argparse.ArgumentParser) -> None:
    """Pretraining only: finetuning and evaluation read their datasets from the config."""
    d = p.add_argument_group("packed data")
    d.add_argument("--data", metavar="packed:DIR",
                   help="pretrain from shards written by `recon-fast pack` (their cached teacher "
                        "features replace the teachers; the config's dataset.train is not read)")
    d.add_argument("--skip-bad-shards", action="store_true",
                   help="--data packed:DIR: check every shard at start and leave out (and list) "
                        "those that fail, instead of stopping")


# Run options that only training uses: `eval --help` does not list them, and eval refuses them.
TRAINING_ONLY = ("resume", "overwrite", "init_ckpt", "epochs", "max_steps", "checkpoint_every",
                 "log_every", "validate_data", "image_teacher_weights", "image_teacher", "data",
                 "skip_bad_shards")


def _hide_training_options(p: argparse.ArgumentParser) -> None:
    for action in p._actions:
        if action.dest in TRAINING_ONLY:
            action.help = argparse.SUPPRESS


def _refuse_training_options(args: argparse.Namespace, parser_defaults: dict) -> None:
    from recon_fast.errors import InputError

    for dest in TRAINING_ONLY:
        if dest in parser_defaults and getattr(args, dest, None) != parser_defaults[dest]:
            flag = "--" + dest.replace("_", "-")
            raise InputError(f"{flag} is a training option; `recon-fast eval` does not use it")


def _add_recompute_bn(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recompute-bn", default="auto", choices=["auto", "on", "off"],
                   help="recompute BatchNorm statistics on the train clouds before each "
                        "measurement (validation, voting, eval): short runs have not settled "
                        "them. auto (default): on for runs (or checkpoints) of fewer than 1000 "
                        "steps, off for official checkpoints")


def _add_protocol(p: argparse.ArgumentParser) -> None:
    p.add_argument("--protocol", default=DEFAULT_PROTOCOL, choices=PROTOCOLS,
                   help="strict (default): the test split measured once, deterministically, by "
                        "a model chosen without it (epoch chosen on a validation split carved "
                        "from train; one voting pass; zero-shot on test only; few-shot: last "
                        "epoch). official: the reference code's numbers (best test accuracy "
                        "over epochs, best of the voting rounds, zero-shot over train + test)")


def _report(args: argparse.Namespace, config, summary: dict, started: float, *,
            samples=None, checkpoint=None) -> None:
    """The end-of-run summary lines and <out>/results.json, then the summary as one JSON line."""
    from recon_fast.train.results import report_run

    command = args.command + (f" {args.evaluation}" if args.command == "eval" else "")
    report_run(command, args.config, config, args.out, {**summary, "seed": args.seed},
               started=started, samples=samples, checkpoint=checkpoint,
               init_checkpoint=getattr(args, "init_ckpt", None))
    print(json.dumps({k: v for k, v in summary.items() if k != "losses"}), flush=True)


def _options(args: argparse.Namespace):
    from recon_fast.train.runtime import RunOptions, default_workers

    return RunOptions(
        out_dir=args.out, device=args.device, amp=args.amp, compile=args.compile,
        attention_backend=args.attention_backend, seed=args.seed,
        workers=default_workers() if args.workers is None else args.workers,
        resume=args.resume, overwrite=args.overwrite, init_ckpt=args.init_ckpt,
        epochs=args.epochs, max_steps=args.max_steps,
        checkpoint_every=args.checkpoint_every, log_every=args.log_every, data_root=args.data_root,
        cache_dir=args.cache_dir, teacher_weights=getattr(args, "teacher_weights", None),
        image_teacher_weights=getattr(args, "image_teacher_weights", None),
        image_teacher=getattr(args, "image_teacher", "cache"),
        progress=not args.no_progress, tensorboard=not args.no_tensorboard,
        validate_data=args.validate_data, data=getattr(args, "data", None),
        skip_bad_shards=getattr(args, "skip_bad_shards", False),
        recompute_bn=getattr(args, "recompute_bn", "auto"))


def _load(args: argparse.Namespace):
    from recon_fast.train.config import load_config

    return load_config(args.config, args.overrides)


def _pretrain(args: argparse.Namespace) -> int:
    from recon_fast.train.pretrain import run_pretrain

    started, config = time.perf_counter(), _load(args)
    summary = run_pretrain(config, _options(args))
    _report(args, config, summary, started,
            samples=summary["global_step"] * int(config.total_bs))
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from recon_fast.train.finetune import run_finetune

    started, config = time.perf_counter(), _load(args)
    summary = run_finetune(config, _options(args), protocol=args.protocol,
                           vote_rounds=args.vote_rounds, votes=args.votes)
    _report(args, config, summary, started,
            samples=summary["global_step"] * int(config.total_bs))
    return 0


def _fewshot(args: argparse.Namespace) -> int:
    """One finetune per fold. official: each fold's best test accuracy over epochs (as the
    reference reports a fold); strict: each fold's last epoch, tested once."""
    from recon_fast.eval.fewshot import summarize_folds
    from recon_fast.train.finetune import run_finetune
    from recon_fast.train.results import sha256_of

    started = time.perf_counter()
    folds = _parse_folds(args.folds)
    accs, per_fold = [], {}
    for fold in folds:
        overrides = args.overrides + [f"dataset.{s}.others.{k}={v}" for s in ("train", "val")
                                      for k, v in (("way", args.way), ("shot", args.shot), ("fold", fold))]
        from recon_fast.train.config import load_config

        opts = _options(args)
        opts.out_dir = f"{args.out}/fold{fold}"
        config = load_config(args.config, overrides)
        _check_head_fits_episode(config, args.way)
        summary = run_finetune(config, opts, protocol=args.protocol, vote_rounds=0,
                               select_on="last")
        key = "test_accuracy" if args.protocol == "strict" else "best"
        accs.append(summary.get(key) or 0.0)
        measured = os.path.join(opts.out_dir, "ckpt-best.pth" if key == "best" else "ckpt-last.pth")
        per_fold[str(fold)] = {"accuracy": accs[-1], "split_sizes": summary["split_sizes"],
                               "epoch_metrics": summary["epoch_metrics"],
                               "checkpoint_sha256": sha256_of(measured)}
        print(f"[few-shot] {args.way}-way {args.shot}-shot fold {fold}: {accs[-1] * 100:.2f}%", flush=True)
    mean, std = summarize_folds(accs)
    print(f"[few-shot] {args.way}-way {args.shot}-shot over {len(accs)} folds: {mean:.2f} +- "
          f"{std:.2f} (--protocol {args.protocol})", flush=True)
    _report(args, load_config(args.config, overrides), {
        "fewshot_mean_percent": mean, "fewshot_std_percent": std, "protocol": args.protocol,
        "seeds": summary["seeds"], "split_sizes": summary["split_sizes"],
        "folds": per_fold, "way": args.way, "shot": args.shot},
        started, checkpoint=None)
    return 0


def _check_head_fits_episode(config, way: int) -> None:
    """Episode labels are 0..way-1; the head keeps model.cls_dim outputs (the official few-shot
    head keeps 40), so it needs at least `way` of them."""
    from recon_fast.errors import ConfigError

    classes = int(config.model.get("cls_dim", way))
    if classes < way:
        raise ConfigError(f"--way {way} needs model.cls_dim >= {way}; the config's head has "
                          f"{classes} outputs")


def _parse_folds(text: str) -> list[int]:
    """'0-9' or '0,3,5' (or a mix) as a list of fold numbers; InputError naming --folds otherwise."""
    folds = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, dash, hi = part.partition("-")
        well_formed = lo.isdigit() and (hi.isdigit() if dash else True)
        if not well_formed or (dash and int(hi) < int(lo)):
            raise InputError(f"--folds {text!r}: {part!r} is not a fold number or a range lo-hi "
                             "(e.g. 0-9 or 0,3,5)")
        folds += list(range(int(lo), int(hi or lo) + 1))
    if not folds:
        raise InputError(f"--folds {text!r} names no fold")
    return folds


def _eval(args: argparse.Namespace) -> int:
    from recon_fast.train.evaluate import run_evaluation

    _refuse_training_options(args, args.training_defaults)
    started, config = time.perf_counter(), _load(args)
    result = run_evaluation(args.evaluation, config, _options(args), ckpt=args.ckpt,
                            protocol=args.protocol, votes=args.votes,
                            vote_rounds=args.vote_rounds if args.vote_rounds is not None
                            else default_vote_rounds(args.protocol))
    _report(args, config, result, started, checkpoint=args.ckpt)
    return 0


def _report_command(args: argparse.Namespace) -> int:
    from recon_fast.train.report import aggregate, read_runs, to_markdown

    rows = aggregate(read_runs(args.runs))
    markdown = to_markdown(rows)
    print(markdown, end="", flush=True)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(markdown)
        with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
            json.dump(rows, f, indent=2)
    return 0


def _visualize(args: argparse.Namespace) -> int:
    from recon_fast.visualize import visualize

    for path in visualize(args.target, config_name=args.config, overrides=args.overrides,
                          clouds=args.clouds, point_files=args.points, out_dir=args.out,
                          seed=args.seed, device=args.device, data_root=args.data_root,
                          cache_dir=args.cache_dir):
        print(path, flush=True)
    return 0


def _presets(args: argparse.Namespace) -> int:
    from recon_fast.train.config import PRESET_DIR, list_presets

    for name in list_presets():
        print(name)
    print(f"(in {PRESET_DIR})")
    return 0


def _demo(args: argparse.Namespace) -> int:
    import torch

    import recon_fast
    from recon_fast import ops

    device = torch.device(args.device)
    info = recon_fast.build_info()
    print(f"recon_fast {recon_fast.__version__} | torch {torch.__version__} | extension: "
          f"cuda={info['cuda']} openmp={info['openmp']} simd={info['cpu_simd']} | device {device}")
    xyz = torch.rand(args.batch, args.points, 3, device=device) * 2 - 1
    start = time.perf_counter()
    neighborhood, center = ops.group(xyz, args.num_group, args.group_size)
    pred = neighborhood + 0.01 * torch.randn_like(neighborhood)
    loss = ops.chamfer_distance(pred.reshape(-1, args.group_size, 3),
                                neighborhood.reshape(-1, args.group_size, 3))
    if device.type == "cuda":
        torch.cuda.synchronize()
    took = (time.perf_counter() - start) * 1e3
    print(f"grouped {args.batch} clouds of {args.points} points into {args.num_group} patches of "
          f"{args.group_size}: neighborhood {tuple(neighborhood.shape)}, center "
          f"{tuple(center.shape)}; Chamfer-L2 of a perturbed copy = {loss.item():.3e} "
          f"({took:.1f} ms)")
    return 0


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recon-fast", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("pretrain", help="ReCon pretraining (reconstruction + distillation)")
    _add_run_options(p, "runs/pretrain")
    _add_teacher_options(p, image=True)
    _add_packed_data_options(p)
    p.set_defaults(func=_pretrain)

    f = sub.add_parser("finetune", help="classification finetuning with validation and voting")
    _add_run_options(f, "runs/finetune")
    f.add_argument("--votes", type=int, default=10, help="votes per test round (default 10)")
    f.add_argument("--vote-rounds", type=int, default=1,
                   help="voting rounds on the test set with the best checkpoint; the best round "
                        "is reported (more than 1 with --protocol official only; the "
                        f"reference's test mode runs {OFFICIAL_VOTE_ROUNDS}: `recon-fast eval "
                        "vote --protocol official` does so by default); 0 skips voting "
                        "(default 1)")
    _add_protocol(f)
    _add_recompute_bn(f)
    f.set_defaults(func=_finetune)

    s = sub.add_parser("fewshot", help="n-way k-shot finetuning over folds, mean +- std")
    _add_run_options(s, "runs/fewshot")
    s.add_argument("--way", type=int, required=True, help="classes per episode (5 or 10)")
    s.add_argument("--shot", type=int, required=True, help="training shapes per class (10 or 20)")
    s.add_argument("--folds", default="0-9", help="folds to run, e.g. 0-9 or 0,3,5 (default 0-9)")
    _add_protocol(s)
    _add_recompute_bn(s)
    s.set_defaults(func=_fewshot)

    e = sub.add_parser("eval", help="evaluate a checkpoint: svm, zeroshot, vote or accuracy")
    e.add_argument("evaluation", choices=sorted(EVALUATION_MODELS),
                   help="svm: linear SVM on frozen features; zeroshot: CLIP prompts; vote: "
                        "test-time voting; accuracy: plain-FPS accuracy")
    e.add_argument("--ckpt", required=True, help="checkpoint to evaluate")
    e.add_argument("--votes", type=int, default=10, help="votes per round (vote)")
    e.add_argument("--vote-rounds", type=int, default=None,
                   help="voting rounds, the best reported (vote; more than 1 with --protocol "
                        f"official only; default: {OFFICIAL_VOTE_ROUNDS} under official, as the "
                        "reference's test mode, 1 under strict)")
    _add_protocol(e)
    _add_run_options(e, "runs/eval")
    _add_teacher_options(e, image=False)
    _hide_training_options(e)
    _add_recompute_bn(e)
    e.set_defaults(func=_eval, training_defaults={a.dest: a.default for a in e._actions
                                                  if a.dest in TRAINING_ONLY})

    from recon_fast.cli_pack import add_pack_parser

    add_pack_parser(sub)

    rp = sub.add_parser("report", help="aggregate runs (seeds) into mean +- std per metric, "
                                       "next to the published numbers (Markdown + JSON)")
    rp.add_argument("runs", nargs="+", help="run folders (each with its results.json)")
    rp.add_argument("--out", help="also write the table to this .md file and the rows to the "
                                  "matching .json")
    rp.set_defaults(func=_report_command)

    v = sub.add_parser("visualize", help="pictures: masked-patch reconstructions of a "
                                         "checkpoint and a run's training curves (PNG)")
    v.add_argument("target", metavar="CHECKPOINT_OR_RUN_DIR",
                   help="a pretraining checkpoint, or a run folder (its log's curves and its "
                        "ckpt-last.pth's reconstructions)")
    v.add_argument("--config", help="the config the checkpoint was trained with (default: the "
                                    "run folder's config.yaml, else the one in the checkpoint)")
    v.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable)")
    v.add_argument("--clouds", type=int, default=4,
                   help="clouds of the config's training set to draw (default 4)")
    v.add_argument("--points", action="append", default=[], metavar="FILE",
                   help="draw this cloud (.npy, or .txt with x y z columns) instead (repeatable)")
    v.add_argument("--out", help="folder for the PNGs (default: <run folder or checkpoint's "
                                 "folder>/pictures)")
    v.add_argument("--seed", type=int, default=0, help="seed of the masks (default 0)")
    v.add_argument("--device", default="cpu", help="torch device (default cpu)")
    v.add_argument("--data-root", default=".",
                   help="folder the config's relative dataset paths (data/...) start from")
    v.add_argument("--cache-dir", help="embedded set cache (default $RECON_FAST_CACHE or "
                                       "~/.cache/recon_fast)")
    v.set_defaults(func=_visualize)

    pr = sub.add_parser("presets", help="list the configs shipped with recon_fast")
    pr.set_defaults(func=_presets)

    demo = sub.add_parser("demo", help="group random clouds and compute a Chamfer loss with the "
                                       "compiled ops (a smoke test of the install)")
    demo.add_argument("--batch", type=int, default=32, help="clouds per batch (default 32)")
    demo.add_argument("--points", type=int, default=1024, help="points per cloud (default 1024)")
    demo.add_argument("--num-group", type=int, default=64, help="patches per cloud (default 64)")
    demo.add_argument("--group-size", type=int, default=32, help="points per patch (default 32)")
    demo.add_argument("--device", default="cuda" if _cuda_available() else "cpu",
                      help="torch device (default: cuda when available)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. A user's mistake (any ReconFastError) prints one line naming the
    argument, file or flag and returns 2; anything else is a bug and keeps its traceback."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ReconFastError as err:
        print(f"recon-fast {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
