"""Farthest point sampling vs the plain-PyTorch reference (tests/reference.py)."""

import pytest
import torch

from conftest import ALL_DTYPES
from reference import fps_reference
from recon_fast import ops


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("N,m", [(1, 1), (2, 2), (7, 3), (64, 64), (1000, 37), (9000, 200)])
def test_fps_matches_reference(device, dtype, N, m):
    xyz = torch.randn(3, N, 3, dtype=torch.float64).to(dtype)
    got = ops.fps(xyz.to(device), m)
    assert got.dtype == torch.int64 and got.shape == (3, m)
    assert torch.equal(got.cpu(), fps_reference(xyz, m))


@pytest.mark.parametrize("N", [300, 12000])  # brute force and kd-tree paths
def test_fps_ties_go_to_lowest_index(device, N):
    # Integer grid: many exactly equal distances.
    xyz = torch.randint(0, 4, (2, N, 3)).float()
    assert torch.equal(ops.fps(xyz.to(device), 100).cpu(), fps_reference(xyz, 100))


def test_fps_identical_points(device):
    xyz = torch.ones(2, 10, 3)
    # After the first sample every running distance is 0: ties -> index 0 each time.
    assert torch.equal(ops.fps(xyz.to(device), 4).cpu(), torch.zeros(2, 4, dtype=torch.long))


def test_fps_spreads_points_out(device):
    # Two far clusters: the second sample must come from the other cluster.
    a = torch.rand(1, 50, 3) * 0.01
    xyz = torch.cat([a, a + 10.0], dim=1)
    idx = ops.fps(xyz.to(device), 2).cpu()
    assert idx[0, 0] == 0 and idx[0, 1] >= 50


def test_fps_m_equals_n_visits_every_point(device):
    xyz = torch.rand(2, 33, 3)
    idx = ops.fps(xyz.to(device), 33).cpu()
    for row in idx:
        assert sorted(row.tolist()) == list(range(33))


@pytest.mark.parametrize("N", [40, 10000])
def test_fps_ragged_lengths(device, N):
    xyz = torch.rand(4, N, 3)
    lengths = torch.tensor([N, N // 2, 1, 0])
    got = ops.fps(xyz.to(device), 20, lengths.to(device)).cpu()
    assert torch.equal(got, fps_reference(xyz, 20, lengths))
    assert (got[2, 1:] == -1).all() and (got[3] == -1).all()
    assert (got[1] < N // 2).all()


def test_fps_start_index_and_random_start(device):
    xyz = torch.rand(3, 500, 3)
    start = torch.tensor([5, 0, 499])
    got = ops.fps(xyz.to(device), 30, start_idx=start.to(device)).cpu()
    assert torch.equal(got, fps_reference(xyz, 30, start_idx=start))
    lengths = torch.tensor([500, 10, 1])
    starts = ops.fps(xyz.to(device), 1, lengths.to(device), random_start=True).cpu()[:, 0]
    assert (starts >= 0).all() and (starts < lengths).all()
    firsts = {int(ops.fps(xyz.to(device), 1, random_start=True)[0, 0]) for _ in range(20)}
    assert len(firsts) > 1, "random_start always picked the same point"


@pytest.mark.parametrize("N", [200, 9000])
def test_fps_pointnet2_skips_points_near_origin(device, N):
    xyz = torch.rand(2, N, 3) * 2 - 1
    xyz[:, 1::7] *= 1e-3  # many points within |p|^2 <= 1e-3
    got = ops.fps(xyz.to(device), 64, min_norm_sq=ops.POINTNET2_MIN_NORM_SQ).cpu()
    assert torch.equal(got, fps_reference(xyz, 64, min_norm_sq=1e-3))
    norms = (xyz ** 2).sum(-1)
    chosen = torch.gather(norms, 1, got[:, 1:])
    assert (chosen > 1e-3).all()


def test_fps_non_contiguous_input(device):
    base = torch.rand(2, 3, 257)
    xyz = base.transpose(1, 2)  # (2, 257, 3), not contiguous
    assert not xyz.is_contiguous()
    assert torch.equal(ops.fps(xyz.to(device), 16).cpu(), fps_reference(xyz.contiguous(), 16))


def test_fps_empty_shapes(device):
    assert ops.fps(torch.rand(0, 5, 3, device=device), 3).shape == (0, 3)
    assert ops.fps(torch.rand(2, 5, 3, device=device), 0).shape == (2, 0)
    assert ops.fps(torch.rand(2, 0, 3, device=device), 0).shape == (2, 0)


@pytest.mark.parametrize("make_args,match", [
    (lambda: (torch.rand(10, 3), 2), "xyz must have shape"),
    (lambda: (torch.rand(2, 10, 0), 2), "dimension D >= 1"),
    (lambda: (torch.rand(2, 10, 3).int(), 2), "xyz must be float16"),
    (lambda: (torch.rand(2, 10, 3), 11), r"m must be in \[0, 10\]"),
    (lambda: (torch.rand(2, 10, 3), -1), r"m must be in \[0, 10\]"),
    (lambda: (torch.rand(2, 10, 3), 2.5), "m must be an int"),
    (lambda: (torch.tensor([[[0.0, float("nan"), 0.0]]]), 1), "xyz contains NaN"),
])
def test_fps_bad_input(make_args, match):
    with pytest.raises(ValueError, match=match):
        ops.fps(*make_args())


def test_fps_bad_lengths_and_start():
    xyz = torch.rand(2, 10, 3)
    with pytest.raises(ValueError, match="lengths must have shape"):
        ops.fps(xyz, 2, torch.tensor([10]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 10\]"):
        ops.fps(xyz, 2, torch.tensor([10, 11]))
    with pytest.raises(ValueError, match="start_idx"):
        ops.fps(xyz, 2, torch.tensor([10, 4]), start_idx=torch.tensor([0, 4]))


def test_fps_raw_op_validates_too():
    # Direct torch.ops calls (C++ users, other frontends) get the same named errors.
    xyz = torch.rand(2, 10, 3)
    full, zero = torch.full((2,), 10), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="m .* must be in"):
        torch.ops.recon_fast.fps(xyz, full, 11, zero, -1.0)
    with pytest.raises(ValueError, match=r"lengths\[1\] = 12 is outside"):
        torch.ops.recon_fast.fps(xyz, torch.tensor([10, 12]), 3, zero, -1.0)


def test_fps_opcheck(device):
    xyz = torch.rand(2, 50, 3, device=device)
    lengths = torch.tensor([50, 20], device=device)
    start = torch.zeros(2, dtype=torch.long, device=device)
    torch.library.opcheck(torch.ops.recon_fast.fps.default, (xyz, lengths, 8, start, -1.0))


def test_fps_under_torch_compile(device):
    xyz = torch.rand(2, 300, 3, device=device)
    compiled = torch.compile(lambda x: ops.fps(x, 16), fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(xyz), ops.fps(xyz, 16))
