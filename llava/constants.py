"""Constants shared by data, training and inference."""

# Label value ignored by the loss (torch.nn.CrossEntropyLoss default).
IGNORE_INDEX = -100

# The placeholder users write in prompts and training data; LLaVA's spelling.
DEFAULT_IMAGE_TOKEN = "<image>"

# Where the original's run_llava puts the image when a query names the spot (else the image goes first).
IMAGE_PLACEHOLDER = "<image-placeholder>"

# The original LLaVA code inserts this id in place of <image>; kept so that
# token ids can be compared with the original's tokenizer_image_token.
IMAGE_TOKEN_INDEX = -200

# LLaVA's suffix for short-answer VQA prompts.
SHORT_ANSWER_PROMPT = "Answer the question using a single word or phrase."

# Multiple-choice instruction used by LLaVA's MMBench / ScienceQA prompts.
MULTIPLE_CHOICE_PROMPT = "Answer with the option's letter from the given choices directly."
