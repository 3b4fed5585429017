"""recon_fast.compat.install(): the original import lines resolve to the shims. Each case runs in
a fresh interpreter so this test session's sys.modules is never aliased."""

import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300, env=env, cwd=REPO)


def _ok(code: str) -> str:
    done = _run(code)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_off_by_default():
    out = _ok("""
        import importlib.util, recon_fast.compat
        print([importlib.util.find_spec(n) is None
               for n in ("pointnet2_ops", "knn_cuda", "torch_cluster", "pytorch3d")])
    """)
    assert out.strip() == "[True, True, True, True]"


def test_install_aliases_every_original_import_line():
    out = _ok("""
        import recon_fast.compat
        print(sorted(recon_fast.compat.install()))
        import torch
        from pointnet2_ops import pointnet2_utils
        from pointnet2_ops.pointnet2_modules import PointnetSAModule
        import pointnet2_ops.pointnet2_utils as pu
        from knn_cuda import KNN
        import torch_cluster
        from torch_cluster import knn_graph, radius_graph
        from pytorch3d.ops import knn_points, ball_query, sample_farthest_points
        from pytorch3d.loss import chamfer_distance
        from recon_fast.compat import pointnet2_ops as shim, pytorch3d_ops
        assert pu is pointnet2_utils is shim.pointnet2_utils
        assert knn_points is pytorch3d_ops.knn_points
        assert torch_cluster is recon_fast.compat.torch_cluster
        import importlib.util
        assert importlib.util.find_spec("torch_cluster") is not None
        x = torch.rand(2, 64, 3)
        _, idx = KNN(k=4, transpose_mode=True)(x, x[:, :8])
        print(tuple(idx.shape), tuple(knn_points(x, x, K=2).idx.shape))
        sa = PointnetSAModule(mlp=[0, 16], npoint=8, radius=0.3, nsample=4)
        print(tuple(sa(x, None)[1].shape))
        recon_fast.compat.uninstall()
        import sys
        print("knn_cuda" in sys.modules, "pytorch3d.ops" in sys.modules)
    """)
    assert out.split("\n")[:4] == [
        "['knn_cuda', 'pointnet2_ops', 'pytorch3d', 'torch_cluster']",
        "(2, 8, 4) (2, 64, 2)", "(2, 16, 8)", "False False"]


def test_install_selected_names_and_unknown_name():
    out = _ok("""
        import recon_fast.compat, importlib.util
        print(recon_fast.compat.install("knn_cuda"))
        print(importlib.util.find_spec("torch_cluster") is None)
        try:
            recon_fast.compat.install("pytorch4d")
        except ValueError as error:
            print("ValueError", "pytorch4d" in str(error))
    """)
    assert out.split("\n")[:3] == ["['knn_cuda']", "True", "ValueError True"]


@pytest.mark.parametrize("replace", [False, True])
def test_a_really_installed_package_is_left_alone_unless_replace(tmp_path, replace):
    (tmp_path / "knn_cuda").mkdir()
    (tmp_path / "knn_cuda" / "__init__.py").write_text("ORIGINAL = True\n")
    out = _ok(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import recon_fast.compat
        print(recon_fast.compat.install("knn_cuda", replace={replace}))
        import knn_cuda
        print(hasattr(knn_cuda, "ORIGINAL"))
    """)
    assert out.split("\n")[:2] == (["['knn_cuda']", "False"] if replace else ["[]", "True"])
