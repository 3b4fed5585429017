"""recon-fast visualize: reconstruction pictures and training curves as PNG files.

One short pretraining run (tiny model, no teachers, 6 steps on a 4-class embedded subset, a few
seconds) gives the checkpoint, log.txt and TensorBoard scalars; an untrained model saved next to
it is the second checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from recon_fast.cli import main
from recon_fast.model import ReCon, ReConClassifier, ReConConfig, save_checkpoint
from recon_fast.train.config import load_config
from recon_fast.train.pretrain import run_pretrain
from recon_fast.train.runtime import RunOptions
from recon_fast import visualize as viz

CLASSES = "[sphere, cube, torus, chair]"
EMBEDDED = [f"_base_.CLASSES={CLASSES}", "_base_.SHAPES_PER_CLASS=8", "_base_.TEST_PER_CLASS=2",
            "_base_.N_POINTS=1024"]
TINY = ["model.transformer_config.trans_dim=48", "model.transformer_config.encoder_dims=48",
        "model.transformer_config.depth=2", "model.transformer_config.num_heads=4",
        "model.transformer_config.decoder_depth=1",
        "model.transformer_config.decoder_num_heads=4", "model.num_group=16",
        "model.group_size=16", "model.img_encoder=null", "model.text_encoder=null",
        "total_bs=8", "npoints=256", "dataset.train.others.npoints=256", "validate=none"]
WIDTH, HEIGHT = viz.RECONSTRUCTION_PIXELS


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished 2-epoch run (6 steps): (run folder, its config.yaml, an untrained checkpoint, cache)."""
    root = tmp_path_factory.mktemp("viz")
    cache = str(root / "cache")
    overrides = [f"dataset.{s}.{o}" for s in ("train", "extra_train", "extra_val")
                 for o in EMBEDDED] + TINY
    config = load_config("embedded", overrides)
    out = root / "run"
    run_pretrain(config, RunOptions(out_dir=str(out), cache_dir=cache, workers=0, progress=False,
                                    tensorboard=True, log_every=2, epochs=2))
    torch.manual_seed(123)
    untrained = ReCon(ReConConfig.from_official(config.model.to_dict()))
    save_checkpoint(root / "untrained.pth", untrained)
    return str(out), str(out / "config.yaml"), str(root / "untrained.pth"), cache


@pytest.fixture(scope="module")
def cloud_file(tmp_path_factory):
    """A cloud not in the training set, as a .npy file: points on a unit sphere, y squashed."""
    rng = np.random.default_rng(0)
    points = rng.normal(size=(300, 3))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    path = tmp_path_factory.mktemp("clouds") / "ellipsoid.npy"
    np.save(path, (points * [1.0, 0.5, 1.0]).astype(np.float32))
    return str(path)


def panels(path: str) -> list[np.ndarray]:
    """The four panels' pixel columns of a reconstruction picture."""
    image = np.asarray(Image.open(path).convert("RGB"))
    quarter = WIDTH // 4
    return [image[:, i * quarter:(i + 1) * quarter] for i in range(4)]


def test_reconstruction_pictures_have_the_fixed_size_and_follow_the_checkpoint(run, cloud_file,
                                                                               tmp_path):
    run_dir, config, untrained, _ = run
    trained_png, = viz.visualize(os.path.join(run_dir, "ckpt-last.pth"), config_name=config,
                                 point_files=[cloud_file], out_dir=str(tmp_path / "a"))
    untrained_png, = viz.visualize(untrained, config_name=config, point_files=[cloud_file],
                                   out_dir=str(tmp_path / "b"))
    for path in (trained_png, untrained_png):
        assert os.path.basename(path) == "reconstruction-0.png"
        assert Image.open(path).size == (WIDTH, HEIGHT)
    trained, fresh = panels(trained_png), panels(untrained_png)
    # Input, visible and masked patches depend on the cloud and the mask seed only ...
    for i in range(3):
        assert np.array_equal(trained[i], fresh[i]), f"panel {i} changed with the checkpoint"
    # ... the reconstruction on the weights.
    changed = (trained[3] != fresh[3]).any(axis=2).sum()
    assert changed > 200, f"only {changed} pixels of the reconstruction panel differ"
    blank = (trained[3] < 250).any(axis=2).sum()
    assert blank > 500, "the reconstruction panel is (nearly) empty"


def test_reconstruction_arrays_differ_between_checkpoints_and_mask_seeds(run, cloud_file):
    run_dir, config_path, untrained, _ = run
    config, model_config = viz.model_config_section(untrained, config_path, (), None)
    cloud = [("ellipsoid", viz.fit_cloud(viz.read_point_file(cloud_file), 256, 0, "e",
                                         model_config))]
    device = torch.device("cpu")
    drawn = {}
    for name, path in (("trained", os.path.join(run_dir, "ckpt-last.pth")), ("fresh", untrained)):
        model = viz.load_pretraining_model(path, model_config, device)
        drawn[name] = viz.reconstruct_clouds(model, cloud, device, seed=0)[0]
    other_seed = viz.reconstruct_clouds(model, cloud, device, seed=1)[0]
    # A config that adds teachers (distillation heads the checkpoint lacks) draws the same.
    with_teachers = dataclasses.replace(model_config, img_feature_dim=512, text_feature_dim=512)
    model = viz.load_pretraining_model(os.path.join(run_dir, "ckpt-last.pth"), with_teachers, device)
    assert np.array_equal(viz.reconstruct_clouds(model, cloud, device, seed=0)[0].predicted,
                          drawn["trained"].predicted)
    a, b = drawn["trained"], drawn["fresh"]
    assert np.array_equal(a.masked, b.masked) and np.array_equal(a.visible, b.visible)
    assert np.abs(a.predicted - b.predicted).max() > 1e-2
    assert not np.array_equal(b.masked, other_seed.masked)  # the seed chooses the mask
    # 16 patches of 16 points, 60% masked: 9 masked, 7 visible.
    assert a.masked.shape == a.predicted.shape == (9 * 16, 3) and a.visible.shape == (7 * 16, 3)


def test_run_folder_gives_curves_and_reconstructions_from_its_training_set(run, tmp_path, capsys):
    run_dir, _, _, cache = run
    assert main(["visualize", run_dir, "--clouds", "2", "--out", str(tmp_path),
                 "--cache-dir", cache]) == 0
    printed = capsys.readouterr().out.split()
    expected = [str(tmp_path / n) for n in ("curves.png", "reconstruction-0.png",
                                            "reconstruction-1.png")]
    assert printed == expected
    assert Image.open(expected[0]).size == viz.CURVES_PIXELS
    assert all(Image.open(p).size == (WIDTH, HEIGHT) for p in expected[1:])
    # Two different training clouds: different input panels.
    assert not np.array_equal(panels(expected[1])[0], panels(expected[2])[0])


def test_log_and_tensorboard_give_the_same_curves(run, tmp_path):
    run_dir, _, _, _ = run
    from_tensorboard = viz.read_scalars(run_dir)
    with open(os.path.join(run_dir, "log.txt")) as f:
        from_log = viz.parse_log(f.read().splitlines())
    assert viz.curve_panels(from_log) == ["train/loss", "train/mdm"]
    # 24 shapes, batch 8: 3 steps per epoch, logged at steps 2, 3 (epoch end), 4 and 6.
    for name in ("train/loss", "train/mdm", "train/lr"):
        logged, exact = from_log[name], from_tensorboard[name]
        assert [s for s, _ in logged] == [s for s, _ in exact] == [2, 3, 4, 6]
        for (_, rounded), (_, value) in zip(logged, exact):
            assert abs(rounded - value) <= 5e-5 + 1e-3 * abs(value), name
    # Without TensorBoard scalars the log is read.
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("*.pth", "pictures"))
    shutil.rmtree(copy / "tensorboard")
    assert viz.read_scalars(str(copy)) == from_log
    path, = viz.visualize(str(copy), out_dir=str(tmp_path / "pictures"))
    assert path.endswith("curves.png") and Image.open(path).size == viz.CURVES_PIXELS


LOG = """\
2026-01-01 00:00:00,000 pretraining ReCon (13.1 M parameters) on 384 shapes
2026-01-01 00:00:01,000 [pretrain] epoch 1 step 20: csc_img 0.5000 loss 1.5000 mdm 1.0000 | lr 0.000125 | 5.0 samples/s
2026-01-01 00:00:02,000 [pretrain] epoch 1 done: csc_img 0.2500 loss 0.7500 mdm 0.5000 | lr 0.000125 | 5.0 samples/s
2026-01-01 00:00:03,000 [validation] epoch 1: linear SVM accuracy 42.50% (BatchNorm statistics recomputed)
2026-01-01 00:00:04,000 checkpoint runs/x/ckpt-last.pth: step 24, next epoch 1 batch 0
2026-01-01 00:00:04,500 [validation] epoch 2: linear SVM accuracy on EmbeddedProbe/test: pretrained 80.00% vs untrained 50.00% (margin +30.00 points)
2026-01-01 00:00:04,600 checkpoint runs/x/ckpt-last.pth: step 28, next epoch 2 batch 0
2026-01-01 00:00:05,000 [finetune] epoch 2 step 30: acc 75.0000 loss 0.2000 | lr 5e-05 | 9.0 samples/s
2026-01-01 00:00:06,000 [validation] epoch 2: accuracy 80.00% (best 80.00%)
"""


def test_log_lines_become_scalars_at_their_steps():
    scalars = viz.parse_log(LOG.splitlines())
    assert scalars == {
        "train/csc_img": [(20, 0.5), (24, 0.25)],
        "train/loss": [(20, 1.5), (24, 0.75), (30, 0.2)],
        "train/mdm": [(20, 1.0), (24, 0.5)],
        "train/lr": [(20, 0.000125), (24, 0.000125), (30, 5e-05)],
        "val/svm_acc_percent": [(24, 42.5), (28, 80.0)],
        "val/svm_acc_untrained_percent": [(28, 50.0)],
        "train/acc_percent": [(30, 75.0)],
        "val/acc_percent": [(30, 80.0)],  # no checkpoint line after it: the last step seen
    }
    assert viz.curve_panels(scalars) == ["train/loss", "train/acc_percent", "train/csc_img",
                                         "train/mdm", "val/acc_percent", "val/svm_acc_percent"]
    assert viz.untrained_companion("val/svm_acc_percent", scalars) == "val/svm_acc_untrained_percent"
    assert viz.untrained_companion("val/acc_percent", scalars) is None


def test_curves_with_validation_accuracy(tmp_path):
    (tmp_path / "log.txt").write_text(LOG)
    path, = viz.visualize(str(tmp_path), out_dir=str(tmp_path / "p"))
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[:2] == (viz.CURVES_PIXELS[1], viz.CURVES_PIXELS[0])
    red = (image[..., 0] > 150) & (image[..., 1] < 110) & (image[..., 2] < 110)
    assert red.sum() > 20, "no validation curve drawn"
    grey = (np.abs(image.astype(int) - 0x77).max(axis=2) < 12)
    assert grey.sum() > 20, "no untrained-model curve drawn"


def _one_line_error(capsys, argv, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("recon-fast visualize: error: "), err
    for fragment in fragments:
        assert fragment in err[0], err[0]


def test_bad_inputs_are_one_line_errors_naming_the_path(run, cloud_file, tmp_path, capsys):
    run_dir, config, untrained, _ = run
    missing = str(tmp_path / "nope.pth")
    _one_line_error(capsys, ["visualize", missing], missing)
    # A finetuning checkpoint: by its stored config, and by its weights under a ReCon config.
    classifier = str(tmp_path / "classifier.pth")
    save_checkpoint(classifier, ReConClassifier(ReConConfig(
        trans_dim=48, encoder_dims=48, depth=2, num_heads=4, num_group=16, group_size=16,
        cls_dim=4)))
    _one_line_error(capsys, ["visualize", classifier, "--points", cloud_file], classifier,
                    "PointTransformer", "pretraining")
    _one_line_error(capsys, ["visualize", classifier, "--config", config, "--points", cloud_file],
                    classifier, "not a pretraining checkpoint")
    # A checkpoint of other sizes than the config.
    wide = str(tmp_path / "wide.pth")
    save_checkpoint(wide, ReCon(ReConConfig(trans_dim=24, encoder_dims=24, depth=2, num_heads=4,
                                            decoder_depth=1, decoder_num_heads=4, num_group=16,
                                            group_size=16, img_feature_dim=None,
                                            text_feature_dim=None)))
    _one_line_error(capsys, ["visualize", wide, "--config", config, "--points", cloud_file],
                    wide, "shape")
    # A checkpoint with tensors the model does not have.
    extra = str(tmp_path / "extra.pth")
    state = torch.load(untrained, weights_only=True)["base_model"]
    torch.save({"base_model": {**state, "MAE_encoder.extra_head.weight": torch.zeros(3)}}, extra)
    _one_line_error(capsys, ["visualize", extra, "--config", config, "--points", cloud_file],
                    extra, "does not fit", "extra_head")
    # A folder that is not a run.
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(capsys, ["visualize", str(empty)], str(empty), "log.txt")
    # Clouds that cannot be drawn.
    flat = str(tmp_path / "flat.npy")
    np.save(flat, np.zeros((50, 2), np.float32))
    _one_line_error(capsys, ["visualize", untrained, "--points", flat], flat, "shape")
    few = str(tmp_path / "few.txt")
    np.savetxt(few, np.random.default_rng(0).normal(size=(10, 3)), delimiter=",")
    _one_line_error(capsys, ["visualize", untrained, "--points", few], few, "10 points")
    _one_line_error(capsys, ["visualize", untrained, "--points", str(tmp_path / "no.npy")],
                    str(tmp_path / "no.npy"))
    _one_line_error(capsys, ["visualize", untrained], untrained, "--points")
    _one_line_error(capsys, ["visualize", untrained, "--clouds", "0"], "--clouds")


def test_text_clouds_are_read_and_normalised(tmp_path):
    points = np.random.default_rng(1).normal(size=(40, 6)) * 5 + 3  # xyz + normals, off centre
    path = tmp_path / "cloud.txt"
    np.savetxt(path, points, delimiter=",")
    read = viz.read_point_file(str(path))
    centred = points[:, :3] - points[:, :3].mean(0)
    np.testing.assert_allclose(read, centred / np.linalg.norm(centred, axis=1).max(), atol=1e-5)


def test_missing_matplotlib_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    with pytest.raises(viz.MissingPackageError, match="'matplotlib'"):
        viz.pyplot()


def test_importing_recon_fast_does_not_import_matplotlib():
    code = ("import sys, recon_fast, recon_fast.cli, recon_fast.visualize; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "False"
