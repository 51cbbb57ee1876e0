"""Merge a LoRA output directory into its base and save a standalone transformers llava directory.

    python scripts/merge_lora_weights.py --model-path checkpoints/llava-smol-task-lora \\
        --model-base checkpoints/llava-smol-base --save-model-path checkpoints/llava-smol-task-merged

The adapter is folded into the base weights (peft's merge_and_unload, in fp32
unless --dtype says otherwise), the non-LoRA trainables (projector) replace
the base's, and the result is saved with its processor and chat template, so
`LlavaForConditionalGeneration.from_pretrained(OUT)` loads it without this
package.  A base that does not fit the adapter is refused, naming the tensor;
a save path that is one of the inputs, or a file, is refused before loading.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from llava.file_guard import refuse_outputs_over_inputs  # noqa: E402
from llava.model.builder import load_pretrained_model  # noqa: E402
from llava.model.directories import is_lora_dir, read_adapter_config  # noqa: E402
from llava.model.errors import AdapterMismatch, ModelLoadError  # noqa: E402
from llava.model.processor import save_processor  # noqa: E402
from llava.staged_dir import staged_dir  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_paths(args) -> None:
    """Everything that can be refused before the (long) load: SystemExit with a message."""
    lora = Path(args.model_path)
    if not lora.is_dir():
        raise SystemExit(f"error: --model-path {lora}: no such directory")
    if not is_lora_dir(lora):
        raise SystemExit(f"error: --model-path {lora}: no adapter_config.json; not a LoRA output directory")
    base = args.model_base
    if base is None:  # the base the adapter names: it must not be overwritten either
        try:
            base = read_adapter_config(lora).get("base_model_name_or_path")
        except ModelLoadError as exc:
            raise SystemExit(f"error: {exc}") from None
    # Saving over the adapter or the base would destroy what the merge reads.
    refuse_outputs_over_inputs({"--save-model-path": args.save_model_path},
                               {"--model-path": args.model_path, "--model-base": base})
    out = Path(args.save_model_path)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"error: --save-model-path {out}: a file, not a directory")
    parent = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not parent.is_dir():
        raise SystemExit(f"error: --save-model-path {out}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SystemExit(f"error: --save-model-path {out}: no permission to write in {parent}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-path", required=True, help="the LoRA output directory")
    ap.add_argument("--model-base", default=None, help="its base model (default: the adapter config's)")
    ap.add_argument("--save-model-path", required=True)
    ap.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="dtype of the saved weights")
    args = ap.parse_args(argv)
    check_paths(args)
    try:
        loaded = load_pretrained_model(args.model_path, args.model_base, merge_lora=True, dtype=torch.float32)
    except AdapterMismatch as exc:
        raise SystemExit(f"cannot merge: {exc}") from None
    except ModelLoadError as exc:
        raise SystemExit(f"error: {exc}") from None
    if loaded.kind != "lora" or hasattr(loaded.model, "peft_config"):
        raise SystemExit(f"error: {args.model_path}: the adapter could not be merged into the base")
    model = loaded.model.to(DTYPES[args.dtype])
    model.config.use_cache = True
    out = Path(args.save_model_path)
    # Staged: a merge killed while saving leaves no folder that looks like a finished model.
    try:
        with staged_dir(out, f"scripts/merge_lora_weights.py {args.model_path} + {args.model_base} "
                             f"dtype={args.dtype}") as tmp:
            model.save_pretrained(tmp)
            save_processor(loaded.processor, tmp)
    except OSError as exc:  # a full disk, no permission
        raise SystemExit(f"error: cannot write --save-model-path {out}: {exc}") from None
    print(f"merged {args.model_path} into {args.model_base or 'its base'} -> {out}")


if __name__ == "__main__":
    main()
