"""`recon-fast` end to end on tiny datasets written in the published formats: eval svm /
zeroshot / vote / accuracy, and the few-shot command over folds."""

import json
import os

import numpy as np
import pytest
import torch
import yaml

from data_fixtures import MODELNET_CLASSES, write_fewshot, write_modelnet_dat
from recon_fast.cli import main
from recon_fast.model import ReConConfig, build_model, save_checkpoint

N_POINTS = 1100  # >= 1024 (the configs' npoints) so plain FPS and FPS-then-random both apply
TINY = dict(trans_dim=48, encoder_dims=48, depth=2, num_heads=4, num_group=16, group_size=16,
            drop_path_rate=0.0)


def model_section(name, **extra):
    return {"NAME": name, **TINY, **extra}


def modelnet_root(tmp_path):
    root = tmp_path / "modelnet"
    os.makedirs(root, exist_ok=True)
    (root / "modelnet40_shape_names.txt").write_text("\n".join(MODELNET_CLASSES) + "\n")
    for split, seed in (("train", 0), ("test", 1)):
        write_modelnet_dat(str(root / f"modelnet40_{split}_{N_POINTS}pts_fps.dat"), count=9,
                           n_points=N_POINTS, classes=3, seed=seed)
    return root


def write_config(tmp_path, name, model, dataset_base, splits=("train", "test"), **top):
    config = {"model": model, "npoints": 1024, "total_bs": 4,
              "dataset": {s: {"_base_": dataset_base, "others": {"subset": "train" if s == "train" else "test"}}
                          for s in splits}, **top}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.fixture
def pretrained(tmp_path):
    """A (randomly initialised) tiny ReCon pretraining checkpoint in the official layout."""
    torch.manual_seed(0)
    model = build_model(ReConConfig(**TINY, img_feature_dim=512, text_feature_dim=512))
    path = str(tmp_path / "pretrain.pth")
    save_checkpoint(path, model)
    return path


def run_cli(args, capsys):
    assert main(args) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def common(tmp_path):
    return ["--out", str(tmp_path / "run"), "--workers", "0", "--no-progress", "--no-tensorboard",
            "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]


def test_eval_svm(tmp_path, pretrained, capsys):
    base = {"NAME": "ModelNet", "DATA_PATH": str(modelnet_root(tmp_path)), "N_POINTS": N_POINTS,
            "NUM_CATEGORY": 40}
    cfg = write_config(tmp_path, "svm", model_section("PointTransformerSVM", cls_dim=40), base)
    result = run_cli(["eval", "svm", "--config", cfg, "--ckpt", pretrained] + common(tmp_path), capsys)
    assert 0.0 <= result["svm_accuracy"] <= 1.0


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_eval_zeroshot_counts_train_and_test(tmp_path, pretrained, capsys):
    base = {"NAME": "ModelNet", "DATA_PATH": str(modelnet_root(tmp_path)), "N_POINTS": N_POINTS,
            "NUM_CATEGORY": 40}
    cfg = write_config(tmp_path, "zs", model_section("PointTransformerZeroShot", type="full",
                                                     ratio=0.25, img_encoder="ViT-B/32",
                                                     text_encoder="ViT-B/32"), base)
    result = run_cli(["eval", "zeroshot", "--config", cfg, "--ckpt", pretrained,
                      "--teacher-weights", "random", "--protocol", "official"] + common(tmp_path),
                     capsys)
    # 18 clouds in all: the accuracy is a multiple of 1/18.
    assert abs(result["zero_shot_accuracy"] * 18 - round(result["zero_shot_accuracy"] * 18)) < 1e-9
    assert result["split_sizes"] == {"train": 9, "test": 9}


def test_eval_vote_and_accuracy_need_a_classifier_config(tmp_path, pretrained, capsys):
    base = {"NAME": "ModelNet", "DATA_PATH": str(modelnet_root(tmp_path)), "N_POINTS": N_POINTS,
            "NUM_CATEGORY": 40}
    cfg = write_config(tmp_path, "cls", model_section("PointTransformer", cls_dim=3, type="full"), base)
    vote = run_cli(["eval", "vote", "--config", cfg, "--ckpt", pretrained, "--votes", "2",
                    "--vote-rounds", "2", "--protocol", "official"] + common(tmp_path), capsys)
    assert len(vote["rounds"]) == 2 and vote["vote_accuracy"] == max(vote["rounds"])
    acc = run_cli(["eval", "accuracy", "--config", cfg, "--ckpt", pretrained] + common(tmp_path), capsys)
    assert 0.0 <= acc["accuracy"] <= 1.0
    wrong = write_config(tmp_path, "wrong", model_section("PointTransformerSVM"), base)
    assert main(["eval", "vote", "--config", wrong, "--ckpt", pretrained] + common(tmp_path)) == 2
    assert "needs a config whose model.NAME is 'PointTransformer'" in capsys.readouterr().err


def test_fewshot_runs_every_fold_and_summarises(tmp_path, pretrained, capsys):
    root = tmp_path / "fewshot"
    for fold in (0, 1):
        write_fewshot(str(root), way=3, shot=2, fold=fold, n_points=N_POINTS, seed=fold)
    base = {"NAME": "ModelNetFewShot", "DATA_PATH": str(root)}
    cfg = write_config(tmp_path, "fewshot", model_section("PointTransformer", cls_dim=40, type="full"),
                       base, splits=("train", "val"), max_epoch=1, grad_norm_clip=10,
                       optimizer={"type": "AdamW", "kwargs": {"lr": 5e-4, "weight_decay": 0.05}},
                       scheduler={"type": "CosLR", "kwargs": {"epochs": 2, "initial_epochs": 0}})
    assert main(["fewshot", "--config", cfg, "--way", "3", "--shot", "2", "--folds", "0-1",
                 "--init-ckpt", pretrained] + common(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "fold 0:" in out and "fold 1:" in out
    assert "3-way 2-shot over 2 folds:" in out
    assert os.path.isfile(tmp_path / "run" / "fold1" / "ckpt-last.pth")
    assert np.isfinite(float(out.split("over 2 folds:")[1].split("+-")[0]))


# ---- user mistakes: one line on stderr naming the argument, file or flag, exit status 2 ------

def assert_one_line_error(capsys, command, *names):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"recon-fast {command}: error: "), err
    for name in names:
        assert name in err[0], (name, err[0])


def modelnet_config(tmp_path, name="svm", data_path=None, model=None):
    base = {"NAME": "ModelNet", "DATA_PATH": data_path or str(modelnet_root(tmp_path)),
            "N_POINTS": N_POINTS, "NUM_CATEGORY": 40}
    return write_config(tmp_path, name, model or model_section("PointTransformerSVM", cls_dim=40), base)


def test_missing_teacher_weights_is_one_line(tmp_path, pretrained, capsys):
    cfg = modelnet_config(tmp_path, "zs", model=model_section(
        "PointTransformerZeroShot", type="full", ratio=0.25, img_encoder="ViT-B/32",
        text_encoder="ViT-B/32"))
    weights = str(tmp_path / "no-such" / "ViT-B-32.pt")
    assert main(["eval", "zeroshot", "--config", cfg, "--ckpt", pretrained,
                 "--teacher-weights", weights] + common(tmp_path)) == 2
    assert_one_line_error(capsys, "eval", "teacher weights", weights)


def test_missing_dataset_folder_is_one_line(tmp_path, pretrained, capsys):
    missing = str(tmp_path / "no-such-modelnet")
    cfg = modelnet_config(tmp_path, data_path=missing)
    assert main(["eval", "svm", "--config", cfg, "--ckpt", pretrained] + common(tmp_path)) == 2
    assert_one_line_error(capsys, "eval", missing)


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    ckpt = str(tmp_path / "no-such.pth")
    assert main(["eval", "svm", "--config", modelnet_config(tmp_path), "--ckpt", ckpt]
                + common(tmp_path)) == 2
    assert_one_line_error(capsys, "eval", ckpt)


def test_cuda_device_without_a_gpu_is_one_line(tmp_path, pretrained, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = ["eval", "svm", "--config", modelnet_config(tmp_path), "--ckpt", pretrained]
    assert main(args + common(tmp_path)[:-2] + ["--device", "cuda"]) == 2
    assert_one_line_error(capsys, "eval", "--device cuda", "CUDA is not available")


@pytest.mark.parametrize("folds", ["x", "3-1", "1-", ","])
def test_bad_folds_is_one_line(tmp_path, capsys, folds):
    assert main(["fewshot", "--config", modelnet_config(tmp_path), "--way", "5", "--shot", "10",
                 "--folds", folds] + common(tmp_path)) == 2
    assert_one_line_error(capsys, "fewshot", "--folds", repr(folds))


def test_config_mistakes_are_one_line(tmp_path, pretrained, capsys):
    cfg = modelnet_config(tmp_path)
    assert main(["eval", "svm", "--config", cfg, "--ckpt", pretrained, "--set", "max_epochs=3"]
                + common(tmp_path)) == 2
    assert_one_line_error(capsys, "eval", "max_epochs")
    assert main(["pretrain", "--config", str(tmp_path / "nope.yaml")] + common(tmp_path)) == 2
    assert_one_line_error(capsys, "pretrain", "nope.yaml")


def test_user_errors_share_one_family():
    import recon_fast
    from recon_fast import errors
    from recon_fast.data.io import DatasetFileError
    from recon_fast.teachers.weights import TeacherWeightsError
    from recon_fast.train.config import ConfigError

    assert recon_fast.ReconFastError is errors.ReconFastError
    assert issubclass(errors.ReconFastError, ValueError)
    for cls in (ConfigError, DatasetFileError, TeacherWeightsError, errors.DeviceError,
                errors.CheckpointError, errors.InputError, errors.NotCompiledError):
        assert issubclass(cls, errors.ReconFastError), cls
    for cls in (errors.DatasetNotFoundError, errors.CheckpointNotFoundError,
                errors.ConfigNotFoundError, errors.TeacherWeightsNotFoundError):
        assert issubclass(cls, FileNotFoundError) and issubclass(cls, errors.ReconFastError), cls


def test_internal_errors_keep_their_traceback(tmp_path, monkeypatch):
    import recon_fast.cli as cli

    def broken(args):
        raise RuntimeError("a bug, not a user mistake")

    monkeypatch.setattr(cli, "_presets", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["presets"])
