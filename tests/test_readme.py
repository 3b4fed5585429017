"""The README as a user reads it: every Python snippet runs as written, and every command of its
shell blocks parses (flags of that command) with a config that resolves (a file or a preset).
The embedded chain's commands also run end to end in test_embedded_chain.py."""

import os
import re
import shlex

import pytest

from recon_fast.cli import build_parser
from recon_fast.train.config import load_config

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def blocks(language):
    text = open(README).read()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def commands():
    """recon-fast argument lists of the bash blocks (torchrun lines: what follows -m recon_fast.cli)."""
    found = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():  # join continued lines
            line = line.split(" #")[0].strip()
            if line.startswith("recon-fast "):
                found.append(shlex.split(line)[1:])
            elif line.startswith("torchrun ") and "-m recon_fast.cli" in line:
                found.append(shlex.split(line.split("-m recon_fast.cli", 1)[1]))
    return found


def test_readme_has_commands_and_snippets():
    assert len(commands()) >= 10 and len(blocks("python")) >= 3
    used = {argv[0] for argv in commands()}
    assert {"pretrain", "finetune", "fewshot", "eval"} <= used


@pytest.mark.parametrize("argv", commands(), ids=lambda argv: " ".join(argv[:3]))
def test_readme_command_parses_and_its_config_resolves(argv):
    assert "..." not in argv, "a README command must be complete"
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # argparse reports unknown flags by exiting
        pytest.fail(f"recon-fast {' '.join(argv)}: exit {exit.code}")
    if not hasattr(args, "config"):  # a command without a config (pack): parsing is the check
        return
    if getattr(args, "config", None) is not None:  # training and eval commands
        config = load_config(args.config, args.overrides)
        assert "model" in config


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_readme_python_snippet_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # snippets may write files (a checkpoint)
    exec(compile(blocks("python")[index], f"README python block {index}", "exec"), {})


@pytest.mark.parametrize("command", ["pretrain", "finetune", "fewshot", "eval", "pack", "presets",
                                     "demo", "visualize"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit:
        build_parser().parse_args([command, "--help"] if command != "eval" else
                                  ["eval", "--help"])
    assert exit.value.code == 0
    assert "usage: recon-fast " + command in capsys.readouterr().out
