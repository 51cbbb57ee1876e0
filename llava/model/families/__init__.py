"""Model families: which kind of vision-language model a directory holds, from config.json's model_type.

    family_of({"model_type": "mllama", ...}).title  -> "Llama-3.2-Vision"

See base.py for what a family states; each family is one small module here."""

from __future__ import annotations

from llava.model.families.base import Family, FamilyError
from llava.model.families.blip2 import BLIP2
from llava.model.families.llava15 import LLAVA
from llava.model.families.llava_next import LLAVA_NEXT
from llava.model.families.mllama import MLLAMA
from llava.model.families.qwen2_vl import QWEN2_VL

FAMILIES: tuple[Family, ...] = (LLAVA, MLLAMA, BLIP2, LLAVA_NEXT, QWEN2_VL)
BY_MODEL_TYPE = {t: f for f in FAMILIES for t in f.model_types}
BY_NAME = {f.name: f for f in FAMILIES}

__all__ = ["FAMILIES", "Family", "FamilyError", "family_of", "family_of_model", "family_named", "image_token_id_of",
           "LLAVA"]


def family_of(config: dict) -> Family | None:
    """The family of a config.json (as a dict); None for a model_type of none of them."""
    return BY_MODEL_TYPE.get(config.get("model_type"))


def family_of_model(model) -> Family:
    """The family of a loaded model, from its config's model_type; LLaVA-1.5 for ours (llava, llava_mmproj)."""
    return BY_MODEL_TYPE.get(getattr(model.config, "model_type", None), LLAVA)


def image_token_id_of(config) -> int | None:
    """The token id a model config's image placeholder has (image_token_id, or image_token_index in
    mllama's and BLIP-2's configs)."""
    found = getattr(config, "image_token_id", None)
    return found if found is not None else getattr(config, "image_token_index", None)


def family_named(name: str) -> Family:
    try:
        return BY_NAME[name]
    except KeyError:
        raise FamilyError(f"unknown model family {name!r}; known: {', '.join(BY_NAME)}") from None
