"""Frozen teachers of ReCon's cross-modal distillation and their exact feature caches.

* :func:`build_text_teacher` / :class:`CLIPTextTeacher`: CLIP ViT-B/32 text encoder, prompts ->
  (B, 512).
* :func:`build_clip_teachers`: text and image towers from one CLIP (zero-shot setting);
  :class:`CLIPImageTeacher`: (B, 3, 224, 224) -> (B, 512).
* :class:`ViTImageTeacher`: timm ViT-B/16 (in21k) image teacher, (B, 3, 224, 224) -> (B, 768).
* :func:`build_text_feature_table` -> :class:`TextFeatureTable` ``[C, 20, 3, D]``, looked up by
  (label, prefix_id, suffix_id); :func:`build_image_feature_cache` -> :class:`ImageFeatureCache`
  (centre view per render), looked up by dataset index.

Weights are never downloaded: pass a file, rely on a local cache, or ask for ``"random"``.
"""

from recon_fast.teachers.cache import (ImageFeatureCache, TextFeatureTable,
                                       build_image_feature_cache, build_text_feature_table)
from recon_fast.teachers.clip import (CLIPImageTeacher, CLIPTextTeacher, TeacherIdentity,
                                      build_clip, build_clip_teachers, build_text_teacher,
                                      resolve_clip_weights)
from recon_fast.teachers.timm_vit import ViTImageTeacher
from recon_fast.teachers.weights import (RandomTeacherWarning, TeacherWeightsError,
                                         load_state_dict_file)

__all__ = [
    "CLIPTextTeacher", "CLIPImageTeacher", "ViTImageTeacher", "TeacherIdentity", "build_clip",
    "build_clip_teachers", "build_text_teacher", "resolve_clip_weights", "TextFeatureTable",
    "ImageFeatureCache", "build_text_feature_table", "build_image_feature_cache",
    "RandomTeacherWarning", "TeacherWeightsError", "load_state_dict_file",
]
