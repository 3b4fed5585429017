"""Writers of tiny OpenShape / ReCon++ per-shape files (the published pickled-dict .npy format)."""

from __future__ import annotations

import json
import os

import numpy as np


def openshape_shape(rng: np.random.Generator, n_points: int, dim: int, views: int = 12,
                    retrieval: int = 2) -> dict:
    """One shape's dict with the keys OpenShape's and ReCon++'s loaders read."""
    def embedding():  # {"original", "prompt_avg"} of (1, dim), as OpenShape stores them
        return {"original": rng.normal(size=(1, dim)).astype(np.float32),
                "prompt_avg": rng.normal(size=(1, dim)).astype(np.float32)}

    return {
        "xyz": rng.normal(size=(n_points, 3)).astype(np.float32),
        "rgb": rng.uniform(size=(n_points, 3)).astype(np.float32),
        "text": ["a shape"], "text_feat": [embedding()],
        "blip_caption": "a blip caption", "blip_caption_feat": embedding(),
        "msft_caption": "", "msft_caption_feat": embedding(),
        "retrieval_text": [f"retrieved {i}" for i in range(retrieval)],
        "retrieval_text_feat": [embedding() for _ in range(retrieval)],
        "image_feat": rng.normal(size=(views, dim)).astype(np.float32),
        "thumbnail_feat": rng.normal(size=(dim,)).astype(np.float32),
    }


def write_openshape(root: str, count: int, n_points: int = 64, dim: int = 16, seed: int = 0,
                    with_split: bool = True) -> dict[str, dict]:
    """OpenShape layout: meta_data/split/train_all.json + objaverse-processed/... files."""
    rng = np.random.default_rng(seed)
    records, shapes = [], {}
    for i in range(count):
        record = {"dataset": "Objaverse" if i % 2 else "ABO", "group": f"{i % 3}", "id": f"uid{i:05d}"}
        folder = os.path.join(root, "objaverse-processed", "merged_for_training_final",
                              record["dataset"], record["group"])
        os.makedirs(folder, exist_ok=True)
        shape = openshape_shape(rng, n_points, dim)
        np.save(os.path.join(folder, record["id"] + ".npy"), np.array(shape, dtype=object),
                allow_pickle=True)
        records.append(record)
        shapes[record["id"]] = shape
    if with_split:
        os.makedirs(os.path.join(root, "meta_data", "split"), exist_ok=True)
        with open(os.path.join(root, "meta_data", "split", "train_all.json"), "w") as f:
            json.dump(records, f)
    return shapes
