"""LLaVA-NeXT / LLaVA-1.6 (LlavaNextForConditionalGeneration): "anyres" images, cut into tiles of the
tower's size plus a downscaled whole; the processor expands `<image>` to the tiles' token count and
passes image_sizes along."""

from llava.model.families.base import Family

LLAVA_NEXT = Family(
    name="llava_next",
    title="LLaVA-NeXT",
    model_types=("llava_next",),
    language_model="model.language_model",
    vision="model.vision_tower",
    projector="model.multi_modal_projector",
    full_precision=("model.vision_tower", "model.multi_modal_projector", "lm_head"),
    example="llava-hf/llava-v1.6-mistral-7b-hf",
)
