"""Code written for the original LLaVA (haotian-liu/LLaVA), unchanged but for the arguments: the README's
quick start (eval_model) and the API calls its run_llava.py makes (load_pretrained_model unpacked,
conv_templates, tokenizer_image_token, process_images, KeywordsStoppingCriteria, model.generate(images=...)).

    python examples/original_llava/quick_start.py MODEL_PATH IMAGE_FILE "What is shown?" [MAX_NEW_TOKENS]

tests/test_original_workflow.py runs it and checks its answers equal `bash inference.sh`'s.
"""

import sys

import torch
from PIL import Image

from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from llava.conversation import SeparatorStyle, conv_templates
from llava.eval.run_llava import eval_model
from llava.mm_utils import KeywordsStoppingCriteria, get_model_name_from_path, process_images, tokenizer_image_token
from llava.model.builder import load_pretrained_model

model_path, image_file, prompt = sys.argv[1:4]
max_new_tokens = int(sys.argv[4]) if len(sys.argv) > 4 else 512

# The original README's "Quick Start With HuggingFace", word for word but for the values.
args = type("Args", (), {
    "model_path": model_path,
    "model_base": None,
    "model_name": get_model_name_from_path(model_path),
    "query": prompt,
    "conv_mode": None,
    "image_file": image_file,
    "sep": ",",
    "temperature": 0,
    "top_p": None,
    "num_beams": 1,
    "max_new_tokens": max_new_tokens,
})()
print("eval_model:")
eval_model(args)

# What the original's run_llava.py does inside eval_model, as its notebooks copy it.
model_name = get_model_name_from_path(model_path)
tokenizer, model, image_processor, context_len = load_pretrained_model(model_path, None, model_name)
conv = conv_templates["vicuna_v1"].copy()
conv.append_message(conv.roles[0], DEFAULT_IMAGE_TOKEN + "\n" + prompt)
conv.append_message(conv.roles[1], None)
full_prompt = conv.get_prompt()
image = Image.open(image_file).convert("RGB")
images_tensor = process_images([image], image_processor, model.config).to(model.device, dtype=torch.float16)
input_ids = tokenizer_image_token(full_prompt, tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt").unsqueeze(0)
input_ids = input_ids.to(model.device)
stop_str = conv.sep if conv.sep_style != SeparatorStyle.TWO else conv.sep2
stopping_criteria = KeywordsStoppingCriteria([stop_str], tokenizer, input_ids)
with torch.inference_mode():
    output_ids = model.generate(
        input_ids,
        images=images_tensor,
        image_sizes=[image.size],
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        use_cache=True,
        stopping_criteria=[stopping_criteria],
    )
outputs = tokenizer.batch_decode(output_ids, skip_special_tokens=True)[0].strip()
print("model.generate:")
print(outputs)
