"""Runs that never lose work, and inputs that never turn into NaN or silent defaults.

Regressions for faults found by injecting them: bad op arguments, empty clouds, bad files,
interrupted and overwritten runs, config drift on resume, kill -9 inside checkpoint writes,
full disks, and DDP resume.
"""

import os

import numpy as np
import pytest
import torch

from recon_fast import ops

# ------------------------------------------------------------------------- op arguments


@pytest.mark.parametrize("integer", [np.int64(4), np.int32(4), np.uint8(4)])
def test_numpy_integers_are_accepted_as_counts(integer):
    from recon_fast.compat import pointnet2_ops, pytorch3d_ops

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


def test_backward_refuses_indices_that_its_kernels_would_skip():
    """Backward kernels may skip out-of-range indices (memory-safe, silent: chamfer's does);
    the autograd boundary in Python refuses them while data checks are on."""
    import importlib
    from types import SimpleNamespace

    def backward_of(op):
        return importlib.import_module(f"recon_fast.ops.{op}")._backward

    bad = torch.tensor([[0, 7, 1]])
    ctx = SimpleNamespace(saved_tensors=(bad,), num_points=4)
    with pytest.raises(ValueError, match=r"idx saved for the backward pass holds values in "
                                         r"\[0, 7\], outside \[-1, 4\)"):
        backward_of("gather_points")(ctx, torch.ones(1, 3, 3))
    x = torch.rand(1, 3, 3)
    ctx = SimpleNamespace(saved_tensors=(x, torch.rand(1, 4, 3), bad.unsqueeze(-1)), norm=2)
    with pytest.raises(ValueError, match="idx saved for the backward pass"):
        backward_of("knn")(ctx, torch.ones(1, 3, 1), None)
    ctx = SimpleNamespace(saved_tensors=(x, x, bad, torch.tensor([[0, 1, -2]])), norm=2)
    with pytest.raises(ValueError, match="idx_xy saved for the backward pass"):
        backward_of("chamfer")(ctx, torch.ones(1, 3), torch.ones(1, 3), None, None)


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
    from recon_fast.compat import pytorch3d_ops

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


# ------------------------------------------------------------------------- checkpoint writes


def _checkpoint(step):
    return {"base_model": {"w": torch.full((1000,), float(step))}, "global_step": step}


def test_checkpoint_files_get_the_umask_mode(tmp_path):
    from recon_fast.train.state import save_atomic

    previous = os.umask(0o027)
    try:
        save_atomic(_checkpoint(1), str(tmp_path / "ckpt-last.pth"))
    finally:
        os.umask(previous)
    assert oct(os.stat(tmp_path / "ckpt-last.pth").st_mode & 0o777) == oct(0o640)


def test_full_disk_is_reported_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import errno

    from recon_fast.errors import CheckpointError
    from recon_fast.train import state

    path = str(tmp_path / "ckpt-last.pth")
    state.save_atomic(_checkpoint(1), path)
    real_write, written = state._WriteTarget.write, []

    class FullDisk:
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    def write_until_full(self, data):
        if written:  # the first block fits, then the disk is full
            self.file = FullDisk()
        written.append(len(data))
        return real_write(self, data)

    monkeypatch.setattr(state._WriteTarget, "write", write_until_full)
    with pytest.raises(CheckpointError, match=f"no space left writing {path}"):
        state.save_atomic(_checkpoint(2), path)
    assert state.load_checkpoint_file(path)["global_step"] == 1
    assert sorted(os.listdir(tmp_path)) == ["ckpt-last.pth"]  # no temporary file left


KILLED_WRITER = """
import os, signal, sys
import torch
from recon_fast.train import state

path = sys.argv[1]
state.save_atomic({"base_model": {"w": torch.zeros(4)}, "global_step": 1}, path)
real_write = state._WriteTarget.write

def write_then_die(self, data):
    real_write(self, data)
    self.flush()
    os.kill(os.getpid(), signal.SIGKILL)  # inside the second checkpoint's write

state._WriteTarget.write = write_then_die
state.save_atomic({"base_model": {"w": torch.ones(1 << 20)}, "global_step": 2}, path)
"""


def test_kill_inside_a_checkpoint_write_leaves_the_previous_one_loadable(tmp_path):
    import subprocess
    import sys

    from recon_fast.train.rundir import claim_run_dir
    from recon_fast.train.state import load_checkpoint_file

    path = tmp_path / "ckpt-last.pth"
    result = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == -9, result.stderr[-2000:]
    assert load_checkpoint_file(str(path))["global_step"] == 1
    stale = [name for name in os.listdir(tmp_path) if name.startswith(".tmp-")]
    assert len(stale) == 1 and os.path.getsize(tmp_path / stale[0]) > 0
    events = claim_run_dir(str(tmp_path), resume=True, overwrite=False)  # the next start
    assert sorted(os.listdir(tmp_path)) == ["ckpt-last.pth"]
    assert any(stale[0] in line for line in events)


# ------------------------------------------------------------------------- the run folder


def test_an_existing_run_is_refused_without_resume_or_overwrite(tmp_path):
    from recon_fast.errors import ConfigError
    from recon_fast.train.rundir import claim_run_dir

    assert claim_run_dir(str(tmp_path / "new"), resume=False, overwrite=False) == []
    for name in ("ckpt-last.pth", "config.yaml"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / name).write_text("x")
        with pytest.raises(ConfigError, match=f"already holds a run \\({name}\\).*--resume.*"
                                              "--overwrite"):
            claim_run_dir(str(folder), resume=False, overwrite=False)
        assert claim_run_dir(str(folder), resume=True, overwrite=False) == []
    with pytest.raises(ConfigError, match="contradict"):
        claim_run_dir(str(tmp_path), resume=True, overwrite=True)


def test_overwrite_keeps_the_old_checkpoints_until_the_first_new_one(tmp_path):
    from recon_fast.train.rundir import claim_run_dir, drop_backups

    (tmp_path / "ckpt-last.pth").write_text("old last")
    (tmp_path / "ckpt-best.pth").write_text("old best")
    (tmp_path / "config.yaml").write_text("old: config")
    events = claim_run_dir(str(tmp_path), resume=False, overwrite=True)
    assert len(events) == 2
    assert (tmp_path / "ckpt-last.previous.pth").read_text() == "old last"
    assert (tmp_path / "ckpt-best.previous.pth").read_text() == "old best"
    assert not (tmp_path / "ckpt-last.pth").exists()
    assert len(drop_backups(str(tmp_path))) == 2
    assert sorted(os.listdir(tmp_path)) == ["config.yaml"]


def test_config_differences_name_the_keys_that_may_not_change():
    from recon_fast.train.rundir import config_differences

    stored = {"total_bs": 32, "max_epoch": 4, "optimizer": {"kwargs": {"lr": 1e-4}},
              "model": {"transformer_config": {"mask_ratio": 0.6}, "attention_backend": "auto"},
              "dataset": {"train": {"others": {"subset": "train"}}}}
    same_run = {"total_bs": 32, "max_epoch": 9, "optimizer": {"kwargs": {"lr": 1e-4}},
                "model": {"transformer_config": {"mask_ratio": 0.6}, "attention_backend": "sdpa"},
                "dataset": {"train": {"others": {"subset": "train"}}}}
    assert config_differences(stored, same_run) == {}
    other_run = {"total_bs": 64, "max_epoch": 4, "optimizer": {"kwargs": {"lr": 1e-3}},
                 "model": {"transformer_config": {"mask_ratio": 0.7}},
                 "dataset": {"train": {"others": {"subset": "test", "whole": True}}}}
    assert config_differences(stored, other_run) == {  # attention_backend may change
        "dataset.train.others.subset": ("train", "test"),
        "dataset.train.others.whole": ("<absent>", True),
        "model.transformer_config.mask_ratio": (0.6, 0.7),
        "optimizer.kwargs.lr": (1e-4, 1e-3),
        "total_bs": (32, 64),
    }


# ------------------------------------------------------------------------- whole runs
# Tiny ReCon runs on the embedded shapes (test_train's configs): 6 steps per epoch.


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("recon_cache"))


def _tiny(*extra):
    from test_train import pretrain_config

    return pretrain_config("validate=none", *extra)


def _options(out_dir, cache_dir, **kw):
    from test_train import options

    return options(out_dir, cache_dir, **kw)


def _log_lines(out_dir, marker):
    with open(os.path.join(out_dir, "log.txt")) as f:
        return [line.split(" ", 2)[2].rstrip("\n") for line in f if marker in line]


def _step_of(line):
    return int(line.split(" step ")[1].split(":")[0]) if " step " in line else None


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_runs_are_never_overwritten_or_resumed_silently(tmp_path, cache_dir):
    from recon_fast.train.config import ConfigError
    from recon_fast.train.pretrain import run_pretrain
    from recon_fast.train.state import load_checkpoint_file

    run, last = tmp_path / "run", tmp_path / "run" / "ckpt-last.pth"
    first = run_pretrain(_tiny(), _options(run, cache_dir, epochs=1, max_steps=2))["losses"]
    config_text = (run / "config.yaml").read_text()

    with pytest.raises(ConfigError, match="already holds a run"):
        run_pretrain(_tiny(), _options(run, cache_dir, epochs=1, max_steps=1))
    with pytest.raises(ConfigError, match=r"differs from the run's in optimizer.kwargs.lr, "
                                          r"total_bs \(optimizer.kwargs.lr: 0.000125 -> 0.001; "
                                          r"total_bs: 8 -> 4\)"):
        run_pretrain(_tiny("total_bs=4", "optimizer.kwargs.lr=0.001"),
                     _options(run, cache_dir, epochs=1, resume=True))
    assert load_checkpoint_file(str(last))["global_step"] == 2
    assert (run / "config.yaml").read_text() == config_text

    # --overwrite, interrupted before its first checkpoint: the old one is still there.
    run_pretrain(_tiny(), _options(run, cache_dir, epochs=1, overwrite=True), stop_after_steps=1)
    assert not last.exists()
    assert load_checkpoint_file(str(run / "ckpt-last.previous.pth"))["global_step"] == 2
    run_pretrain(_tiny(), _options(run, cache_dir, epochs=1, max_steps=1, overwrite=True))
    assert load_checkpoint_file(str(last))["global_step"] == 1
    assert sorted(p for p in os.listdir(run) if p.endswith(".pth")) == ["ckpt-last.pth"]
    events = "\n".join(_log_lines(run, "overwrite") + _log_lines(run, "removed"))
    assert "ckpt-last.previous.pth" in events and "has written its own checkpoint" in events

    # --resume + --init-ckpt with nothing to resume: the initial weights, said in log.txt.
    init = tmp_path / "init.pth"
    os.replace(last, init)
    with_init = run_pretrain(_tiny(), _options(tmp_path / "a", cache_dir, epochs=1, max_steps=1,
                                               init_ckpt=str(init)))["losses"]
    resumed = run_pretrain(_tiny(), _options(tmp_path / "b", cache_dir, epochs=1, max_steps=1,
                                             init_ckpt=str(init), resume=True))["losses"]
    assert resumed == with_init and with_init != first[:1]
    said = _log_lines(tmp_path / "b", "nothing to resume")
    assert len(said) == 1 and f"from the initial weights of {init}" in said[0]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_log_has_every_line_and_the_same_averages_after_an_interruption(tmp_path, cache_dir):
    from recon_fast.train.pretrain import run_pretrain

    config = _tiny()
    # 4 steps per epoch; logs at steps 3, 4 (epoch end), 6, 8 (epoch end); killed after step 3,
    # resumed from the checkpoint at step 2 with steps 1 and 2 not logged yet.
    kw = dict(epochs=2, log_every=3, checkpoint_every=2)
    run_pretrain(config, _options(tmp_path / "full", cache_dir, **kw))
    run_pretrain(config, _options(tmp_path / "part", cache_dir, **kw), stop_after_steps=3)
    run_pretrain(config, _options(tmp_path / "part", cache_dir, resume=True, **kw))

    def averages(out_dir, after_step):
        lines = _log_lines(out_dir, "[pretrain] epoch")
        assert lines and all(" | lr " in line and "samples/s" in line for line in lines)
        kept, step = [], 0
        for line in lines:  # an epoch's "done" line counts as its last step's
            step = _step_of(line) or step
            if step > after_step:
                kept.append(line.split(" | ")[0])
        return kept

    full = averages(tmp_path / "full", 2)
    # The interrupted run logged step 3 twice (before the interruption, and after the resume
    # from step 2); from the resume on, its lines are the uninterrupted run's.
    resumed = averages(tmp_path / "part", 2)[1:]
    assert resumed == full and len(full) == 4, (resumed, full)
    events = "\n".join(_log_lines(tmp_path / "part", ""))
    assert "resuming" in events and "checkpoint" in events and "batch 2, step 2" in events


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_batch_larger_than_the_dataset_is_refused(tmp_path, cache_dir):
    from recon_fast.train.config import ConfigError
    from recon_fast.train.pretrain import run_pretrain

    with pytest.raises(ConfigError, match=r"total_bs=64 is larger than the 32 training shapes"):
        run_pretrain(_tiny("total_bs=64"), _options(tmp_path / "run", cache_dir, epochs=1))


@pytest.mark.parametrize("argv, expected", [
    (["--max-steps", "0"], "--max-steps must be an integer >= 1, got 0"),
    (["--checkpoint-every", "-1"], "--checkpoint-every must be an integer >= 0, got -1"),
    (["--set", "model.transformer_config=3"],
     "config key model.transformer_config must be a section"),
    (["--set", "model.transformer_config="], "config key model.transformer_config must be a section"),
    (["--set", "model.transformer_config={}"], "config section model.transformer_config is empty"),
    (["--resume", "--overwrite"], "--resume and --overwrite contradict each other"),
])
def test_cli_mistakes_are_one_line_errors_naming_the_key(tmp_path, capsys, argv, expected):
    from recon_fast.cli import main

    assert main(["pretrain", "--config", "embedded", "--out", str(tmp_path / "run"),
                 "--teacher-weights", "random"] + argv) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1, err


def test_cli_refuses_an_existing_run_in_one_line(tmp_path, capsys):
    from recon_fast.cli import main

    (tmp_path / "config.yaml").write_text("total_bs: 8\n")
    assert main(["pretrain", "--config", "embedded", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds a run (config.yaml)" in err, err
    assert sorted(os.listdir(tmp_path)) == ["config.yaml"]  # not even a log.txt written


# ------------------------------------------------------------------------- DDP resume


def _ddp_resume_worker(rank, world, port, cache_dir, root):
    """One rank of a 2-process gloo group: an uninterrupted run, then one interrupted after
    step 3 and resumed from its checkpoint at step 2; each rank writes its loss sequences."""
    import json

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from recon_fast.train.pretrain import run_pretrain

    config = _tiny()
    kw = dict(epochs=1, checkpoint_every=2, log_every=3)
    full = run_pretrain(config, _options(f"{root}/full", cache_dir, **kw))["losses"]
    part = run_pretrain(config, _options(f"{root}/part", cache_dir, **kw),
                        stop_after_steps=3)["losses"]
    rest = run_pretrain(config, _options(f"{root}/part", cache_dir, resume=True, **kw))["losses"]
    with open(f"{root}/losses-{rank}.json", "w") as f:
        json.dump({"full": full, "part": part, "rest": rest}, f)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_ddp_resume_is_exact_on_every_rank(tmp_path, cache_dir):
    import json
    import socket

    import torch.multiprocessing as mp

    from recon_fast.train.config import ConfigError
    from recon_fast.train.pretrain import run_pretrain
    from recon_fast.train.state import load_checkpoint_file

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_resume_worker, args=(2, port, cache_dir, str(tmp_path)), nprocs=2, join=True)
    losses = [json.loads((tmp_path / f"losses-{rank}.json").read_text()) for rank in (0, 1)]
    for rank, run in enumerate(losses):
        assert len(run["full"]) == 4 and len(run["rest"]) == 2, run
        assert run["part"][:2] + run["rest"] == run["full"], f"rank {rank} diverged: {run}"
    assert losses[0]["full"] != losses[1]["full"]  # the ranks drew their own data and masks
    ckpt = load_checkpoint_file(str(tmp_path / "part" / "ckpt-last.pth"))
    assert ckpt["world_size"] == 2 and len(ckpt["rank_states"]) == 2
    assert not torch.equal(ckpt["rank_states"][0]["rng"]["torch"],
                           ckpt["rank_states"][1]["rng"]["torch"])
    # Averages over both ranks in log.txt: the same lines from the resume on.
    full = [line.split(" | ")[0] for line in _log_lines(tmp_path / "full", "[pretrain] epoch")]
    part = [line.split(" | ")[0] for line in _log_lines(tmp_path / "part", "[pretrain] epoch")]
    assert part[1:] == full and len(full) == 2, (part, full)
    # A different number of processes cannot continue the per-rank states: refused by name.
    with pytest.raises(ConfigError, match="written by 2 process\\(es\\), this one has 1"):
        run_pretrain(_tiny(), _options(tmp_path / "part", cache_dir, epochs=1, resume=True))


def test_every_rank_refuses_an_existing_run_but_only_the_main_rank_changes_it(tmp_path):
    from recon_fast.train.config import ConfigError
    from recon_fast.train.rundir import claim_run_dir

    (tmp_path / "ckpt-last.pth").write_text("old")
    (tmp_path / ".tmp-x.pth").write_text("partial")
    with pytest.raises(ConfigError, match="already holds a run"):
        claim_run_dir(str(tmp_path), resume=False, overwrite=False, prepare=False)
    assert claim_run_dir(str(tmp_path), resume=False, overwrite=True, prepare=False) == []
    assert sorted(os.listdir(tmp_path)) == [".tmp-x.pth", "ckpt-last.pth"]  # untouched
