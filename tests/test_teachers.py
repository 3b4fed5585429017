"""CLIP / ViT teachers (random or local weights, never downloaded) and their feature caches."""

import dataclasses
import hashlib
import json
import logging
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from recon_fast.data import ShapeNet55, ShapeNetPaths, build_prompt
from recon_fast.teachers import (CLIPImageTeacher, CLIPTextTeacher, RandomTeacherWarning,
                                 TeacherWeightsError, ViTImageTeacher, build_clip,
                                 build_clip_teachers, build_image_feature_cache,
                                 build_text_feature_table, build_text_teacher)
import recon_fast.teachers.clip as clip_module

try:
    import open_clip
except ImportError:  # an optional dependency: its tests skip, the timm teacher's still run
    open_clip = None

needs_open_clip = pytest.mark.skipif(open_clip is None, reason="open_clip is not installed")

TINY = "recon-tiny-clip"  # a 1-layer CLIP so cache tests run in milliseconds


@pytest.fixture(scope="session", autouse=True)
def tiny_clip_config(tmp_path_factory):
    if open_clip is None:
        return
    path = tmp_path_factory.mktemp("open_clip_cfg") / f"{TINY}.json"
    path.write_text(json.dumps({
        "embed_dim": 24,
        "vision_cfg": {"image_size": 224, "layers": 1, "width": 32, "patch_size": 32,
                       "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                     "layers": 1}}))
    open_clip.add_model_config(str(path))


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomTeacherWarning)
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def tiny():
    model, source = quiet(build_clip, TINY, "random", seed=0)
    return model, CLIPTextTeacher(model, source, TINY), CLIPImageTeacher(model, source, TINY)


def official_image_feature(visual, images):
    """The official CrossModal.VisionTransformer steps for a CLIP ViT, written out."""
    with torch.no_grad():
        x = visual.conv1(images).flatten(2).transpose(1, 2)              # (B, grid**2, width)
        cls = visual.class_embedding.expand(x.shape[0], 1, -1)
        x = visual.ln_pre(torch.cat([cls, x], dim=1) + visual.positional_embedding)
        x = visual.transformer(x)
        return visual.ln_post(x[:, 0]) @ visual.proj


@needs_open_clip
def test_text_teacher_matches_open_clip_encode_text(tiny):
    model, text, _ = tiny
    prompts = ["A 3D model of a chair: a seat for one person with black context.", "A cube."]
    tokens = text.tokenize(prompts)
    assert torch.equal(tokens, open_clip.tokenize(prompts))  # clip.tokenize layout, 77 tokens
    with torch.no_grad():
        expected = model.encode_text(open_clip.tokenize(prompts))
    got = text(prompts)
    assert got.shape == (2, 24) and text.output_dim == 24 and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="longer than the context length 77"):
        text.tokenize(["word " * 80])


@needs_open_clip
def test_image_teacher_is_ln_post_of_class_token_times_proj(tiny):
    model, _, image = tiny
    images = torch.randn(3, 3, 224, 224)
    got = image(images)
    assert got.shape == (3, 24) and image.output_dim == 24
    torch.testing.assert_close(got, official_image_feature(model.visual, images),
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, H, W\)"):
        image(torch.randn(3, 224, 224))


@needs_open_clip
def test_vit_b32_teachers_with_random_weights():
    """The real CLIP ViT-B/32 architecture (512-d, context 77) runs with seeded random weights."""
    model, source = quiet(build_clip, "ViT-B-32", "random", seed=0)
    text, image = CLIPTextTeacher(model, source), CLIPImageTeacher(model, source)
    assert text.context_length == 77 and text.identity.model == "ViT-B-32"
    prompt = ["A point cloud model of a chair."]
    with torch.no_grad():
        expected = model.encode_text(open_clip.tokenize(prompt))
    torch.testing.assert_close(text(prompt), expected, atol=2e-5, rtol=1e-5)
    images = torch.randn(1, 3, 224, 224)
    got = image(images)
    assert text(prompt).shape == got.shape == (1, 512)
    torch.testing.assert_close(got, official_image_feature(model.visual, images), atol=2e-5,
                               rtol=1e-5)
    for teacher in (text, image):
        assert not any(p.requires_grad for p in teacher.parameters())


@needs_open_clip
def test_teachers_are_frozen(tiny):
    _, text, image = tiny
    for teacher in (text, image):
        assert not any(p.requires_grad for p in teacher.parameters())
        teacher.train()
        assert not teacher.training and not any(m.training for m in teacher.modules())
    images = torch.randn(1, 3, 224, 224, requires_grad=True)
    assert image(images).grad_fn is None and text(["a lamp."]).grad_fn is None


@needs_open_clip
def test_random_weights_are_loud_and_seeded(caplog):
    with caplog.at_level(logging.WARNING, logger="recon_fast.teachers"):
        with pytest.warns(RandomTeacherWarning, match="RANDOM weights"):
            a = build_text_teacher(TINY, "random", seed=1)
    assert any("RANDOM weights" in r.getMessage() for r in caplog.records)
    assert a.identity.weights == "random:seed=1"
    b = quiet(build_text_teacher, TINY, "random", seed=1)
    c = quiet(build_text_teacher, TINY, "random", seed=2)
    assert torch.equal(a(["a bed."]), b(["a bed."]))
    assert not torch.equal(a(["a bed."]), c(["a bed."]))


@needs_open_clip
def test_missing_weights_explain_how_to_provide_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # empty ~/.cache/clip
    monkeypatch.setattr(clip_module, "hf_cached_file", lambda *a, **k: None)
    with pytest.raises(FileNotFoundError) as info:
        build_text_teacher("ViT-B-32", "openai")
    message = str(info.value)
    assert "nothing is downloaded" in message and "teacher_weights='random'" in message
    assert str(tmp_path / ".cache" / "clip" / "ViT-B-32.pt") in message
    with pytest.raises(FileNotFoundError, match="teacher weights file not found: .*nope.pt"):
        build_text_teacher(TINY, str(tmp_path / "nope.pt"))
    with pytest.raises(ValueError, match="neither a file nor a pretrained tag"):
        build_text_teacher("ViT-B-32", "not-a-tag")


@needs_open_clip
def test_openai_weights_are_found_in_the_clip_cache(tmp_path, monkeypatch):
    model, _ = quiet(build_clip, TINY, "random", seed=4)
    (tmp_path / "clip").mkdir()
    torch.save(model.state_dict(), tmp_path / "clip" / "ViT-B-32.pt")
    found = clip_module.resolve_clip_weights("ViT-B-32", "openai", cache_dir=str(tmp_path / "clip"))
    assert found.path == str(tmp_path / "clip" / "ViT-B-32.pt")


@needs_open_clip
@pytest.mark.parametrize("fmt", ["torch", "safetensors", "torchscript"])
def test_weights_from_a_file(tmp_path, fmt):
    model, _ = quiet(build_clip, TINY, "random", seed=3)
    path = tmp_path / f"weights.{ {'torch': 'pt', 'safetensors': 'safetensors'}.get(fmt, 'jit')}"
    if fmt == "torch":
        torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    elif fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    else:  # like OpenAI's ViT-B-32.pt: a TorchScript archive with extra hyper-parameter entries
        model.register_buffer("input_resolution", torch.tensor(224))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, (torch.randn(1, 3, 224, 224),
                                             open_clip.tokenize(["x"])),
                                     strict=False, check_trace=False)
        traced.save(str(path))
    text, image = build_clip_teachers(TINY, str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert text.identity.weights == image.identity.weights == f"sha256:{digest}"
    with torch.no_grad():
        expected = model.encode_text(open_clip.tokenize(["a chair."]))
    torch.testing.assert_close(text(["a chair."]), expected, atol=1e-6, rtol=1e-6)


@needs_open_clip
def test_bad_weight_files_are_named(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(TeacherWeightsError, match="cannot read teacher weights .*garbage.pt"):
        build_text_teacher(TINY, str(garbage))
    model, _ = quiet(build_clip, TINY, "random")
    state = model.state_dict()
    state.pop("ln_final.weight")
    state["text_projection"] = torch.zeros(5, 5)
    partial = tmp_path / "partial.pt"
    torch.save(state, partial)
    with pytest.raises(TeacherWeightsError, match=r"partial.pt do not fit CLIP: missing: "
                                                  r"\['ln_final.weight'\]; shape mismatch: "
                                                  r"\['text_projection'\]"):
        build_text_teacher(TINY, str(partial))


# ---------------------------------------------------------------------------------- ViT teacher

def test_vit_teacher_rebuilds_the_in21k_pre_logits(tmp_path):
    import timm

    small = {"img_size": 32, "depth": 2}  # the ViT-Ti/16 layout, shrunk to run in milliseconds
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0,
                            **small).eval()
    fc = torch.nn.Linear(192, 192)
    state = dict(vit.state_dict())
    state.update({"pre_logits.fc.weight": fc.weight.detach(), "pre_logits.fc.bias": fc.bias.detach(),
                  "head.weight": torch.randn(7, 192), "head.bias": torch.randn(7)})
    torch.save(state, tmp_path / "in21k.pth")
    teacher = ViTImageTeacher("vit_tiny_patch16_224", str(tmp_path / "in21k.pth"),
                              model_kwargs=small)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        cls = vit.norm(vit.blocks(vit._pos_embed(vit.patch_embed(images))))[:, 0]
        expected = torch.tanh(fc(cls))
    torch.testing.assert_close(teacher(images), expected, atol=1e-5, rtol=1e-5)
    assert dict(teacher.identity.options)["pre_logits"] is True and teacher.output_dim == 192
    with pytest.warns(RandomTeacherWarning):
        plain = ViTImageTeacher("vit_tiny_patch16_224", "random", model_kwargs=small)
    assert plain(images).shape == (2, 192) and plain.pre_logits is None


# ---------------------------------------------------------------------------------- caches

CLASSES = ["chair: a seat for one person", "table: a flat top on four legs"]


@needs_open_clip
def test_text_table_is_exact_and_reused(tmp_path, monkeypatch):
    teacher = quiet(build_text_teacher, TINY, "random", seed=0)
    table = build_text_feature_table(teacher, CLASSES, str(tmp_path), batch_size=50,
                                     progress=False)
    assert table.features.shape == (2, 20, 3, 24)
    for c, p, s in [(0, 0, 0), (1, 19, 2), (0, 7, 1), (1, 3, 0)]:
        single = teacher([build_prompt(CLASSES[c], p, s)])[0]
        torch.testing.assert_close(table.features[c, p, s], single, atol=1e-6, rtol=1e-6)
    labels, prefixes, suffixes = torch.tensor([1, 0, 1]), torch.tensor([4, 0, 19]), \
        torch.tensor([2, 1, 0])
    looked_up = table.lookup(labels, prefixes, suffixes)
    assert torch.equal(looked_up, table.features[labels, prefixes, suffixes])
    assert torch.allclose(table.class_embeddings(), table.features.sum(dim=(1, 2)))

    def no_run(*args, **kwargs):
        raise AssertionError("the text teacher ran although the table was cached")

    monkeypatch.setattr(CLIPTextTeacher, "forward", no_run)
    again = build_text_feature_table(teacher, CLASSES, str(tmp_path), progress=False)
    assert again.path == table.path and torch.equal(again.features, table.features)


@needs_open_clip
def test_text_table_is_invalidated_when_the_identity_changes(tmp_path):
    teacher = quiet(build_text_teacher, TINY, "random", seed=0)
    base = build_text_feature_table(teacher, CLASSES, str(tmp_path), progress=False)
    other_seed = quiet(build_text_teacher, TINY, "random", seed=1)
    reseeded = build_text_feature_table(other_seed, CLASSES, str(tmp_path), progress=False)
    assert reseeded.path != base.path and not torch.equal(reseeded.features, base.features)
    other_classes = build_text_feature_table(teacher, CLASSES[:1], str(tmp_path), progress=False)
    assert other_classes.path != base.path and other_classes.features.shape[0] == 1
    teacher.identity = dataclasses.replace(teacher.identity, library_version="0.0.1")
    assert build_text_feature_table(teacher, CLASSES, str(tmp_path), progress=False).path != \
        base.path
    # A file whose stored key does not match is recomputed, never trusted.
    teacher.identity = other_seed.identity
    stale = torch.load(base.path, weights_only=True)
    torch.save({"key_json": stale["key_json"], "features": torch.zeros(2, 20, 3, 24)},
               reseeded.path)
    fresh = build_text_feature_table(other_seed, CLASSES, str(tmp_path), progress=False)
    assert torch.equal(fresh.features, reseeded.features)


def _write_renders(root, count=3):
    """A three-shape ShapeNet-style folder with random renders."""
    from data_fixtures import write_shapenet

    write_shapenet(str(root), n_points=64, per_split=count)
    return ShapeNet55(ShapeNetPaths.from_root(root), "train", 32, whole=False, n_points=64,
                      image="center")


@needs_open_clip
def test_image_cache_holds_centre_view_features(tmp_path, monkeypatch):
    _, image_teacher = quiet(build_clip_teachers, TINY, "random", seed=0)
    dataset = _write_renders(tmp_path / "data")
    cache = build_image_feature_cache(image_teacher, dataset, str(tmp_path / "cache"),
                                      batch_size=2, progress=False)
    assert cache.features.shape == (3, 24)
    for i in range(3):
        expected = image_teacher(dataset[i]["image"][None])[0]
        torch.testing.assert_close(cache.features[i], expected, atol=1e-6, rtol=1e-6)
    assert torch.equal(cache.lookup(torch.tensor([2, 0])), cache.features[[2, 0]])

    monkeypatch.setattr(CLIPImageTeacher, "forward", lambda *a, **k: 1 / 0)
    reused = build_image_feature_cache(image_teacher, dataset, str(tmp_path / "cache"),
                                       progress=False)
    assert reused.path == cache.path
    monkeypatch.undo()
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(dataset.image_path(1))  # a new render
    rebuilt = build_image_feature_cache(image_teacher, dataset, str(tmp_path / "cache"),
                                        progress=False)
    assert rebuilt.path != cache.path
    assert torch.equal(rebuilt.features[0], cache.features[0])
    assert not torch.equal(rebuilt.features[1], cache.features[1])
