"""Drop-in replacements for the point-cloud extensions that ReCon-era code imports.

Change only the import line; the calls stay the same::

    # from pointnet2_ops import pointnet2_utils, pointnet2_modules
    from recon_fast.compat.pointnet2_ops import pointnet2_utils, pointnet2_modules

    # from knn_cuda import KNN
    from recon_fast.compat.knn_cuda import KNN

    # from torch_cluster import fps, knn, knn_graph, radius, radius_graph
    from recon_fast.compat.torch_cluster import fps, knn, knn_graph, radius, radius_graph

    # from pytorch3d.ops import knn_points, knn_gather, ball_query, sample_farthest_points
    # from pytorch3d.loss import chamfer_distance
    from recon_fast.compat.pytorch3d_ops import (
        ball_query, chamfer_distance, knn_gather, knn_points, sample_farthest_points)

    # from extensions.chamfer_dist import ChamferDistanceL1, ChamferDistanceL2
    from recon_fast.compat.chamfer_dist import ChamferDistanceL1, ChamferDistanceL2

Or change nothing at all: :func:`install` (off by default) makes the original import lines
resolve to these modules. Each module's docstring lists what it provides and where it differs
from the original. All are thin wrappers over :mod:`recon_fast.ops`, so they run on the CPU and
on CUDA, in any float dtype.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

from recon_fast.compat import chamfer_dist, knn_cuda, pytorch3d_ops, torch_cluster
from recon_fast.compat.pointnet2_ops import pointnet2_modules, pointnet2_utils

ALIASES = ("pointnet2_ops", "knn_cuda", "torch_cluster", "pytorch3d")
_installed: dict[str, types.ModuleType] = {}


def _module(name: str, doc: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name, doc)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)  # find_spec() works on it
    for key, value in attributes.items():
        setattr(module, key, value)
    return module


def _alias_modules(name: str) -> dict[str, types.ModuleType]:
    """sys.modules entries that make `import <name>` (and its submodules) resolve to a shim."""
    if name == "pointnet2_ops":
        top = _module("pointnet2_ops", "recon_fast.compat.pointnet2_ops under its original name.",
                      pointnet2_utils=pointnet2_utils, pointnet2_modules=pointnet2_modules)
        return {"pointnet2_ops": top, "pointnet2_ops.pointnet2_utils": pointnet2_utils,
                "pointnet2_ops.pointnet2_modules": pointnet2_modules}
    if name == "knn_cuda":
        return {"knn_cuda": knn_cuda}
    if name == "torch_cluster":
        return {"torch_cluster": torch_cluster}
    if name == "pytorch3d":
        ops = _module("pytorch3d.ops", "recon_fast.compat.pytorch3d_ops' point ops.",
                      knn_points=pytorch3d_ops.knn_points, knn_gather=pytorch3d_ops.knn_gather,
                      ball_query=pytorch3d_ops.ball_query,
                      sample_farthest_points=pytorch3d_ops.sample_farthest_points)
        loss = _module("pytorch3d.loss", "recon_fast.compat.pytorch3d_ops' Chamfer loss.",
                       chamfer_distance=pytorch3d_ops.chamfer_distance)
        top = _module("pytorch3d", "Only pytorch3d.ops and pytorch3d.loss, from recon_fast.",
                      ops=ops, loss=loss)
        return {"pytorch3d": top, "pytorch3d.ops": ops, "pytorch3d.loss": loss}
    raise ValueError(f"install() knows the aliases {', '.join(ALIASES)}; got {name!r}")


def _really_installed(name: str) -> bool:
    """Whether the original package can be imported (and is not one of our aliases)."""
    if name in sys.modules:
        return name not in _installed
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def install(*names: str, replace: bool = False) -> list[str]:
    """Make the original import lines resolve to the shims, with no edit to the code using them.

        import recon_fast.compat
        recon_fast.compat.install()          # or install("knn_cuda", "pointnet2_ops")
        from knn_cuda import KNN             # -> recon_fast.compat.knn_cuda.KNN
        from pytorch3d.ops import knn_points  # -> recon_fast.compat.pytorch3d_ops.knn_points

    Args:
        names: which of "pointnet2_ops", "knn_cuda", "torch_cluster", "pytorch3d" to alias
            (default: all).
        replace: also shadow a package that is really installed (default: leave it alone).

    Returns:
        The names aliased by this call.

    Risks (why it is off by default): it writes ``sys.modules``, so it affects every later
    import in the process, including libraries that probe for these packages (PyG, for
    instance, then believes torch_cluster is present). The ``pytorch3d`` alias holds only
    ``pytorch3d.ops`` (knn_points, knn_gather, ball_query, sample_farthest_points) and
    ``pytorch3d.loss`` (chamfer_distance): anything else of pytorch3d fails at its lookup.
    Modules that imported the originals before the call keep them; call ``install`` before
    importing the code that uses them. :func:`uninstall` undoes it.
    """
    chosen = names or ALIASES
    done = []
    for name in chosen:
        modules = _alias_modules(name)
        if _really_installed(name) and not replace:
            continue
        for key, module in modules.items():
            sys.modules[key] = module
            _installed[key] = module
        done.append(name)
    return done


def uninstall() -> None:
    """Remove every alias :func:`install` added (the shims stay importable under recon_fast)."""
    for key, module in list(_installed.items()):
        if sys.modules.get(key) is module:
            del sys.modules[key]
        del _installed[key]


__all__ = ["pointnet2_utils", "pointnet2_modules", "knn_cuda", "torch_cluster", "pytorch3d_ops",
           "chamfer_dist", "install", "uninstall", "ALIASES"]
