"""Command line entry point: ``recon-fast <command> ...``."""

from __future__ import annotations

import argparse
import sys
import time


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recon-fast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
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


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
