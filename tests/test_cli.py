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
                      "--teacher-weights", "random"] + common(tmp_path), capsys)
    # 18 clouds in all: the accuracy is a multiple of 1/18.
    assert abs(result["zero_shot_accuracy"] * 18 - round(result["zero_shot_accuracy"] * 18)) < 1e-9


def test_eval_vote_and_accuracy_need_a_classifier_config(tmp_path, pretrained, capsys):
    base = {"NAME": "ModelNet", "DATA_PATH": str(modelnet_root(tmp_path)), "N_POINTS": N_POINTS,
            "NUM_CATEGORY": 40}
    cfg = write_config(tmp_path, "cls", model_section("PointTransformer", cls_dim=3, type="full"), base)
    vote = run_cli(["eval", "vote", "--config", cfg, "--ckpt", pretrained, "--votes", "2",
                    "--vote-rounds", "2"] + common(tmp_path), capsys)
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
