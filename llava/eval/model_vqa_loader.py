"""`python -m llava.eval.model_vqa_loader`: the original LLaVA's entry point for batch VQA, kept so that its
scripts run unchanged. It is llava.eval.model_vqa (the same flags, the original's underscore spellings
--top_p, --num_beams and --max_new_tokens included, and the same answer records, batched and resumable).
"""

from llava.eval.model_vqa import main

if __name__ == "__main__":
    main()
