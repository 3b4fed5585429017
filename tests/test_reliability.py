"""Runs that never lose work, and inputs that never turn into NaN or silent defaults.

Regressions for faults found by injecting them: bad op arguments, empty clouds, bad files,
interrupted and overwritten runs, config drift on resume, kill -9 inside checkpoint writes,
full disks, and DDP resume.
"""

import numpy as np
import pytest
import torch

from recon_fast import ops
from recon_fast.compat import pointnet2_ops, pytorch3d_ops

# ------------------------------------------------------------------------- op arguments


@pytest.mark.parametrize("integer", [np.int64(4), np.int32(4), np.uint8(4)])
def test_numpy_integers_are_accepted_as_counts(integer):
    xyz = torch.rand(2, 16, 3)
    expected = ops.fps(xyz, 4)
    assert torch.equal(ops.fps(xyz, integer), expected)
    assert ops.knn(xyz, xyz, integer).idx.shape == (2, 16, 4)
    assert ops.group(xyz, integer, integer).neighborhood.shape == (2, 4, 4, 3)
    assert torch.equal(pointnet2_ops.furthest_point_sample(xyz, integer).long(), expected)
    assert pytorch3d_ops.knn_points(xyz, xyz, K=integer).idx.shape == (2, 16, 4)
    assert torch.equal(pytorch3d_ops.sample_farthest_points(xyz, K=integer)[1], expected)


@pytest.mark.parametrize("value", [4.0, np.float64(4), True, np.bool_(True), "4"])
def test_non_integer_counts_are_refused_by_name(value):
    with pytest.raises(ValueError, match="m must be an int"):
        ops.fps(torch.rand(2, 16, 3), value)


# ------------------------------------------------------------------------- empty clouds


def test_chamfer_of_an_empty_cloud_is_an_error_naming_it():
    x, empty = torch.rand(2, 5, 3), torch.rand(2, 0, 3)
    with pytest.raises(ValueError, match="y holds empty clouds"):
        ops.chamfer_distance(x, empty)
    with pytest.raises(ValueError, match="x holds empty clouds"):
        ops.chamfer_distance(empty, x, norm=1)
    with pytest.raises(ValueError, match=r"x_lengths is 0 for clouds \[1\]"):
        ops.chamfer_distance(x, x, x_lengths=torch.tensor([5, 0]))
    with pytest.raises(ValueError, match=r"y_lengths is 0 for clouds \[0\]"):
        ops.chamfer_distance(x, x, y_lengths=np.array([0, 5]), reduction="none")
    with pytest.raises(ValueError, match="empty batch"):
        ops.chamfer_distance(torch.rand(0, 5, 3), torch.rand(0, 5, 3))
    assert ops.chamfer_distance(torch.rand(0, 5, 3), torch.rand(0, 5, 3), reduction="sum") == 0


def test_point_mae_chamfer_losses_refuse_empty_clouds():
    from recon_fast.compat.chamfer_dist import ChamferDistanceL1, ChamferDistanceL2

    for loss in (ChamferDistanceL1(), ChamferDistanceL2()):
        with pytest.raises(ValueError, match="y holds empty clouds"):
            loss(torch.rand(1, 5, 3), torch.rand(1, 0, 3))


def test_pytorch3d_chamfer_gives_pytorch3d_value_for_empty_clouds():
    """pytorch3d divides a cloud's point sum by its length clamped to 1 and the batch sum by
    max(N, 1): an empty cloud contributes exactly 0, an empty batch is 0, never NaN."""
    x = torch.rand(2, 5, 3)
    y = x + 0.1  # every squared nearest-neighbour distance is 3 * 0.01 or less
    per_cloud, _ = pytorch3d_ops.chamfer_distance(x, y, x_lengths=torch.tensor([5, 0]),
                                                  batch_reduction=None)
    assert per_cloud[1] == 0 and 0 < per_cloud[0] <= 2 * 0.03 + 1e-6
    loss, _ = pytorch3d_ops.chamfer_distance(x, x[:, :0])
    assert loss == 0
    loss, _ = pytorch3d_ops.chamfer_distance(torch.rand(0, 5, 3), torch.rand(0, 4, 3))
    assert loss == 0


# ------------------------------------------------------------------------- dataset files


@pytest.mark.parametrize("labels", [[0, 15, 3], [-1, 0, 1], [0.5, 1, 2], [0, float("nan"), 1]])
def test_out_of_range_scanobjectnn_labels_name_the_file(tmp_path, labels):
    import h5py

    from recon_fast.data import ScanObjectNN
    from recon_fast.data.io import DatasetFileError

    path = tmp_path / "main_split" / "test_objectdataset.h5"
    path.parent.mkdir()
    with h5py.File(path, "w") as f:
        f["data"], f["label"] = np.zeros((3, 8, 3), np.float32), np.array(labels)
    with pytest.raises(DatasetFileError, match=r"test_objectdataset.h5: 'label' must hold class "
                                               r"numbers in \[0, 15\)"):
        ScanObjectNN(tmp_path, "test", "objectbg")
