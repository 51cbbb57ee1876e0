"""Qwen2-VL and Qwen2.5-VL: dynamic resolution; the processor turns an image into a variable number of
patches (pixel_values of all images concatenated) with image_grid_thw giving each image's grid, and
expands <|image_pad|> to match."""

from llava.model.families.base import Family

QWEN2_VL = Family(
    name="qwen2_vl",
    title="Qwen2-VL / Qwen2.5-VL",
    model_types=("qwen2_vl", "qwen2_5_vl"),
    language_model="model.language_model",
    vision="model.visual",
    projector="model.visual.merger",
    full_precision=("model.visual", "lm_head"),
    example="Qwen/Qwen2-VL-2B-Instruct",
)
