"""LLaVA-1.5 (transformers' LlavaForConditionalGeneration, and the original checkpoints converted on load).

Its prompts, tokenization, pixels and label masks are our own code, identical to the original
(llava/conversation.py, llava/mm_utils.py, llava/model/processor.py); the fields here serve the
commands that treat every family alike (quantization, LoRA targets)."""

from llava.model.families.base import Family

LLAVA = Family(
    name="llava",
    title="LLaVA-1.5",
    model_types=("llava", "llava_mmproj"),
    language_model="model.language_model",
    vision="model.vision_tower",
    projector="model.multi_modal_projector",
    full_precision=("model.vision_tower", "model.multi_modal_projector", "lm_head"),
    example="llava-hf/llava-1.5-7b-hf",
)
