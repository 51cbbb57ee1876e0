"""The embedded default and its sample tasks: what `make demo` and the tests build offline.

    models.py          the tiny (tests) and smol (demo) LLaVA-1.5-shaped models, composed from their parts
    tower_pretrain.py  teaches the smol model's random CLIP tower to see the scenes
    scenes.py          the synthetic scenes: coloured shapes, one per quadrant, drawn deterministically
    scene_captions.py  captions and chats about the scenes: stage-1 and stage-2 data for the embedded base
    vqa_task.py        the VQA sample task (raw CSV + images, as a competition ships it)
    rating_task.py     the tag-rating sample task
    labeling_task.py   the labeling and retrieval sample task
    caption_task.py    the captioning sample task

These modules use the library; nothing in the library (llava/ outside this
package) imports them, so a user's commands never depend on the demo.
"""
