"""ReCon's Group (FPS centres + kNN patches) vs its plain-PyTorch definition."""

import pytest
import torch

from conftest import assert_close
from reference import group_reference
from recon_fast import ops


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("N,G,K", [(1024, 64, 32), (2048, 128, 32), (100, 7, 100), (1, 1, 1)])
def test_group_matches_reference(device, dtype, N, G, K):
    xyz = (torch.rand(2, N, 3) * 2 - 1).to(dtype)
    got = ops.group(xyz.to(device), G, K)
    want_nb, want_c = group_reference(xyz, G, K)
    assert got.neighborhood.shape == (2, G, K, 3) and got.center.shape == (2, G, 3)
    assert torch.equal(got.center.cpu(), want_c)
    assert_close(got.neighborhood.cpu(), want_nb, dtype)


def test_group_patch_contains_its_center(device):
    xyz = torch.rand(2, 500, 3, device=device)
    nb, center = ops.group(xyz, 16, 8)
    # The centre is its own nearest neighbour, so the first relative point is the origin.
    assert (nb[:, :, 0] == 0).all()
    assert nb.abs().max() <= 2.0


def test_group_without_pointnet2_quirk_can_pick_origin_points(device):
    xyz = torch.rand(1, 200, 3, device=device) + 1
    xyz[0, 5] = 0.0  # at the origin and the farthest from the rest after index 0
    assert not (ops.group(xyz, 3, 4).center == 0).all(-1).any()
    assert (ops.group(xyz, 3, 4, pointnet2_compat=False).center == 0).all(-1).any()


def test_group_gradient_flows_to_points(device):
    xyz = torch.rand(2, 64, 3, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: ops.group(x, 8, 4).neighborhood, (xyz,))


def test_group_bad_input():
    with pytest.raises(ValueError, match=r"num_group must be in \[1, 10\]"):
        ops.group(torch.rand(2, 10, 3), 11, 4)
    with pytest.raises(ValueError, match=r"group_size must be in \[1, 10\]"):
        ops.group(torch.rand(2, 10, 3), 4, 11)
    with pytest.raises(ValueError, match="xyz must have shape"):
        ops.group(torch.rand(2, 10, 6), 4, 4)


def test_group_under_torch_compile(device):
    xyz = torch.rand(2, 256, 3, device=device)
    compiled = torch.compile(lambda x: ops.group(x, 16, 8), fullgraph=True, backend="aot_eager")
    got, want = compiled(xyz), ops.group(xyz, 16, 8)
    assert torch.equal(got.center, want.center)
    assert torch.equal(got.neighborhood, want.neighborhood)
