"""The resumable batch run that every batch command shares: batch inference (model_vqa), tag rating and
labeling.  What each of them used to write for itself is here once:

    outputs = check_files(args, {"--question-file": q}, {"--image-folder": d}, batch_outputs("--answers-file", a))
    with ResumableRun(a, args) as batch:           # the answers file, opened for this model
        batch.errors += input_errors                # the input's unusable lines
        todo = batch.todo(questions)                # what is not answered yet: "resuming: K of N ..."
        if todo:
            batch.add(run(batch.model(), todo, args, batch.store, batch.model_id))
    print(f"... {batch.stats['answered']} ..." + batch.errors_note())

  * the answers file (answers_file.py): a torn last line from a killed run is cut off and said so,
    unreadable lines are warned about and their questions asked again, and a file that holds another
    model's answers is refused (--no-resume overwrites);
  * the model is loaded once, and only when something is left to answer (with no --model-path, the
    embedded default);
  * Ctrl-C says how many answers are safe and to run the same command again (exit 130);
  * the errors sidecar (ERRORS_FOR.errors.jsonl) is rewritten with this run's errors however it ends.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llava.eval.answers_file import errors_path, open_for_model, write_errors
from llava.eval.output_paths import check_inputs, check_outputs, refuse_outputs_in_model_dirs
from llava.eval.question_file import Question
from llava.model.args import default_model_path, load_model_or_exit


def add_batch_args(ap: argparse.ArgumentParser, output_flag: str, max_new_tokens: int) -> None:
    """The flags of a batch run besides the model's (llava.model.args) and its own inputs and output."""
    ap.add_argument("--model-id", default=None, help=f"model_id in {output_flag} (default: the model directory's name)")
    ap.add_argument("--max-new-tokens", "--max_new_tokens", type=int, default=max_new_tokens)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--num-workers", type=int, default=2, help="DataLoader workers decoding images")
    ap.add_argument("--no-resume", dest="resume", action="store_false", help=f"overwrite {output_flag}")
    ap.add_argument("--no-progress", dest="progress", action="store_false")


def batch_outputs(flag: str, path: str | Path, more: dict | None = None) -> dict[str, Path]:
    """The files a run writes, by the names its messages give them: FLAG's file, its other outputs, and
    the errors sidecar."""
    return {flag: Path(path), **(more or {}), f"the errors file of {flag}": errors_path(path)}


def check_files(args: argparse.Namespace, inputs: dict, folders: dict, outputs: dict) -> dict:
    """Before anything is read or loaded: the inputs are there, and no output is one of them, a
    directory, or a file of the model (SystemExit naming the flag otherwise); the outputs, by name."""
    check_inputs(inputs, folders)
    check_outputs(outputs, inputs)
    refuse_outputs_in_model_dirs(outputs, {"--model-path": args.model_path, "--model-base": args.model_base})
    return outputs


@dataclass(frozen=True)
class Words:
    """How a command names its work in the run's messages."""
    items: str = "questions"         # resuming: 3 of 5 {items} {already} in FILE
    already: str = "already answered"
    results: str = "answers"         # interrupted: 12 {results} are safe in FILE; ...
    verb: str = "answer"             # ... run the same command again to {verb} the rest
    torn: str = "that question is asked again"  # FILE: cut off a half-written last line (a killed run); {torn}


class ResumableRun:
    """One run appending model answers to `path` (a JSONL answers file), resumably.

    args: the command's flags (model flags, --model-id, --resume).  flag: the option that names `path`,
    for messages.  errors_for: the file whose errors sidecar the run writes (default `path`);
    group_errors: turns the run's error records into the ones written (default: as they are)."""

    def __init__(self, path: str | Path, args: argparse.Namespace, words: Words = Words(),
                 flag: str = "--answers-file", errors_for: str | Path | None = None,
                 group_errors: Callable[[list[dict]], list[dict]] | None = None):
        self.path, self.args, self.words = Path(path), args, words
        args.model_path = args.model_path or default_model_path()
        self.model_id = args.model_id or Path(args.model_path.rstrip("/")).name
        self.store = open_for_model(path, self.model_id, args.resume, flag=flag)
        if self.store.torn:
            print(f"{path}: cut off a half-written last line (a killed run); {words.torn}")
        for e in self.store.bad[:10]:
            print(f"warning: {e['error']}")
        self.errors: list[dict] = list(self.store.bad)  # error records: the input's, then the run's
        self.stats = {"answered": 0, "generated_tokens": 0, "seconds": 0.0}
        self.errors_for = Path(errors_for or path)
        self.group_errors = group_errors or list
        self._loaded = None

    def todo(self, questions: list[Question], items: str | None = None) -> list[Question]:
        """The questions not answered yet, saying how many were."""
        todo = [q for q in questions if q.question_id not in self.store.done]
        if len(todo) < len(questions):
            print(f"resuming: {len(questions) - len(todo)} of {len(questions)} {items or self.words.items} "
                  f"{self.words.already} in {self.path}")
        return todo

    def model(self):
        """The loaded model, loaded on first use (a run with nothing to do never loads it)."""
        if self._loaded is None:
            self._loaded = load_model_or_exit(self.args)
        return self._loaded

    def add(self, part: dict) -> dict:
        """Count a part of the run (model_vqa.run's result: answered, generated_tokens, seconds, errors)."""
        for key in self.stats:
            self.stats[key] += part[key]
        self.errors += part["errors"]
        return part

    def written_errors(self) -> list[dict]:
        return self.group_errors(self.errors)

    def errors_note(self) -> str:
        """The end of the summary line: where this run's errors are, if it had any."""
        n = len(self.written_errors())
        return f"; {n} errors in {errors_path(self.errors_for)}" if n else ""

    def __enter__(self) -> ResumableRun:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        """However the run ends (done, Ctrl-C, a model that cannot load): close the answers file and write
        the errors so far.  Ctrl-C becomes exit 130 with a line saying what is safe."""
        if kind is KeyboardInterrupt:
            print(f"\ninterrupted: {len(self.store.done)} {self.words.results} are safe in {self.path}; "
                  f"run the same command again to {self.words.verb} the rest")
        self.store.close()
        write_errors(self.errors_for, self.written_errors())
        if kind is KeyboardInterrupt:
            raise SystemExit(130) from None
