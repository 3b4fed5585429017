"""One dataclass configures every ReCon model; it reads the official YAML ``model:`` sections.

The official code configures its pretraining model with a nested ``transformer_config`` and its
downstream models (``PointTransformer``, ``PointTransformerZeroShot``, ``PointTransformerSVM``)
with flat keys; :meth:`ReConConfig.from_official` accepts both. Teacher encoders are named in the
official configs (``img_encoder: vit_base_patch16_224_in21k``); the model only needs the width of
their features, looked up in :data:`TEACHER_FEATURE_DIMS`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from recon_fast.errors import ConfigError, ConfigNotFoundError
from recon_fast.ops.validate import is_int

# Width of the features each teacher produces: timm ViTs give their embed_dim, CLIP image towers
# their projection width (visual.output_dim), CLIP text towers the transformer width (the
# official TextTransformer.embed_dim, which sizes text_proj).
IMAGE_TEACHER_DIMS = {
    "vit_base_patch16_224_in21k": 768,
    "vit_base_patch16_224": 768,
    "vit_large_patch16_224_in21k": 1024,
    "ViT-B/32": 512,
    "ViT-B/16": 512,
    "ViT-L/14": 768,
    "ViT-L/14@336px": 768,
    "ViT-bigG-14": 1280,  # OpenCLIP, OpenShape's / ReCon++'s teacher (features in packed shards)
}
TEXT_TEACHER_DIMS = {
    "ViT-B/32": 512,
    "ViT-B/16": 512,
    "ViT-L/14": 768,
    "ViT-L/14@336px": 768,
    "ViT-bigG-14": 1280,
}
TEACHER_FEATURE_DIMS = {"image": IMAGE_TEACHER_DIMS, "text": TEXT_TEACHER_DIMS}

HEAD_TYPES = ("full", "linear", "mlp3")
ZEROSHOT_TYPES = ("full", "text", "image")
MASK_TYPES = ("rand", "block")
LOSSES = ("cdl2", "cdl1")
MODEL_NAMES = ("ReCon", "PointTransformer", "PointTransformerZeroShot", "PointTransformerSVM")

# Keys of the official model sections that carry no model hyper-parameter here.
_IGNORED_OFFICIAL_KEYS = {"NAME", "self_contrastive", "transformer_config"}


@dataclass
class ReConConfig:
    """Hyper-parameters of the ReCon student, its pretraining decoder and its downstream heads.

    Defaults are the official base model (cfgs/pretrain/base.yaml). Fields used only by one
    model are grouped; the others ignore them.
    """

    name: str = "ReCon"  # official model NAME: which model build_model makes
    # Grouping: each cloud becomes num_group patches of group_size points.
    num_group: int = 64
    group_size: int = 32
    # Student transformer.
    trans_dim: int = 384
    encoder_dims: int = 384  # the mini-PointNet output; the official code needs == trans_dim
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.1
    attention_backend: str = "auto"  # passed to recon_fast.attention ("auto"|"sdpa"|"eager"|...)
    # Pretraining (ReCon).
    mask_ratio: float = 0.6
    mask_type: str = "rand"
    decoder_depth: int = 4
    decoder_num_heads: int = 6
    loss: str = "cdl2"
    img_feature_dim: int | None = 768  # None: no image distillation (no img_proj)
    text_feature_dim: int | None = 512  # None: no text distillation (no text_proj)
    # Classification finetuning (PointTransformer): official `type` and `cls_dim`.
    head_type: str = "full"
    cls_dim: int = 40
    # Zero-shot (PointTransformerZeroShot): official `type` and `ratio`.
    zeroshot_type: str = "full"
    zeroshot_ratio: float = 0.25
    extra: dict = field(default_factory=dict, repr=False)  # official keys kept for reference

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ValueError naming the first field whose value cannot build a model."""
        for name in ("num_group", "group_size", "trans_dim", "encoder_dims", "depth", "num_heads",
                     "decoder_depth", "decoder_num_heads", "cls_dim"):
            _check_positive_int(name, getattr(self, name))
        if self.encoder_dims != self.trans_dim:
            raise ConfigError(f"encoder_dims ({self.encoder_dims}) must equal trans_dim "
                             f"({self.trans_dim}): patch features are used as tokens directly")
        for heads_name in ("num_heads", "decoder_num_heads"):
            heads = getattr(self, heads_name)
            if self.trans_dim % heads:
                raise ConfigError(f"trans_dim ({self.trans_dim}) must be divisible by "
                                 f"{heads_name} ({heads})")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ConfigError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        if not self.mlp_ratio > 0:
            raise ConfigError(f"mlp_ratio must be positive, got {self.mlp_ratio}")
        num_masked = int(self.mask_ratio * self.num_group)
        if not 0 < num_masked < self.num_group:
            raise ConfigError(
                f"mask_ratio={self.mask_ratio} masks {num_masked} of num_group={self.num_group} "
                "patches; pretraining needs at least one masked and one visible patch")
        _check_choice("name", self.name, MODEL_NAMES)
        _check_choice("mask_type", self.mask_type, MASK_TYPES)
        _check_choice("loss", self.loss, LOSSES)
        _check_choice("head_type", self.head_type, HEAD_TYPES)
        _check_choice("zeroshot_type", self.zeroshot_type, ZEROSHOT_TYPES)
        for name in ("img_feature_dim", "text_feature_dim"):
            if getattr(self, name) is not None:
                _check_positive_int(name, getattr(self, name))
        if not isinstance(self.attention_backend, str):
            raise ConfigError(f"attention_backend must be a string, got {self.attention_backend!r}")

    @property
    def num_masked(self) -> int:
        """Masked patches per cloud in pretraining: int(mask_ratio * num_group), as officially."""
        return int(self.mask_ratio * self.num_group)

    # ------------------------------------------------------------------ presets
    @classmethod
    def base(cls, **overrides: Any) -> "ReConConfig":
        """cfgs/pretrain/base.yaml: trans_dim 384, 6 heads, depth 12."""
        return cls(**overrides)

    @classmethod
    def small(cls, **overrides: Any) -> "ReConConfig":
        """cfgs/pretrain/small.yaml: trans_dim 256, 4 heads, depth 12."""
        sizes = dict(trans_dim=256, encoder_dims=256, num_heads=4, decoder_num_heads=4)
        return cls(**{**sizes, **overrides})

    @classmethod
    def tiny(cls, **overrides: Any) -> "ReConConfig":
        """cfgs/pretrain/tiny.yaml: trans_dim 192, 3 heads, depth 12."""
        sizes = dict(trans_dim=192, encoder_dims=192, num_heads=3, decoder_num_heads=3)
        return cls(**{**sizes, **overrides})

    # ------------------------------------------------------------------ official configs
    @classmethod
    def from_official(cls, model: Mapping[str, Any], **overrides: Any) -> "ReConConfig":
        """Build from an official ``model:`` section (a dict as loaded from the YAML).

        Accepts the pretraining layout (``NAME: ReCon`` with a nested ``transformer_config``)
        and the downstream layout (flat keys, ``NAME: PointTransformer`` etc.). Teacher names
        (``img_encoder``, ``text_encoder``) become feature widths; a name not in
        :data:`TEACHER_FEATURE_DIMS` needs ``img_feature_dim`` / ``text_feature_dim`` given.
        Keyword overrides win over the section (e.g. ``attention_backend="sdpa"``).
        """
        if not isinstance(model, Mapping):
            raise ConfigError(f"model must be a mapping (the YAML 'model' section), got "
                             f"{type(model).__name__}")
        if "model" in model and isinstance(model["model"], Mapping):
            model = model["model"]  # a whole config file was passed
        flat = dict(model)
        nested = flat.get("transformer_config")
        if isinstance(nested, Mapping) and nested is not model:
            flat = {**flat, **dict(nested)}
        if flat.get("self_contrastive"):
            raise ConfigError("self_contrastive: true is not supported (the published ReCon "
                             "configs turn it off)")
        name = flat.get("NAME", "ReCon")
        values: dict[str, Any] = {"name": name}
        fields = {f.name for f in dataclasses.fields(cls)} - {"extra", "name"}
        extra = {}
        for key, value in flat.items():
            if key in _IGNORED_OFFICIAL_KEYS:
                continue
            if key == "type":
                zeroshot = name == "PointTransformerZeroShot"
                values["zeroshot_type" if zeroshot else "head_type"] = value
            elif key == "ratio":
                values["zeroshot_ratio"] = value
            elif key == "img_encoder":
                values.setdefault("img_feature_dim", _teacher_dim("image", value, flat))
            elif key == "text_encoder":
                values.setdefault("text_feature_dim", _teacher_dim("text", value, flat))
            elif key in fields:
                values[key] = value
            else:
                extra[key] = value
        if name == "ReCon":
            # A pretraining section without a teacher has no projection head for it.
            values.setdefault("img_feature_dim", None)
            values.setdefault("text_feature_dim", None)
        values.update(overrides)
        return cls(**values, extra=extra)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> "ReConConfig":
        """Read an official (or our) config file and build from its ``model:`` section."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ConfigNotFoundError(f"config file not found: {path}")
        with open(path) as f:
            data = yaml.safe_load(f)
        if not isinstance(data, Mapping) or "model" not in data:
            seen = sorted(data) if isinstance(data, Mapping) else type(data).__name__
            raise ConfigError(f"{path} has no 'model' section (top level: {seen})")
        return cls.from_official(data["model"], **overrides)

    def to_dict(self) -> dict:
        """Plain dict of the fields (safe to store in a weights_only checkpoint)."""
        return dataclasses.asdict(self)


def _teacher_dim(kind: str, teacher: Any, section: Mapping[str, Any]) -> int | None:
    explicit = section.get(f"{'img' if kind == 'image' else 'text'}_feature_dim")
    if explicit is not None:
        return explicit
    if not teacher:
        return None
    table = TEACHER_FEATURE_DIMS[kind]
    if teacher not in table:
        field_name = "img_feature_dim" if kind == "image" else "text_feature_dim"
        raise ConfigError(f"unknown {kind} teacher {teacher!r}: its feature width is not known; "
                         f"known: {sorted(table)}; give {field_name} in the model section")
    return table[teacher]


def _check_positive_int(name: str, value: Any) -> None:
    if not is_int(value) or value < 1:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {choices}, got {value!r}")
