"""What a model family is: everything our commands need to know about one kind of vision-language model.

A family is chosen from config.json's `model_type` (llava.model.families.family_of), never from a
folder name.  LLaVA-1.5 (`model_type` llava) keeps its own exact path (llava/model/inputs.py,
llava/mm_utils.py: prompt ids, pixels and masks identical to the original code); every other family
goes through its transformers processor, as stated here:

  * loading: AutoModelForImageTextToText and AutoProcessor (the family's own classes behind them);
  * prompts: the processor's chat template, or a plain format for a family without one
    (BLIP-2: "Question: ... Answer:", and no prompt at all for a caption);
  * image inputs: whatever tensors the processor makes (mllama's tiles, aspect-ratio ids and
    cross-attention masks, Qwen2-VL's image_grid_thw, LLaVA-NeXT's image_sizes) travel to
    generate() as they are: the processor pads a batch itself, on the left for generation;
  * which modules stay in full precision under 4-/8-bit (the vision side, lm_head), which one is the
    language model (LoRA's default target) and which the vision encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import torch


class FamilyError(ValueError):
    """A command or input a family cannot take; the message says which and why."""


@dataclass(frozen=True)
class Family:
    name: str  # our name, as users write it (--model-family)
    title: str  # what people call the models: "Llama-3.2-Vision"
    model_types: tuple[str, ...]  # config.json model_type values
    language_model: str  # module path of the decoder (LoRA's targets are its Linear layers)
    vision: str  # module path of the vision encoder
    projector: str  # module path of what maps image features into the language model (trains with LoRA)
    full_precision: tuple[str, ...]  # module paths kept out of 4-/8-bit quantization
    plain_prompt: str | None = None  # "Question: {question} Answer:" for a family without a chat template
    nested_images: bool = False  # the processor takes one list of images per prompt (mllama)
    system_prompt: bool = True  # the prompt has a place for a system message
    needs_image: bool = False  # cannot answer without an image (BLIP-2's prompt starts with its query tokens)
    example: str = ""  # a released checkpoint of the family

    def is_language_model(self, name: str) -> bool:
        """Whether a parameter name (peft's wrapping peeled off) is in the language model or its head."""
        return name.startswith(self.language_model + ".") or ".lm_head." in f".{name}"

    @property
    def native(self) -> bool:
        """LLaVA-1.5: our own templates and tokenization, identical to the original code."""
        return self.name == "llava"

    # ---- prompts ---------------------------------------------------------------------------------
    def render(self, processor, question: str, has_image: bool, history: Sequence[tuple[str, str]] = (),
               system: str | None = None) -> str:
        """The generation prompt for `question` after `history`; the image goes in the first user turn."""
        if self.needs_image and not has_image:
            raise FamilyError(f"{self.title} ({self.name}) answers about an image; this question has none")
        if self.plain_prompt is not None:
            if system is not None:
                raise FamilyError(f"{self.title} ({self.name}) has no system prompt; leave the system message out")
            return self._render_plain(question, history)
        messages = []
        if system is not None:
            messages.append({"role": "system", "content": system})
        for i, (q, a) in enumerate(history):
            messages += [self._user(q, has_image and i == 0), {"role": "assistant", "content": a}]
        messages.append(self._user(question, has_image and not history))
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _render_plain(self, question: str, history) -> str:
        turns = [self.plain_prompt.format(question=q) + " " + a for q, a in history]
        if question.strip() or history:
            turns.append(self.plain_prompt.format(question=question))
        return " ".join(turns)  # a caption: no prompt at all

    @staticmethod
    def _user(text: str, image: bool) -> dict:
        content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]
        return {"role": "user", "content": content}

    # ---- loading ---------------------------------------------------------------------------------
    def load_processor(self, path):
        """The directory's own processor (AutoProcessor), with a pad token for batches."""
        # Here, not at the top: the family registry is read by commands that start without transformers
        # (scripts/task_data_preprocessing.py checks its --model-family in a second, not ten).
        from transformers import AutoProcessor  # noqa: PLC0415

        processor = AutoProcessor.from_pretrained(path)
        tok = processor.tokenizer
        if tok.pad_token is None:  # batches need one; the attention mask keeps it out of the answers
            tok.pad_token = tok.eos_token
        return processor

    def check_config(self, config) -> None:
        """Refuse a variant of the family the commands cannot run (before any weight loads)."""
        text = config.get_text_config()
        if getattr(text, "is_encoder_decoder", False):
            raise FamilyError(f"{self.title} with an encoder-decoder language model ({text.model_type}) is not "
                              "supported: answers are read after the prompt, which such a model does not repeat")

    # ---- inputs ----------------------------------------------------------------------------------
    def inputs(self, processor, prompts: Sequence[str], images: Sequence) -> dict:
        """The processor's batch for generation: left-padded ids, and every image tensor it makes."""
        present = [im for im in images if im is not None]
        if self.needs_image and len(present) != len(prompts):
            raise FamilyError(f"{self.title} ({self.name}) answers about an image; a question in the batch has none")
        tok = processor.tokenizer
        kwargs = {"padding": True, "return_tensors": "pt"}
        if tok.bos_token and all(p.startswith(tok.bos_token) for p in prompts):
            kwargs["add_special_tokens"] = False  # the chat template wrote BOS already
        if present:
            kwargs["images"] = [[im] if im is not None else [] for im in images] if self.nested_images else present
        side = tok.padding_side
        tok.padding_side = "left"
        try:
            batch = processor(text=list(prompts), **kwargs)
        finally:
            tok.padding_side = side
        return dict(batch)

    def text_ids(self, processor, prompt: str) -> list[int]:
        """The prompt's token ids before the processor expands image placeholders (for length checks)."""
        tok = processor.tokenizer
        return tok(prompt, add_special_tokens=not (tok.bos_token and prompt.startswith(tok.bos_token))).input_ids

    # ---- modules ---------------------------------------------------------------------------------
    def vision_dtype(self, model) -> torch.dtype:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        return next(base.get_submodule(self.vision).parameters()).dtype

