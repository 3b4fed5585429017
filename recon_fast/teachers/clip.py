"""Frozen CLIP teachers (open_clip): the text encoder and the image encoder of ViT-B/32.

Text feature: EOT-token output after ``ln_final``, times ``text_projection`` (512-d), prompts
tokenised to 77 tokens as ``clip.tokenize`` does (start token, BPE, end token, zero padding; too
long prompts are an error, not silently truncated). Image feature: ``ln_post`` of the class token
times ``proj`` (512-d) of an ImageNet-normalised (3, 224, 224) image - the official pipeline feeds
CLIP the same ImageNet-normalised, BGR-ordered tensor the ViT teacher gets.

Weights (``weights=``):
  * a file path: the OpenAI ``ViT-B-32.pt`` (TorchScript), or an open_clip ``.bin``/``.pt``/
    ``.safetensors`` state dict;
  * a pretrained tag such as "openai" (default): looked up, never downloaded, in
    ``~/.cache/clip/`` (where the official code and open_clip store OpenAI files) and in the
    Hugging Face hub cache open_clip uses;
  * "random": seeded random initialisation, with a RandomTeacherWarning (smoke runs only).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch
from torch import nn

from recon_fast.errors import TeacherWeightsNotFoundError

from recon_fast.teachers.weights import (RANDOM, WeightsSource, file_source, first_existing,
                                         hf_cached_file, load_into, load_state_dict_file,
                                         random_source)

DEFAULT_CLIP_MODEL = "ViT-B-32"
DEFAULT_CLIP_WEIGHTS = "openai"


def __getattr__(name: str):
    if name == "CONTEXT_LENGTH":  # a fixed 77 used to live here; the weights say the length
        raise AttributeError("CONTEXT_LENGTH was removed: the prompt length comes from the "
                             "weights, see CLIPTextTeacher.context_length")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class TeacherIdentity:
    """Everything that changes a teacher's features; cache keys are built from it."""

    family: str                 # "open_clip" or "timm"
    model: str                  # e.g. "ViT-B-32"
    tower: str                  # "text" or "image"
    weights: str                # WeightsSource.tag
    library_version: str
    options: tuple = field(default_factory=tuple)   # sorted (name, value) pairs

    def as_dict(self) -> dict:
        return {"family": self.family, "model": self.model, "tower": self.tower,
                "weights": self.weights, "library_version": self.library_version,
                "options": [list(o) for o in self.options]}


def _open_clip():
    try:
        import open_clip
    except ImportError as e:
        raise ImportError("CLIP teachers need open_clip_torch (pip install open_clip_torch)") from e
    return open_clip


@functools.lru_cache(maxsize=4)
def _tokenizer(context_length: int):
    """CLIP's BPE tokenizer (loading its merge table takes ~0.1 s, so share it)."""
    return _open_clip().tokenizer.SimpleTokenizer(context_length=context_length)


def clip_weight_candidates(model_name: str, tag: str,
                           cache_dir: Optional[str] = None) -> list[str]:
    """Local places a previous download of (model_name, tag) would have left its file."""
    open_clip = _open_clip()
    cfg = open_clip.get_pretrained_cfg(model_name, tag) or {}
    candidates = []
    url_name = os.path.basename(cfg.get("url", "")) if cfg.get("url") else None
    if url_name:
        for folder in (cache_dir, os.path.expanduser("~/.cache/clip")):
            if folder:
                candidates.append(os.path.join(folder, url_name))
    hub = cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)  # "org/model/" means open_clip's default file names
        names = [filename] if filename else ["open_clip_model.safetensors",
                                              "open_clip_pytorch_model.bin"]
        found = hf_cached_file(repo, names)
        if found:
            candidates.append(found)
    return candidates


def resolve_clip_weights(model_name: str, weights: Union[str, os.PathLike], seed: int = 0,
                         cache_dir: Optional[str] = None) -> WeightsSource:
    """Turn the `weights` argument into a file (hashed) or a random seed; never downloads."""
    weights = os.fspath(weights)
    if weights == RANDOM:
        return random_source(seed, f"CLIP {model_name} teacher")
    if os.path.sep in weights or os.path.isfile(os.path.expanduser(weights)):
        return file_source(weights)
    open_clip = _open_clip()
    if not open_clip.get_pretrained_cfg(model_name, weights):
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise TeacherWeightsNotFoundError(f"teacher weights {weights!r} is neither a file nor a pretrained tag of "
                         f"{model_name} (tags: {tags}); pass a file path or 'random'")
    candidates = clip_weight_candidates(model_name, weights, cache_dir)
    found = first_existing(candidates)
    if found is None:
        cfg = open_clip.get_pretrained_cfg(model_name, weights)
        hub = os.path.split(cfg.get("hf_hub", ""))[0]
        places = candidates + ([f"the Hugging Face hub cache of {hub}"] if hub else [])
        looked = ", ".join(places) or "~/.cache/clip"
        raise TeacherWeightsNotFoundError(
            f"No local weights for CLIP {model_name} ({weights}); nothing is downloaded. Looked "
            f"in: {looked}. Provide them with teacher_weights=/path/to/file (the OpenAI "
            f"'ViT-B-32.pt' that the official ReCon code saves in ~/.cache/clip/, or an open_clip "
            f".bin/.safetensors state dict), copy that file into ~/.cache/clip/, or pass "
            f"teacher_weights='random' for a smoke run (features are then meaningless).")
    return file_source(found)


def build_clip(model_name: str = DEFAULT_CLIP_MODEL,
               weights: Union[str, os.PathLike] = DEFAULT_CLIP_WEIGHTS, *, seed: int = 0,
               quick_gelu: bool = True, cache_dir: Optional[str] = None
               ) -> tuple[nn.Module, WeightsSource]:
    """Create an open_clip model on the CPU in float32 with local (or seeded random) weights.

    `quick_gelu` must match the weights: True for OpenAI CLIP (the ReCon teacher).
    """
    open_clip = _open_clip()
    source = resolve_clip_weights(model_name, weights, seed, cache_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(source.seed if source.is_random else 0)
        model = open_clip.create_model(model_name, pretrained=None, force_quick_gelu=quick_gelu,
                                       pretrained_text=False)
    if not source.is_random:
        state = load_state_dict_file(source.path)
        # Extras of TorchScript archives (OpenAI's hyper-parameters; the causal mask that
        # open_clip keeps as a non-persistent buffer but a traced model saves).
        for key in ("input_resolution", "context_length", "vocab_size", "attn_mask"):
            state.pop(key, None)
        load_into(model, state, source.path)
    return model.float().eval(), source


class _FrozenTeacher(nn.Module):
    """Common frozen behaviour: no gradients, always eval mode, optional bf16 autocast on CUDA."""

    identity: TeacherIdentity
    output_dim: int

    def _freeze(self, autocast: bool) -> None:
        self.autocast = autocast
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "_FrozenTeacher":
        return self  # a teacher never leaves eval mode (no dropout, fixed norms)

    def _autocast(self, device: torch.device):
        enabled = self.autocast and device.type == "cuda"
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled)


class CLIPTextTeacher(_FrozenTeacher):
    """Frozen CLIP text tower: prompts -> (B, 512) float32 features.

    Args:
        model: an open_clip CLIP model (from :func:`build_clip`); only its text tower is kept.
        source: where its weights came from (part of the identity).
        autocast: run in bf16 autocast on CUDA (features are returned as float32).
    """

    def __init__(self, model: nn.Module, source: WeightsSource,
                 model_name: str = DEFAULT_CLIP_MODEL, *, autocast: bool = True,
                 quick_gelu: bool = True):
        super().__init__()
        open_clip = _open_clip()
        self.token_embedding = model.token_embedding
        self.positional_embedding = model.positional_embedding
        self.transformer = model.transformer
        self.ln_final = model.ln_final
        self.text_projection = model.text_projection
        self.register_buffer("attn_mask", model.attn_mask, persistent=False)
        self.context_length = int(model.positional_embedding.shape[0])
        self.output_dim = int(model.text_projection.shape[1])
        self.tokenizer = _tokenizer(self.context_length)
        self.identity = TeacherIdentity("open_clip", model_name, "text", source.tag,
                                        open_clip.__version__, (("quick_gelu", quick_gelu),))
        self._freeze(autocast)

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        """(B,) strings -> (B, context_length) int64: start, BPE tokens, end, zero padding."""
        tok = self.tokenizer
        rows = torch.zeros(len(prompts), self.context_length, dtype=torch.int64)
        for i, prompt in enumerate(prompts):
            ids = [tok.sot_token_id] + tok.encode(prompt) + [tok.eot_token_id]
            if len(ids) > self.context_length:
                raise ValueError(f"prompt is {len(ids)} tokens, longer than the context length "
                                 f"{self.context_length}: {prompt!r}")
            rows[i, : len(ids)] = torch.tensor(ids)
        return rows

    @torch.no_grad()
    def forward(self, prompts: Union[Sequence[str], torch.Tensor]) -> torch.Tensor:
        tokens = prompts if isinstance(prompts, torch.Tensor) else self.tokenize(list(prompts))
        device = self.token_embedding.weight.device
        tokens = tokens.to(device)
        # The mask is causal, so nothing after the longest prompt's end token can reach any end
        # token: trimming the padding gives the same features for a fraction of the work.
        length = int(tokens.argmax(dim=-1).max()) + 1 if tokens.numel() else tokens.shape[1]
        tokens = tokens[:, :length]
        with self._autocast(device):
            x = self.token_embedding(tokens) + self.positional_embedding[:length]  # (B, L, W)
            x = self.transformer(x, attn_mask=self.attn_mask[:length, :length])
            x = self.ln_final(x)
            # The end token has the largest id, so argmax finds it (as in CLIP).
            eot = x[torch.arange(x.shape[0], device=device), tokens.argmax(dim=-1)]  # (B, W)
            projection = self.text_projection
            features = projection(eot) if isinstance(projection, nn.Linear) else eot @ projection
        return features.float()


class CLIPImageTeacher(_FrozenTeacher):
    """Frozen CLIP image tower: (B, 3, 224, 224) normalised images -> (B, 512) float32."""

    def __init__(self, model: nn.Module, source: WeightsSource,
                 model_name: str = DEFAULT_CLIP_MODEL, *, autocast: bool = True,
                 quick_gelu: bool = True):
        super().__init__()
        open_clip = _open_clip()
        self.visual = model.visual
        self.output_dim = int(model.visual.output_dim)
        self.identity = TeacherIdentity("open_clip", model_name, "image", source.tag,
                                        open_clip.__version__, (("quick_gelu", quick_gelu),))
        self._freeze(autocast)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
        device = next(self.visual.parameters()).device
        with self._autocast(device):
            # open_clip's ViT: ln_post on the class token, then @ proj (no normalisation).
            features = self.visual(images.to(device))
        return features.float()


def build_clip_teachers(model_name: str = DEFAULT_CLIP_MODEL,
                        weights: Union[str, os.PathLike] = DEFAULT_CLIP_WEIGHTS, *, seed: int = 0,
                        quick_gelu: bool = True, autocast: bool = True,
                        cache_dir: Optional[str] = None
                        ) -> tuple[CLIPTextTeacher, CLIPImageTeacher]:
    """Both CLIP towers from one set of weights (the zero-shot pretraining setting)."""
    model, source = build_clip(model_name, weights, seed=seed, quick_gelu=quick_gelu,
                               cache_dir=cache_dir)
    return (CLIPTextTeacher(model, source, model_name, autocast=autocast, quick_gelu=quick_gelu),
            CLIPImageTeacher(model, source, model_name, autocast=autocast, quick_gelu=quick_gelu))


def build_text_teacher(model_name: str = DEFAULT_CLIP_MODEL,
                       weights: Union[str, os.PathLike] = DEFAULT_CLIP_WEIGHTS, *, seed: int = 0,
                       quick_gelu: bool = True, autocast: bool = True,
                       cache_dir: Optional[str] = None) -> CLIPTextTeacher:
    """The ReCon text teacher (CLIP ViT-B/32 text encoder by default)."""
    model, source = build_clip(model_name, weights, seed=seed, quick_gelu=quick_gelu,
                               cache_dir=cache_dir)
    return CLIPTextTeacher(model, source, model_name, autocast=autocast, quick_gelu=quick_gelu)
