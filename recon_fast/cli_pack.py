"""`recon-fast pack`: convert a dataset into packed shards (see recon_fast.data.packed).

  recon-fast pack --source shapenet:data/ShapeNet55-34 --out packs/shapenet55 \\
      --text-teacher ViT-B/32 --image-teacher ViT-B/32 --teacher-weights ~/.cache/clip/ViT-B-32.pt
  recon-fast pack --source openshape:/data/openshape --out packs/openshape --rgb --workers 16
  recon-fast pack --verify packs/openshape
"""

from __future__ import annotations

import argparse
import json


def add_pack_parser(sub) -> None:
    p = sub.add_parser("pack", help="convert a dataset into packed shards with teacher features",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", help="shapenet:<ShapeNet55-34 folder> or openshape:<folder>")
    p.add_argument("--out", help="pack folder (a killed pack continues when run again)")
    p.add_argument("--verify", metavar="DIR",
                   help="check every shard of the pack in DIR (all checksums) and list bad ones")
    p.add_argument("--points", type=int, default=8192,
                   help="points per stored cloud (default 8192)")
    p.add_argument("--xyz-dtype", default="float16", choices=["float16", "float32"],
                   help="stored coordinate type (default float16)")
    p.add_argument("--feature-dtype", default="float16", choices=["float16", "float32"],
                   help="stored teacher-feature type (default float16)")
    p.add_argument("--rgb", action="store_true", help="store per-point colour (OpenShape)")
    p.add_argument("--shard-size", type=int, default=1024, help="shapes per shard (default 1024)")
    p.add_argument("--image-slots", type=int, default=13,
                   help="image features kept per shape (default 13: thumbnail + 12 views)")
    p.add_argument("--text-slots", type=int, default=8,
                   help="text features kept per shape (default 8)")
    p.add_argument("--seed", type=int, default=0,
                   help="picks the points kept from larger clouds (default 0)")
    p.add_argument("--workers", type=int, default=1, help="parallel shard writers (default 1)")
    p.add_argument("--subset", default="train", help="ShapeNet list (default train)")
    p.add_argument("--no-whole", action="store_true",
                   help="ShapeNet: only the --subset list (default: test + train, as pretraining)")
    t = p.add_argument_group("teachers (ShapeNet: features computed at pack time)")
    t.add_argument("--text-teacher", help="CLIP text teacher, e.g. ViT-B/32 (text prompt table)")
    t.add_argument("--image-teacher",
                   help="image teacher: CLIP ViT-B/32 or vit_base_patch16_224_in21k")
    t.add_argument("--teacher-weights", help="CLIP weights file, or 'random' for smoke runs")
    t.add_argument("--image-teacher-weights", help="timm ViT weights file")
    t.add_argument("--device", default="cpu", help="device the teachers run on (default cpu)")
    t.add_argument("--cache-dir", help="teacher weight and feature caches")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_pack)


def run_pack(args: argparse.Namespace) -> int:
    """Pack, or (--verify) check a pack; a mistake is a ReconFastError that `recon-fast` prints
    in one line (exit 2)."""
    from recon_fast.data.packed import PackSettings, Teachers, pack, verify_pack
    from recon_fast.errors import InputError

    if args.verify:
        bad = verify_pack(args.verify)
        print(json.dumps({"pack": args.verify, "bad_shards": [dict(file=f, problem=p)
                                                              for f, p in bad]}), flush=True)
        return 1 if bad else 0
    if not args.source or not args.out:
        raise InputError("recon-fast pack needs --source and --out (or --verify DIR)")
    settings = PackSettings(points=args.points, xyz_dtype=args.xyz_dtype, rgb=args.rgb,
                            shard_size=args.shard_size, feature_dtype=args.feature_dtype,
                            image_slots=args.image_slots, text_slots=args.text_slots,
                            seed=args.seed)
    teachers = Teachers(args.text_teacher, args.image_teacher, args.teacher_weights,
                        args.image_teacher_weights, args.device, args.cache_dir)
    index = pack(args.source, args.out, settings, teachers=teachers, workers=args.workers,
                 progress=not args.no_progress, subset=args.subset, whole=not args.no_whole)
    print(json.dumps({"out": args.out, "count": index["count"], "shards": len(index["shards"]),
                      "image_dim": index["image_dim"], "text_dim": index["text_dim"]}), flush=True)
    return 0
