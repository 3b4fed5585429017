"""What a new user meets on the command line: per-command help, refused flags, a wrong-width
checkpoint, the DataLoader worker default."""

import os

import pytest
import torch

from recon_fast.cli import build_parser, main
from recon_fast.train.runtime import RunOptions, default_workers


def help_of(argv, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv + ["--help"])
    return capsys.readouterr().out


def test_eval_help_lists_only_what_eval_uses(capsys):
    text = help_of(["eval"], capsys)
    for flag in ("--ckpt", "--config", "--recompute-bn", "--workers", "--device"):
        assert flag in text
    for flag in ("--epochs", "--resume", "--init-ckpt", "--max-steps", "--checkpoint-every",
                 "--image-teacher"):
        assert flag not in text, flag
    assert "--epochs" in help_of(["finetune"], capsys)
    assert "--recompute-bn" not in help_of(["pretrain"], capsys)


def test_finetune_and_fewshot_help_leave_out_the_teachers(capsys):
    # Finetuning distils from no teacher: its help lists no teacher options; pretraining's does,
    # and zero-shot evaluation keeps the text teacher's weights.
    for command in (["finetune"], ["fewshot"]):
        text = help_of(command, capsys)
        for flag in ("--teacher-weights", "--image-teacher", "--image-teacher-weights"):
            assert flag not in text, (command, flag)
        assert "--init-ckpt" in text
    assert "--image-teacher" in help_of(["pretrain"], capsys)
    assert "--teacher-weights" in help_of(["eval"], capsys)


def test_eval_refuses_training_options(capsys):
    assert main(["eval", "svm", "--config", "embedded_svm", "--ckpt", "x.pth", "--epochs", "3"]) == 2
    assert "--epochs is a training option" in capsys.readouterr().err


def test_worker_default_fits_the_machine():
    cores = len(os.sched_getaffinity(0))
    assert default_workers() == max(0, min(8, cores - 1))
    assert RunOptions().workers == default_workers()
    assert build_parser().parse_args(["pretrain", "--config", "embedded"]).workers is None


def test_wrong_width_checkpoint_is_one_clean_error(tmp_path, capsys):
    from test_cli import common, model_section, modelnet_root, write_config

    from recon_fast.model import ReCon, ReConConfig, save_checkpoint

    ckpt = str(tmp_path / "tiny.pth")
    save_checkpoint(ckpt, ReCon(ReConConfig.tiny(depth=2)))  # width 192
    base = {"NAME": "ModelNet", "DATA_PATH": str(modelnet_root(tmp_path)), "N_POINTS": 1100,
            "NUM_CATEGORY": 40}
    cfg = write_config(tmp_path, "cls", model_section("PointTransformer", cls_dim=3, type="full"),
                       base)  # width 48
    assert main(["eval", "accuracy", "--config", cfg, "--ckpt", ckpt] + common(tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "'cls_pos' has shape (1, 1, 192) but the model expects (1, 1, 48)" in err


def test_fewshot_way_larger_than_the_head_is_refused(capsys):
    assert main(["fewshot", "--config", "embedded_fewshot", "--way", "17", "--shot", "1",
                 "--folds", "0", "--set", "model.cls_dim=16"]) == 2
    assert "--way 17 needs model.cls_dim >= 17" in capsys.readouterr().err
