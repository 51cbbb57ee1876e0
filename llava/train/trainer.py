"""LLaVATrainer: the Hugging Face Trainer with LLaVA's optimizer groups, length-grouped
sampling, and saving that load_pretrained_model reads back.

Resuming is the Trainer's own (`resume_from_checkpoint`), which restores the
DeepSpeed engine state, LoRA adapters and the projector alike; the original
LLaVA's LoRA runs could not resume.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import Trainer

from llava.data.sampler import LengthGroupedSampler
from llava.model.cpu_features import cpu_has_native_bf16
from llava.model.directories import plain_name
from llava.model.families import family_of_model
from llava.model.lora import save_lora
from llava.model.processor import save_processor
from llava.train.loss import answer_positions_loss

log = logging.getLogger(__name__)

PROJECTOR = "multi_modal_projector"


def _is_peft(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def use_cpu_bf16(args) -> bool:
    """bf16 autocast for CPU training where the CPU has bf16 instructions (AVX512-BF16 or AMX),
    whose bf16 matmuls beat fp32 ones (docs/training.md, "Measurements"); fp32 elsewhere."""
    if args.device.type != "cpu" or args.bf16 or args.fp16:
        return False
    choice = str(args.cpu_bf16).lower()
    return choice == "true" or (choice == "auto" and cpu_has_native_bf16())


class LLaVATrainer(Trainer):
    def __init__(self, *args, processor=None, projector_only: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.processor = processor
        self.projector_only = projector_only
        self.family = family_of_model(self._unwrapped_base(self.model))
        self.cpu_bf16 = use_cpu_bf16(self.args)
        if self.cpu_bf16:
            log.info("CPU bf16 autocast on (--cpu_bf16 %s)", self.args.cpu_bf16)

    # ---- sampling -----------------------------------------------------------------------------
    def _get_train_sampler(self, train_dataset=None):
        if not self.args.group_by_modality_length:
            return super()._get_train_sampler(train_dataset)
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return LengthGroupedSampler(
            batch_size=self.args.per_device_train_batch_size,
            world_size=self.args.world_size * self.args.gradient_accumulation_steps,
            lengths=dataset.lengths,
            has_image=dataset.has_image,
            seed=self.args.seed,
        )

    # ---- optimizer ----------------------------------------------------------------------------
    def create_optimizer(self, model=None):
        """Separate learning rates for the projector (--mm_projector_lr) and the tower
        (--mm_vision_tower_lr); weight decay as the Trainer decides it."""
        opt_model = self.model if model is None else model
        if self.optimizer is not None:
            return self.optimizer
        decay = set(self.get_decay_parameter_names(opt_model))
        special = {f".{self.family.projector}.": self.args.mm_projector_lr,
                   f".{self.family.vision}.": self.args.mm_vision_tower_lr}
        groups: dict[tuple, dict] = {}
        for name, p in opt_model.named_parameters():
            if not p.requires_grad:
                continue
            part = next((k for k, lr in special.items() if lr is not None and k in f".{plain_name(name)}"), None)
            key = (part, name in decay)
            if key not in groups:
                group = {"params": [], "weight_decay": self.args.weight_decay if name in decay else 0.0}
                if part is not None:
                    group["lr"] = special[part]
                groups[key] = group
            groups[key]["params"].append(p)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(list(groups.values()), **optimizer_kwargs)
        return self.optimizer

    def compute_loss_context_manager(self):
        stack = super().compute_loss_context_manager()
        if self.cpu_bf16:
            stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16))
        return stack

    # ---- loss ---------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # Another family's forward is its own (cross-attention, query tokens): its loss is the model's.
        if self.args.lm_head_on_labels_only and not return_outputs and "labels" in inputs and self.family.native:
            loss = self._answer_positions_loss(model, inputs, num_items_in_batch)
        else:
            out = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                       num_items_in_batch=num_items_in_batch)
            loss = out[0] if return_outputs else out
        if "pixel_values" not in inputs and self._zero3() and self.family.native:
            # ZeRO-3 gathers each module's weights collectively: if one rank's batch is text-only
            # and skips the tower while another's runs it, the ranks wait for each other forever.
            # Run the tower on a blank image and add it with weight zero.
            loss = loss + 0.0 * self._blank_image_features(model)
        return (loss, out[1]) if return_outputs else loss

    def _answer_positions_loss(self, model, inputs, num_items_in_batch):
        loss = answer_positions_loss(model, self._unwrapped_base(model).get_output_embeddings(), inputs,
                                     num_items_in_batch)
        if num_items_in_batch is not None and self.args.average_tokens_across_devices \
                and self.model_accepts_loss_kwargs:
            # As Trainer.compute_loss: num_items_in_batch counts every rank's tokens, while the
            # gradients are averaged over ranks.
            loss = loss * self.accelerator.num_processes
        return loss

    def _unwrapped_base(self, model):
        base = self.accelerator.unwrap_model(model)
        return base.get_base_model() if _is_peft(base) else base

    def _zero3(self) -> bool:
        if not self.is_deepspeed_enabled:
            return False
        return self.accelerator.state.deepspeed_plugin.zero_stage == 3

    def _blank_image_features(self, model):
        base = self._unwrapped_base(model)
        size = base.config.vision_config.image_size
        tower = base.model.vision_tower
        blank = torch.zeros(1, 3, size, size, device=tower.device, dtype=next(tower.parameters()).dtype)
        feats = base.model.get_image_features(pixel_values=blank, return_dict=True).pooler_output
        return sum(f.float().sum() for f in feats)

    # ---- saving -------------------------------------------------------------------------------
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """LoRA runs: adapter + non_lora_trainables + config + processor.  Other runs: a transformers
        llava directory; projector-only runs (stage 1) also write mm_projector.safetensors, the
        original's mm_projector.bin, for stage 2's --pretrain_mm_mlp_adapter."""
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model)
        if _is_peft(model):
            save_lora(model, out, self.processor, state_dict=state_dict)
        else:
            state = state_dict if state_dict is not None else model.state_dict()
            model.save_pretrained(out, state_dict=state)
            if self.projector_only:
                proj = {k: v.detach().cpu().contiguous() for k, v in state.items() if PROJECTOR in k}
                save_file(proj, str(out / "mm_projector.safetensors"))
            if self.processor is not None:
                save_processor(self.processor, out)
        torch.save(self.args, out / "training_args.bin")
