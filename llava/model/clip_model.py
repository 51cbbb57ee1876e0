"""An open_clip model, when the user has one: image and text embeddings for retrieval (llava.tasks.retrieval)
and CLIPScore (llava.eval.evaluate --metric caption).

    clip = ClipModel("local-dir:/models/clip-vit-b-32")       # open_clip_config.json + weights in a folder
    clip = ClipModel("ViT-B-32:/models/vit-b-32.safetensors")  # a built-in architecture and a weights file
    clip_score(clip, images, captions)                         # per caption: 2.5 * max(cos, 0)

No weights are downloaded by us: a spec naming a hub model or a pretrained tag
(`hf-hub:...`, `ViT-B-32:openai`) makes open_clip try, which fails offline.
CLIPScore is Hessel et al. (2021)'s reference-free score, w = 2.5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from llava.extras import missing_extra

CLIPSCORE_WEIGHT = 2.5


class ClipModel:
    def __init__(self, spec: str, device: str = "cpu"):
        try:  # optional and heavy (the `tasks` extra): imported when a CLIP model is asked for
            import open_clip  # noqa: PLC0415
        except ImportError as exc:  # the `tasks` extra (open_clip_torch)
            raise missing_extra("tasks", exc, "--clip-model") from exc
        if spec.startswith(("local-dir:", "hf-hub:")):
            name, pretrained = spec, None
        else:
            name, _, pretrained = spec.partition(":")
            pretrained = pretrained or None
            if pretrained is None:
                raise SystemExit(f"error: --clip-model {spec!r} names no weights: use local-dir:DIR or "
                                 "ARCH:WEIGHTS_FILE (random weights would give meaningless scores)")
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained,
                                                                               device=device)
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(name)
        self.device = device
        self.name = spec if not spec.startswith("local-dir:") else "local-dir:" + Path(spec[10:]).name
        with torch.inference_mode():
            self.dim = int(self.encode_texts(["x"]).shape[1])

    @torch.inference_mode()
    def encode_images(self, images, batch_size: int = 32) -> np.ndarray:
        out = []
        for i in range(0, len(images), batch_size):
            pixels = torch.stack([self.preprocess(im.convert("RGB")) for im in images[i:i + batch_size]])
            feats = self.model.encode_image(pixels.to(self.device)).float()
            out.append(torch.nn.functional.normalize(feats, dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)

    @torch.inference_mode()
    def encode_texts(self, texts, batch_size: int = 64) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            feats = self.model.encode_text(self.tokenizer(list(texts[i:i + batch_size])).to(self.device)).float()
            out.append(torch.nn.functional.normalize(feats, dim=-1).cpu().numpy())
        return np.concatenate(out)


def clip_score(clip: ClipModel, images, captions: list[str]) -> list[float]:
    """CLIPScore of each (image, caption): 2.5 * max(cosine similarity, 0)."""
    cos = (clip.encode_images(images) * clip.encode_texts(captions)).sum(axis=1)
    return [float(CLIPSCORE_WEIGHT * max(c, 0.0)) for c in cos]
