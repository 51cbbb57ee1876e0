"""Original LLaVA checkpoint -> transformers llava directory (loads in plain transformers, vLLM, TGI).

    python scripts/convert_llava_to_hf.py --model-path liuhaotian/llava-v1.5-7b --output-dir llava-v1.5-7b-hf
"""

from llava.model.convert import main

if __name__ == "__main__":
    main()
