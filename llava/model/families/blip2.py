"""BLIP-2 (Blip2ForConditionalGeneration): a Q-Former turns the image into query tokens in front of an
OPT (or Flan-T5) language model.

It has no chat template: a question is "Question: ... Answer:" (earlier turns before it, as BLIP-2's
model card writes a conversation), a caption has no prompt at all.  It always needs an image, and has
no system prompt.  The Q-Former and query tokens stay in full precision (transformers keeps them in
fp32 too)."""

from llava.model.families.base import Family

BLIP2 = Family(
    name="blip2",
    title="BLIP-2",
    model_types=("blip-2",),
    language_model="language_model.model",
    vision="vision_model",
    projector="language_projection",
    full_precision=("vision_model", "qformer", "query_tokens", "language_projection", "language_model.lm_head"),
    plain_prompt="Question: {question} Answer:",
    system_prompt=False,
    needs_image=True,
    example="Salesforce/blip2-opt-2.7b",
)
