"""The embedded default's tower learns to see the synthetic scenes (llava/demo/tower_pretrain.py)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

from llava.demo.scenes import SceneObject
from llava.demo.tower_pretrain import COLOR_CLASSES, SHAPE_CLASSES, pretrain_tower, scene_labels
from llava.model.processor import CLIP_MEAN, CLIP_STD


def test_scene_labels_put_each_object_in_its_quadrant():
    objs = [SceneObject("red", "circle", 10, 10, 20, "left", "top"),
            SceneObject("blue", "square", 70, 50, 20, "right", "bottom")]
    colors, shapes = scene_labels(objs)
    assert colors == [COLOR_CLASSES.index("red"), 0, 0, COLOR_CLASSES.index("blue")]
    assert shapes == [SHAPE_CLASSES.index("circle"), 0, 0, SHAPE_CLASSES.index("square")]


@pytest.mark.slow
def test_pretraining_teaches_a_random_tower_colours_and_where_each_patch_is(tmp_path):
    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8)
    CLIPVisionModel(cfg).save_pretrained(tmp_path / "tower")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                       image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD)).save_pretrained(tmp_path / "tower")
    before = pretrain_tower(tmp_path / "tower", tmp_path / "untrained", steps=1, pool=300, batch_size=32, lr=1e-9)
    after = pretrain_tower(tmp_path / "tower", tmp_path / "trained", steps=150, pool=300, batch_size=32, lr=3e-3)
    assert after["color_acc"] > before["color_acc"] + 0.3, (before, after)
    # The same head reads every patch, so the feature itself must carry the column (left vs right).
    assert after["col_acc"] > before["col_acc"] + 0.3, (before, after)
    trained = CLIPVisionModel.from_pretrained(tmp_path / "trained")
    assert (tmp_path / "trained" / "preprocessor_config.json").exists()
    assert json.loads((tmp_path / "trained" / "tower_pretrain.json").read_text())["steps"] == 150
    original = CLIPVisionModel.from_pretrained(tmp_path / "tower")
    changed = [n for n, p in trained.named_parameters() if not torch.equal(p, dict(original.named_parameters())[n])]
    assert changed
