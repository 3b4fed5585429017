"""Real clients on the shims: PointNet++ set-abstraction / feature-propagation networks built
from pointnet2_ops' modules, and a DGCNN edge convolution whose kNN comes from a shim, each run
forward and backward against the same network over plain-PyTorch restatements."""

import pytest
import torch
from torch import nn

from conftest import assert_close
from peer_restatement import dgcnn_graph_feature, dgcnn_knn, fp_module_forward, sa_module_forward
from recon_fast.compat import pytorch3d_ops
from recon_fast.compat.knn_cuda import KNN
from recon_fast.compat.pointnet2_ops import pointnet2_modules as pm


class PointNet2Seg(nn.Module):
    """A PointNet++ segmentation network as Pointnet2_PyTorch's examples build it: an MSG and
    an SSG set abstraction, a global GroupAll one, then three feature propagations."""

    def __init__(self, in_channels=3):
        super().__init__()
        self.sa = nn.ModuleList([
            pm.PointnetSAModuleMSG(npoint=32, radii=[0.1, 0.3], nsamples=[8, 16],
                                   mlps=[[in_channels, 16, 16], [in_channels, 16, 32]]),
            pm.PointnetSAModule(mlp=[48, 32, 64], npoint=8, radius=0.5, nsample=8),
            pm.PointnetSAModule(mlp=[64, 64, 64]),  # npoint=None: GroupAll
        ])
        self.fp = nn.ModuleList([
            pm.PointnetFPModule(mlp=[64 + 64, 64]),
            pm.PointnetFPModule(mlp=[64 + 48, 32]),
            pm.PointnetFPModule(mlp=[32 + in_channels, 32, 16]),
        ])

    def forward(self, xyz, features, sa=None, fp=None):
        sa = sa or (lambda module, *args: module(*args))
        fp = fp or (lambda module, *args: module(*args))
        xyzs, feats = [xyz], [features]
        for module in self.sa:
            new_xyz, new_feats = sa(module, xyzs[-1], feats[-1])
            xyzs.append(new_xyz)
            feats.append(new_feats)
        out = feats[-1]
        # The global level has no coordinates: FP broadcasts it (known=None), then two levels.
        out = fp(self.fp[0], xyzs[2], None, feats[2], out)
        out = fp(self.fp[1], xyzs[1], xyzs[2], feats[1], out)
        return fp(self.fp[2], xyzs[0], xyzs[1], feats[0], out)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_pointnet2_network_forward_and_backward_match_the_restatement(device, dtype):
    torch.manual_seed(0)
    net = PointNet2Seg().to(device, dtype)
    xyz = torch.rand(2, 128, 3, device=device, dtype=dtype)
    xyz[:, 0] += 0.1  # the first point (FPS's start) away from the origin
    feats = torch.rand(2, 3, 128, device=device, dtype=dtype)
    x1, f1 = xyz.clone().requires_grad_(), feats.clone().requires_grad_()
    out = net(x1, f1)
    assert out.shape == (2, 16, 128)
    g = torch.randn_like(out)
    (out * g).sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    x2, f2 = xyz.clone().requires_grad_(), feats.clone().requires_grad_()
    want = net(x2, f2, sa=sa_module_forward, fp=fp_module_forward)
    (want * g).sum().backward()
    assert_close(out, want)
    # Gradients pass through four batch norms and scatter-adds whose summation order differs
    # from torch.gather's backward: float32 agrees to about 1e-4 relative.
    def check(got, ref):
        if dtype == torch.float64:
            assert_close(got, ref)
        else:
            torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-3)

    check(x1.grad, x2.grad)
    check(f1.grad, f2.grad)
    for got, ref in zip(grads, (p.grad for p in net.parameters())):
        check(got, ref)


def test_pointnet2_state_dict_keys_are_the_originals():
    sa = pm.PointnetSAModuleMSG(npoint=4, radii=[0.1], nsamples=[4], mlps=[[3, 8]])
    fp = pm.PointnetFPModule(mlp=[8, 4])
    assert sorted(sa.state_dict()) == sorted([
        "mlps.0.0.weight", "mlps.0.1.weight", "mlps.0.1.bias", "mlps.0.1.running_mean",
        "mlps.0.1.running_var", "mlps.0.1.num_batches_tracked"])
    assert isinstance(sa.mlps[0][0], nn.Conv2d) and sa.mlps[0][0].in_channels == 6
    assert "mlp.0.weight" in fp.state_dict()


def test_pointnet2_msg_does_not_mutate_the_callers_spec():
    spec = [[3, 8], [3, 16]]
    pm.PointnetSAModuleMSG(npoint=4, radii=[0.1, 0.2], nsamples=[4, 4], mlps=spec)
    assert spec == [[3, 8], [3, 16]]


def _shim_knn(provider, k):
    """The kNN a DGCNN user would swap in: (B, C, N) features -> (B, N, k) indices."""
    if provider == "knn_cuda":
        knn = KNN(k, transpose_mode=True)
        return lambda x: knn(x.transpose(1, 2), x.transpose(1, 2))[1]
    return lambda x: pytorch3d_ops.knn_points(x.transpose(1, 2), x.transpose(1, 2), K=k).idx


def _edge_conv(c_in, c_out):
    # DGCNN's conv blocks: 1x1 Conv2d without bias, BatchNorm2d, LeakyReLU(0.2), max over k.
    return nn.Sequential(nn.Conv2d(2 * c_in, c_out, kernel_size=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.LeakyReLU(negative_slope=0.2))


@pytest.mark.parametrize("provider", ["knn_cuda", "pytorch3d"])
def test_dgcnn_edge_conv_on_coordinates(device, provider):
    k = 10
    conv = _edge_conv(3, 64).to(device, torch.float64)
    x = torch.rand(2, 3, 96, dtype=torch.float64, device=device)
    x1 = x.clone().requires_grad_()
    idx = _shim_knn(provider, k)(x1.detach())
    assert torch.equal(idx, dgcnn_knn(x, k))
    out = conv(dgcnn_graph_feature(x1, k, idx)).max(dim=-1)[0]  # (B, 64, N)
    out.sum().backward()
    x2 = x.clone().requires_grad_()
    want = conv(dgcnn_graph_feature(x2, k, dgcnn_knn(x2, k))).max(dim=-1)[0]
    want.sum().backward()
    assert_close(out, want)
    assert_close(x1.grad, x2.grad)


@pytest.mark.parametrize("provider", ["knn_cuda", "pytorch3d"])
def test_dgcnn_edge_conv_in_feature_space(provider):
    # DGCNN's second and later edge convolutions build the kNN graph on 64-d features.
    features = torch.rand(2, 64, 48, dtype=torch.float64)
    idx = _shim_knn(provider, 8)(features)
    assert torch.equal(idx, dgcnn_knn(features, 8))
