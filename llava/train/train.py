"""Train a LLaVA model: stage-1 pretraining, full fine-tuning, LoRA or QLoRA, under DeepSpeed.

    deepspeed llava/train/train.py --deepspeed scripts/zero2.json --model_name_or_path ... --data_path ...

The flags are the original LLaVA's plus every transformers TrainingArguments
flag (see llava/train/args.py); scripts/*.sh hold the usual recipes.  A run
whose output directory already holds checkpoint-* resumes from the last one.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

# Runnable as `python llava/train/train.py` / `deepspeed llava/train/train.py` from a checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import transformers  # noqa: E402

from llava.data.collate import DataCollator, FamilyCollator  # noqa: E402
from llava.data.dataset import LazySupervisedDataset  # noqa: E402
from llava.data.family_examples import FamilyExampleBuilder  # noqa: E402
from llava.model.families import BY_MODEL_TYPE, LLAVA, image_token_id_of  # noqa: E402
from llava.train.args import parse_args  # noqa: E402
from llava.train.callbacks import LossLogCallback  # noqa: E402
from llava.train.model_setup import configure_trainable, load_model  # noqa: E402
from llava.train.shm_cleanup import remove_at_exit  # noqa: E402
from llava.train.trainer import LLaVATrainer  # noqa: E402

log = logging.getLogger("llava.train")


def _setup_reporting(training_args) -> None:
    if "wandb" in (training_args.report_to or []) and not os.environ.get("WANDB_API_KEY"):
        # No key (or no network): keep the run on disk; `wandb sync` uploads it later.
        os.environ.setdefault("WANDB_MODE", "offline")
        log.warning("WANDB_API_KEY not set: wandb runs in offline mode (see %s/wandb)", training_args.output_dir)
    os.environ.setdefault("WANDB_DIR", training_args.output_dir)


def make_dataset(path: str, data_args, training_args, model_args, processor, model_config):
    family = family_of_model_config(model_config)
    if not family.native:  # rendered by its processor (llava/data/family_examples.py)
        image_token = image_token_id_of(model_config)
        builder = FamilyExampleBuilder(family, processor, image_token, training_args.model_max_length)
        return LazySupervisedDataset(path, image_folder=data_args.image_folder, tokenizer=processor.tokenizer,
                                     image_processor=None, template=model_args.version, image_token_id=image_token,
                                     num_image_tokens=0, model_max_length=training_args.model_max_length,
                                     builder=builder)
    return LazySupervisedDataset(
        path,
        image_folder=data_args.image_folder,
        tokenizer=processor.tokenizer,
        image_processor=processor.image_processor,
        template=model_args.version,
        image_token_id=model_config.image_token_id,
        num_image_tokens=model_config.image_seq_length,
        model_max_length=training_args.model_max_length,
    )


def family_of_model_config(config):
    return BY_MODEL_TYPE.get(config.model_type, LLAVA)


def make_collator(processor, config):
    family = family_of_model_config(config)
    if family.native:
        return DataCollator(pad_token_id=processor.tokenizer.pad_token_id)
    image_token = image_token_id_of(config)
    return FamilyCollator(family, processor, image_token)


def last_checkpoint(output_dir: str) -> str | None:
    """The newest complete checkpoint-N.  The Trainer writes trainer_state.json last, so a checkpoint
    without it was cut off while saving (a killed run): skip it and resume from the one before."""
    ckpts = [p for p in Path(output_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    for ckpt in sorted(ckpts, key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        if (ckpt / "trainer_state.json").is_file():
            return str(ckpt)
        log.warning("%s was cut off while saving (no trainer_state.json): not resuming from it", ckpt)
    return None


def train(argv: list[str] | None = None) -> LLaVATrainer:
    remove_at_exit()  # DeepSpeed's CPU all-reduce segment in /dev/shm, created while the args are parsed
    model_args, data_args, training_args = parse_args(argv)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if training_args.should_log else logging.WARNING,
    )
    transformers.utils.logging.set_verbosity_warning()
    _setup_reporting(training_args)
    transformers.set_seed(training_args.seed)

    model, processor = load_model(model_args, data_args, training_args)
    config = model.config
    model = configure_trainable(model, model_args, training_args)
    train_set = make_dataset(data_args.data_path, data_args, training_args, model_args, processor, config)
    eval_set = (make_dataset(data_args.eval_data_path, data_args, training_args, model_args, processor, config)
                if data_args.eval_data_path else None)
    trainer = LLaVATrainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=make_collator(processor, config),
        callbacks=[LossLogCallback(training_args.output_dir)],
        processor=processor,
        projector_only=model_args.tune_mm_mlp_adapter,
    )
    resume = training_args.resume_from_checkpoint or last_checkpoint(training_args.output_dir)
    if resume:
        log.info("resuming from %s", resume)
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_state()
    config.use_cache = True
    trainer.save_model(training_args.output_dir)
    if trainer.args.should_save:
        print(f"saved to {training_args.output_dir}", flush=True)
    return trainer


if __name__ == "__main__":
    train()
