"""Llama-3.2-Vision (MllamaForConditionalGeneration): the image enters through cross-attention layers.

One `<|image|>` token marks the image in the prompt; the processor cuts the image into up to four
tiles and adds aspect_ratio_ids, aspect_ratio_mask and a cross_attention_mask, all padded per batch.
The processor takes one list of images per prompt."""

from llava.model.families.base import Family

MLLAMA = Family(
    name="mllama",
    title="Llama-3.2-Vision",
    model_types=("mllama",),
    language_model="model.language_model",
    vision="model.vision_model",
    projector="model.multi_modal_projector",
    full_precision=("model.vision_model", "model.multi_modal_projector", "lm_head"),
    nested_images=True,
    example="meta-llama/Llama-3.2-11B-Vision-Instruct",
)
