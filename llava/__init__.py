"""LLaVA-1.5 fine-tuning and serving on top of transformers, peft, deepspeed and bitsandbytes."""

__version__ = "0.1.0"
