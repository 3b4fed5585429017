"""Pictures of a run: masked-patch reconstructions (as the ReCon paper's figure) and training
curves, written as PNG files of a fixed size.

    recon-fast visualize runs/pretrain                      # curves + ckpt-last.pth's reconstructions
    recon-fast visualize ckpt.pth --config embedded --clouds 4
    recon-fast visualize ckpt.pth --config embedded --points chair.npy --points lamp.txt

A reconstruction picture is one row of four 3-D scatter panels for one cloud: the input, the
visible patches (what the encoder sees), the masked patches (ground truth) and the decoder's
reconstruction of the masked patches (drawn over the visible ones in grey), all from the same
view and within the same limits. The curves come from the run's TensorBoard scalars when they
are there (exact values), else from its log.txt (values as logged, 4 decimals).

matplotlib is imported here only, with the Agg backend (no display needed), so that
``import recon_fast`` does not need it.
"""

from __future__ import annotations

import glob
import math
import os
import re
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from recon_fast.errors import (CheckpointError, CheckpointNotFoundError, ConfigError,
                               DatasetFileError, InputError, MissingPackageError)

DPI = 100
RECONSTRUCTION_PIXELS = (1200, 330)  # width, height of one cloud's row of four panels
CURVES_PIXELS = (1200, 800)
PANEL_TITLES = ("input", "visible patches", "masked patches (ground truth)", "reconstruction")
VIEW = dict(elev=20.0, azim=-60.0)  # one camera for every panel
POINT_SIZE = 3.0
LOG_NAME, TENSORBOARD_DIR = "log.txt", "tensorboard"
CHECKPOINT_NAMES = ("ckpt-last.pth", "ckpt-best.pth")


def pyplot():
    """matplotlib.pyplot on the Agg backend; MissingPackageError naming matplotlib without it."""
    try:
        import matplotlib
    except ImportError as err:
        raise MissingPackageError("recon-fast visualize needs the package 'matplotlib' "
                                  "(pip install matplotlib)") from err
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


# ------------------------------------------------------------------------ what to draw from


@dataclass
class Target:
    """What the command line named: a checkpoint file, a run folder, or both (a run folder's
    checkpoint)."""
    checkpoint: Optional[str]
    run_dir: Optional[str]


def resolve_target(path: str) -> Target:
    """A checkpoint file, or a run folder (its ckpt-last.pth, else ckpt-best.pth, if any)."""
    if os.path.isfile(path):
        return Target(checkpoint=path, run_dir=None)
    if not os.path.isdir(path):
        raise CheckpointNotFoundError(f"{path}: no such checkpoint file or run folder")
    found = [os.path.join(path, n) for n in CHECKPOINT_NAMES if os.path.isfile(os.path.join(path, n))]
    return Target(checkpoint=found[0] if found else None, run_dir=path)


def model_config_section(checkpoint: str, config_name: Optional[str], overrides: Sequence[str],
                         run_dir: Optional[str]):
    """The run config for the pictures: --config, else the run folder's config.yaml, else the
    config stored in the checkpoint. Returns (config or None, model ReConConfig)."""
    from recon_fast.model import ReConConfig, read_checkpoint
    from recon_fast.train.config import load_config, to_config

    run_config = os.path.join(run_dir, "config.yaml") if run_dir else None
    if config_name is None and run_config and os.path.isfile(run_config):
        config_name = run_config
    if config_name is not None:
        config = load_config(config_name, overrides)
        return config, ReConConfig.from_official(config.model.to_dict())
    stored = read_checkpoint(checkpoint).get("config")
    if isinstance(stored, dict) and isinstance(stored.get("model"), dict):  # a run's config
        config = to_config(stored)
        return config, ReConConfig.from_official(config.model.to_dict())
    if isinstance(stored, dict) and "trans_dim" in stored:  # save_checkpoint's model config
        return None, ReConConfig(**stored)
    raise ConfigError(f"{checkpoint} stores no config: pass --config (the config it was "
                      "trained with)")


def load_pretraining_model(checkpoint: str, model_config, device: torch.device):
    """The ReCon pretraining model of `checkpoint`, in eval mode; CheckpointError naming the file
    for a downstream (finetuned) checkpoint or one that does not fit the config."""
    from recon_fast.model import ReCon, load_official_checkpoint

    if model_config.name != "ReCon":
        raise CheckpointError(f"{checkpoint}: its config builds a {model_config.name} model; "
                              "visualize needs a ReCon pretraining checkpoint (the decoder "
                              "reconstructs the masked patches)")
    model = ReCon(model_config)
    report = load_official_checkpoint(checkpoint, model, log=False)  # shape mismatches raise
    if not any(k.startswith(("MAE_decoder.", "increase_dim.")) for k in report.loaded):
        raise CheckpointError(f"{checkpoint} holds no ReCon decoder (MAE_decoder / increase_dim "
                              "weights): it is not a pretraining checkpoint (a finetuned model?); "
                              "visualize needs a ReCon pretraining checkpoint")
    # The distillation heads play no part in the reconstruction: a config that differs from
    # the checkpoint in its teachers only still draws it.
    unused = ("img_proj.", "text_proj.")
    if any(not k.startswith(unused) for k in report.missing + report.unexpected):
        details = str(report).replace("\n  ", "; ")
        raise CheckpointError(f"{checkpoint} does not fit the config's model: {details}")
    return model.to(device).eval()


def read_point_file(path: str) -> np.ndarray:
    """A (N, 3+) cloud from a .npy or text (.txt/.xyz, comma or space separated) file: its xyz
    columns, centred and scaled into the unit sphere as the datasets are."""
    from recon_fast.data.io import check_point_array, read_npy_points, require_file
    from recon_fast.data.pointcloud import pc_norm

    require_file(path, "point cloud file")
    columns = tuple(range(3, 16))
    if path.endswith(".npy"):
        array = read_npy_points(path, columns=columns)
    else:
        try:
            with open(path) as f:
                text = f.read().replace(",", " ")
            array = np.loadtxt(text.splitlines(), dtype=np.float64, ndmin=2)
        except (ValueError, UnicodeDecodeError) as err:
            raise DatasetFileError(path, f"not a text point array ({err})") from err
        array = check_point_array(array, path, columns=columns)
    try:
        return pc_norm(array[:, :3].astype(np.float64)).astype(np.float32)
    except ValueError as err:
        raise DatasetFileError(path, str(err)) from err


def clouds_from_dataset(config, count: int, data_root: str, cache_dir: Optional[str]):
    """The first `count` clouds of the config's training set (what the model learnt to
    reconstruct), as (name, (N, 3) float32) pairs."""
    from recon_fast.data import dataset_from_config

    train = config.dataset.train
    dataset = dataset_from_config(train._base_, dict(train.get("others", {})), data_root,
                                  image="none", cache_dir=cache_dir, progress=False)
    count = min(count, len(dataset))
    return [(f"{train._base_.NAME} train #{i}", dataset[i]["points"][:, :3].numpy())
            for i in range(count)]


def fit_cloud(points: np.ndarray, npoints: int, seed: int, name: str, model_config) -> np.ndarray:
    """At most `npoints` points (a seeded random subset of larger clouds), and enough points for
    the model's patches."""
    need = max(model_config.num_group, model_config.group_size)
    if len(points) < need:
        raise InputError(f"{name}: {len(points)} points, the model needs at least {need} "
                         f"(num_group {model_config.num_group}, group_size "
                         f"{model_config.group_size})")
    if len(points) > npoints:
        keep = np.random.default_rng(seed).choice(len(points), npoints, replace=False)
        points = points[np.sort(keep)]
    return points


# ------------------------------------------------------------------------ reconstructions


@dataclass
class CloudPatches:
    """One cloud's arrays for the four panels, all (n, 3) float32 in the cloud's coordinates."""
    name: str
    input: np.ndarray
    visible: np.ndarray
    masked: np.ndarray
    predicted: np.ndarray


def reconstruct_clouds(model, clouds, device: torch.device, seed: int) -> list[CloudPatches]:
    """model.reconstruct on each cloud, with the mask drawn from `seed` (the same mask for the
    same cloud whatever the checkpoint)."""
    def points_of(patches: torch.Tensor) -> np.ndarray:  # (1, P, K, 3) -> (P * K, 3)
        return patches[0].reshape(-1, 3).float().cpu().numpy()

    out = []
    for name, points in clouds:
        batch = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))[None].to(device)
        generator = torch.Generator(device=device).manual_seed(seed)
        patches = model.reconstruct(batch, generator=generator)
        out.append(CloudPatches(name, points, points_of(patches.visible),
                                points_of(patches.masked), points_of(patches.predicted)))
    return out


def panel_limits(cloud: CloudPatches) -> tuple[np.ndarray, float]:
    """One cube for all four panels, from the input alone (so that the first three panels do not
    depend on the checkpoint): centre and half-width, with a margin for the reconstruction."""
    low, high = cloud.input.min(axis=0), cloud.input.max(axis=0)
    return (low + high) / 2, float((high - low).max()) / 2 * 1.25 + 1e-6


def inside(points: np.ndarray, centre: np.ndarray, half: float) -> np.ndarray:
    """The points within the panels' cube (3-D scatter does not clip to the axis limits)."""
    return points[(np.abs(points - centre) <= half).all(axis=1)]


def render_reconstruction(cloud: CloudPatches, path: str) -> str:
    """Write the row of four panels for `cloud` to `path` (RECONSTRUCTION_PIXELS at DPI)."""
    plt = pyplot()
    width, height = RECONSTRUCTION_PIXELS
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    centre, half = panel_limits(cloud)
    grey, blue, orange, red = "#bbbbbb", "#4c72b0", "#dd8452", "#c44e52"
    predicted = inside(cloud.predicted, centre, half)
    layers = (((cloud.input, blue),), ((cloud.visible, blue),), ((cloud.masked, orange),),
              ((cloud.visible, grey), (predicted, red)))
    for i, (title, drawn) in enumerate(zip(PANEL_TITLES, layers)):
        # Fixed panel boxes (no tight layout), so every picture has the same geometry.
        ax = fig.add_axes((i / 4, 0.0, 1 / 4, 0.88), projection="3d")
        for points, colour in drawn:
            # Datasets are y-up: draw y as the vertical axis.
            ax.scatter(points[:, 0], points[:, 2], points[:, 1], s=POINT_SIZE, c=colour,
                       depthshade=False, linewidths=0)
        ax.set_xlim(centre[0] - half, centre[0] + half)
        ax.set_ylim(centre[2] - half, centre[2] + half)
        ax.set_zlim(centre[1] - half, centre[1] + half)
        ax.set_box_aspect((1, 1, 1), zoom=1.5)  # the default leaves a wide empty margin
        ax.view_init(**VIEW)
        ax.set_axis_off()
        fig.text((i + 0.5) / 4, 0.93, title, ha="center", va="center", fontsize=11)
    outside = len(cloud.predicted) - len(predicted)
    if outside:
        fig.text(3.5 / 4, 0.87, f"{outside} of {len(cloud.predicted)} points outside the view",
                 ha="center", va="center", fontsize=8, color="#555555")
    fig.text(0.005, 0.985, os.path.basename(cloud.name), ha="left", va="top", fontsize=8,
             color="#555555")
    return _save(fig, plt, path)


# ------------------------------------------------------------------------ training curves

_STEP_LINE = re.compile(r"\[(\w+)\] epoch (\d+) (?:step (\d+)|done): (.*?) \| lr ([0-9.eE+-]+)")
_VALIDATION_LINE = re.compile(r"\[validation\] epoch (\d+): (.*)")
_PERCENT = re.compile(r"(?:(pretrained|untrained) )?([0-9.]+)%")  # "80.00%", "untrained 42.50%"
_CHECKPOINT_LINE = re.compile(r"checkpoint .*: step (\d+),")


def read_scalars(run_dir: str) -> dict[str, list[tuple[int, float]]]:
    """A run's logged scalars by TensorBoard name ("train/mdm", "val/svm_acc_percent", ...) as
    (step, value) lists: from <run>/tensorboard when it has events, else parsed from log.txt."""
    events = glob.glob(os.path.join(run_dir, TENSORBOARD_DIR, "events.out.tfevents.*"))
    if events:
        scalars = _tensorboard_scalars(os.path.join(run_dir, TENSORBOARD_DIR))
        if scalars is not None:
            return scalars
    log_path = os.path.join(run_dir, LOG_NAME)
    if not os.path.isfile(log_path):
        raise InputError(f"{run_dir} has no {LOG_NAME} (and no TensorBoard scalars): not a "
                         "recon-fast run folder, no curves to draw")
    with open(log_path, errors="replace") as f:
        return parse_log(f.read().splitlines())


def _tensorboard_scalars(folder: str) -> Optional[dict[str, list[tuple[int, float]]]]:
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return None
    accumulator = EventAccumulator(folder, size_guidance={"scalars": 0})  # 0: keep every value
    accumulator.Reload()
    return {tag: [(e.step, float(e.value)) for e in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


def parse_log(lines: Sequence[str]) -> dict[str, list[tuple[int, float]]]:
    """The scalars of a log.txt, named as TensorBoard names them. Step lines carry their step;
    an epoch's "done" and validation lines take the step of the checkpoint line that follows
    them (the trainer logs the epoch end, validates, then checkpoints)."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    pending: list[tuple[str, float]] = []
    last_step = 0

    def add(name: str, value: float, step: Optional[int]) -> None:
        if step is None:
            pending.append((name, value))
        else:
            scalars.setdefault(name, []).append((step, value))

    for line in lines:
        if match := _STEP_LINE.search(line):
            step = int(match.group(3)) if match.group(3) else None
            pairs = match.group(4).split()
            for name, value in zip(pairs[::2], pairs[1::2]):
                add(f"train/{name}_percent" if name == "acc" else f"train/{name}", float(value), step)
            add("train/lr", float(match.group(5)), step)
            last_step = step if step is not None else last_step
        elif match := _VALIDATION_LINE.search(line):
            add_validation(match.group(2), add)
        elif match := _CHECKPOINT_LINE.search(line):
            last_step = int(match.group(1))
            for name, value in pending:
                add(name, value, last_step)
            pending.clear()
    for name, value in pending:  # no checkpoint line after them: the last step seen
        add(name, value, last_step)
    return scalars


def add_validation(text: str, add) -> None:
    """A validation line's accuracies: the first percentage (or the one marked "pretrained") is
    the metric, one marked "untrained" the untrained model's (the learning-signal check)."""
    kind = "svm_acc" if "SVM" in text else "acc"
    found = {}
    for tag, value in _PERCENT.findall(text):
        found.setdefault("_untrained" if tag == "untrained" else "", float(value))
    for suffix, value in found.items():
        add(f"val/{kind}{suffix}_percent", value, None)


def curve_panels(scalars: dict[str, list[tuple[int, float]]]) -> list[str]:
    """The names to draw, one panel each: the total loss, each loss term, then validation."""
    train = [n for n in scalars if n.startswith("train/")
             and n not in ("train/lr", "train/samples_per_s")]
    train.sort(key=lambda n: (n != "train/loss", n))
    # An untrained model's accuracy shares its metric's panel (see untrained_companion).
    validation = [n for n in scalars if n.startswith("val/")
                  and not (n.endswith(UNTRAINED) and _metric_of(n) in scalars)]
    return train + sorted(validation)


UNTRAINED = "_untrained_percent"


def _metric_of(untrained_name: str) -> str:
    return untrained_name[: -len(UNTRAINED)] + "_percent"


def untrained_companion(name: str, scalars) -> Optional[str]:
    """val/svm_acc_percent -> val/svm_acc_untrained_percent when the run logged it."""
    companion = name[: -len("_percent")] + UNTRAINED if name.endswith("_percent") else None
    return companion if companion in scalars else None


def render_curves(scalars: dict[str, list[tuple[int, float]]], path: str, title: str) -> str:
    """Write one panel per loss term (and per validation metric) over steps to `path`."""
    names = curve_panels(scalars)
    if not names:
        raise InputError(f"{title}: the run logged no losses yet (no step or epoch lines); no "
                         "curves to draw")
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    width, height = CURVES_PIXELS
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(width / DPI, height / DPI), dpi=DPI,
                             squeeze=False)
    for ax, name in zip(axes.flat, names):
        steps, values = zip(*sorted(scalars[name]))
        ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3,
                color="#c44e52" if name.startswith("val/") else "#4c72b0", label="pretrained")
        companion = untrained_companion(name, scalars)
        if companion is not None:
            ax.plot(*zip(*sorted(scalars[companion])), marker="s", markersize=3, ls="--",
                    color="#777777", label="untrained")
            ax.legend(fontsize=8)
        ax.set_title(name)
        ax.set_xlabel("step (batches trained)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.08, top=0.9, hspace=0.45, wspace=0.25)
    return _save(fig, plt, path)


# ------------------------------------------------------------------------ the command


def _save(fig, plt, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        fig.savefig(path, dpi=DPI)  # no bbox_inches="tight": the size stays fixed
    finally:
        plt.close(fig)
    return path


def visualize(target_path: str, *, config_name: Optional[str] = None,
              overrides: Sequence[str] = (), clouds: int = 4, point_files: Sequence[str] = (),
              out_dir: Optional[str] = None, seed: int = 0, device: str = "cpu",
              data_root: str = ".", cache_dir: Optional[str] = None) -> list[str]:
    """Write the pictures for a checkpoint or run folder; returns the PNG paths.

    A run folder gives its training curves (curves.png) and, when it holds a checkpoint, the
    reconstructions of `clouds` clouds of its training set (or of `point_files`), one PNG each.
    A checkpoint file gives the reconstructions. Default out_dir: <folder>/pictures.
    """
    pyplot()  # a missing matplotlib is reported before any work
    if isinstance(clouds, bool) or not isinstance(clouds, int) or clouds < 1:
        raise InputError(f"--clouds must be an integer >= 1, got {clouds!r}")
    target = resolve_target(target_path)
    home = target.run_dir or os.path.dirname(os.path.abspath(target.checkpoint))
    out_dir = out_dir or os.path.join(home, "pictures")
    written = []
    if target.run_dir is not None:
        scalars = read_scalars(target.run_dir)
        written.append(render_curves(scalars, os.path.join(out_dir, "curves.png"),
                                     f"training curves of {target.run_dir}"))
    if target.checkpoint is None:
        if point_files or config_name:
            raise CheckpointNotFoundError(f"{target.run_dir} holds no checkpoint "
                                          f"({' or '.join(CHECKPOINT_NAMES)}): no reconstructions")
        return written
    written += _reconstructions(target, config_name, overrides, clouds, point_files, out_dir,
                                seed, device, data_root, cache_dir)
    return written


def _reconstructions(target: Target, config_name, overrides, clouds, point_files, out_dir, seed,
                     device, data_root, cache_dir) -> list[str]:
    from recon_fast.train.runtime import resolve_device
    from recon_fast.train.state import seed_everything

    config, model_config = model_config_section(target.checkpoint, config_name, overrides,
                                                target.run_dir)
    torch_device = resolve_device(device)
    model = load_pretraining_model(target.checkpoint, model_config, torch_device)
    seed_everything(seed)  # datasets that draw points per item draw the same ones
    if point_files:
        named = [(path, read_point_file(path)) for path in point_files]
    elif config is None or "train" not in config.get("dataset", {}):
        raise ConfigError(f"{target.checkpoint}: no config with a dataset.train to draw clouds "
                          "from; pass --config (the run's config) or --points FILE")
    else:
        named = clouds_from_dataset(config, clouds, data_root, cache_dir)
    npoints = int(config.get("npoints", 1024)) if config is not None else 1024
    named = [(name, fit_cloud(points, npoints, seed, name, model_config)) for name, points in named]
    drawn = reconstruct_clouds(model, named, torch_device, seed)
    return [render_reconstruction(cloud, os.path.join(out_dir, f"reconstruction-{i}.png"))
            for i, cloud in enumerate(drawn)]
