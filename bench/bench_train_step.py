"""End-to-end training steps: recon_fast's runtime vs the model run the way the official code runs.

Pretraining step (ReCon-base on GPU, batch 128, 1024 points):
  recon_fast: bf16 autocast, torch.compile, Triton attention ("auto"), teacher features looked up
              from caches (the exact text table; per-view image features);
  reference:  the same model in fp32 eager with the official attention maths ("eager") and the
              teachers run online every step (timm ViT-B/16 on the 224px render, CLIP ViT-B/32 on
              the tokenised prompts). Both use recon_fast's point ops for grouping and Chamfer
              (the official code uses CUDA extensions there too), so the comparison is about the
              runtime, not about a slow torch FPS loop.
Finetuning step (ScanObjectNN shape, batch 32, 2048 points, 128 groups): bf16 + compile vs fp32
eager. Rows report median step time; the summary's speed-up is samples/s ours over reference;
peak GPU memory of both is printed. Parity (same weights, same inputs) is checked in fp32 first.
On the CPU a tiny configuration runs the same code paths (no targets).
"""

import pytest
import torch

from harness import OURS, REFERENCE, cached, cases, record
from recon_fast import ops
from recon_fast.model import ReConConfig, build_model
from targets import gpu_target

# (name, model size, batch, points, target speed-up)
PRETRAIN_CPU = [("tiny-B4", "tiny", 4, 1024, None)]
PRETRAIN_GPU = [("base-B128", "base", 128, 1024, gpu_target("pretrain step", "base-B128"))]
FINETUNE_CPU = [("tiny-B4-N2048", "tiny", 4, 2048, None)]
FINETUNE_GPU = [("base-B32-N2048", "base", 32, 2048,
                 gpu_target("finetune step", "base-B32-N2048"))]
TEXT_DIM, IMAGE_DIM = 512, 768


def _config(size: str, **changes) -> ReConConfig:
    cfg = ReConConfig.base() if size == "base" else ReConConfig.tiny()
    return ReConConfig(**{**cfg.to_dict(), **changes})


class CLIPTextTower(torch.nn.Module):
    """CLIP ViT-B/32's text encoder shape (12 pre-norm layers of width 512, 8 heads, MLP 2048,
    causal mask over 77 tokens, the end token's feature projected): the same work as
    open_clip's encode_text, for machines without open_clip."""

    def __init__(self, vocab=49408, context=77, width=512, layers=12, heads=8):
        super().__init__()
        self.token_embedding = torch.nn.Embedding(vocab, width)
        self.positional_embedding = torch.nn.Parameter(torch.randn(context, width) * 0.01)
        layer = torch.nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0,
                                                 activation="gelu", batch_first=True,
                                                 norm_first=True)
        self.transformer = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.ln_final = torch.nn.LayerNorm(width)
        self.text_projection = torch.nn.Linear(width, width, bias=False)
        self.register_buffer("causal", torch.full((context, context), float("-inf")).triu(1))

    def encode_text(self, tokens):
        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.ln_final(self.transformer(x, mask=self.causal, is_causal=True))
        return self.text_projection(x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)])


def clip_text_tower():
    """open_clip's random-weight ViT-B-32 when installed, else the same-shaped stand-in."""
    try:
        import open_clip
    except ImportError:
        return CLIPTextTower()
    return open_clip.create_model("ViT-B-32", pretrained=None)


class OnlineTeachers(torch.nn.Module):
    """The official per-step teacher work: a ViT-B/16 on the render, CLIP text on the prompt
    tokens (random weights: the cost is what is measured)."""

    def __init__(self, device):
        super().__init__()
        import timm

        self.image = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
        self.text = clip_text_tower()
        self.to(device).eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, images, tokens):
        return self.image(images), self.text.encode_text(tokens)


def _pretrain_setup(device, case, provider):
    name, size, B, N, _ = case
    torch.manual_seed(0)
    backend = "auto" if provider == OURS else "eager"
    model = build_model(_config(size, attention_backend=backend, img_feature_dim=IMAGE_DIM,
                                text_feature_dim=TEXT_DIM)).to(device)
    points = torch.rand(B, N, 3, device=device) * 2 - 1
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    img_feature = torch.randn(B, IMAGE_DIM, device=device)
    text_feature = torch.randn(B, TEXT_DIM, device=device)
    if provider == OURS:
        table = torch.randn(55, 20, 3, TEXT_DIM, device=device)  # the cached text table
        labels = torch.randint(0, 55, (B,), device=device)
        prefix, suffix = torch.randint(0, 20, (B,), device=device), torch.randint(0, 3, (B,), device=device)
        forward = torch.compile(model) if device.type == "cuda" else model

        def step():
            text = table[labels, prefix, suffix]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss, _ = forward(points, img_feature, text)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss
    else:
        teachers = OnlineTeachers(device) if device.type == "cuda" else None
        images = torch.randn(B, 3, 224, 224, device=device)
        tokens = torch.randint(0, 49408, (B, 77), device=device)

        def step():
            img, text = (teachers(images, tokens) if teachers is not None
                         else (img_feature, text_feature))
            loss, _ = model(points, img.float(), text.float())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss
    return model, step


@pytest.mark.parametrize("device,case", cases(PRETRAIN_CPU, PRETRAIN_GPU))
def test_pretrain_step_parity(device, case):
    """Same weights and inputs: the recon_fast attention backend and the official maths agree."""
    name, size, B, N, _ = case
    torch.manual_seed(0)
    ours = build_model(_config(size, attention_backend="auto", drop_path_rate=0.0)).to(device)
    ref = build_model(_config(size, attention_backend="eager", drop_path_rate=0.0)).to(device)
    ref.load_state_dict(ours.state_dict())
    points = torch.rand(B, N, 3, device=device) * 2 - 1
    img, text = torch.randn(B, IMAGE_DIM, device=device), torch.randn(B, TEXT_DIM, device=device)
    center = ops.group(points, ours.config.num_group, ours.config.group_size).center
    mask = ours.random_mask(center)  # the same mask for both
    with torch.no_grad():
        a, _ = ours(points, img, text, mask=mask)
        b, _ = ref(points, img, text, mask=mask)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("provider", [OURS, REFERENCE])
@pytest.mark.parametrize("device,case", cases(PRETRAIN_CPU, PRETRAIN_GPU))
def test_pretrain_step(benchmark, device, case, provider):
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model, step = cached(("pretrain-step", device.type, case[0], provider),
                         lambda: _pretrain_setup(device, case, provider))
    step()  # compile / warm up outside the timing
    record(benchmark, step, op="pretrain step", case=case[0], dtype=torch.float32, device=device,
           provider=provider, rounds=5 if device.type == "cuda" else 2,
           target=case[4] if provider == OURS else None)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
        print(f"\n{provider} pretrain step {case[0]}: peak GPU memory {peak:.2f} GiB, "
              f"{case[2] / (benchmark.stats.stats.median):.0f} samples/s")


def _finetune_setup(device, case, provider):
    name, size, B, N, _ = case
    torch.manual_seed(0)
    backend = "auto" if provider == OURS else "eager"
    model = build_model(_config(size, name="PointTransformer", cls_dim=15, num_group=128,
                                drop_path_rate=0.2, attention_backend=backend)).to(device)
    points = torch.rand(B, N, 3, device=device) * 2 - 1
    labels = torch.randint(0, 15, (B,), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    use_bf16 = provider == OURS and device.type == "cuda"
    forward = torch.compile(model) if use_bf16 else model

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits = forward(points)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return model, step


@pytest.mark.parametrize("provider", [OURS, REFERENCE])
@pytest.mark.parametrize("device,case", cases(FINETUNE_CPU, FINETUNE_GPU))
def test_finetune_step(benchmark, device, case, provider):
    device = torch.device(device)
    _, step = cached(("finetune-step", device.type, case[0], provider),
                     lambda: _finetune_setup(device, case, provider))
    step()
    record(benchmark, step, op="finetune step", case=case[0], dtype=torch.float32, device=device,
           provider=provider, rounds=5 if device.type == "cuda" else 2,
           target=case[4] if provider == OURS else None)
