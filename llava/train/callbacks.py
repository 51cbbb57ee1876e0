"""The loss log (JSONL) and loss-curve PNG a training run leaves in its output directory."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from transformers import TrainerCallback

from llava.extras import missing_extra

log = logging.getLogger(__name__)

LOSS_LOG = "loss_log.jsonl"
LOSS_PNG = "loss_curve.png"
_FIELDS = ("loss", "learning_rate", "grad_norm", "epoch", "eval_loss")


class LossLogCallback(TrainerCallback):
    """Appends every logged loss to OUTPUT/loss_log.jsonl and redraws OUTPUT/loss_curve.png.

    On resume, lines past the checkpoint's step (written by the interrupted run
    after its last checkpoint) are dropped, so the log has each step once.
    """

    def __init__(self, output_dir: str | Path, plot_every: int = 50):
        self.path = Path(output_dir) / LOSS_LOG
        self.png = Path(output_dir) / LOSS_PNG
        self.plot_every = plot_every
        self._since_plot = 0

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= state.global_step]
        self.path.write_text("".join(line + "\n" for line in kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, **{k: logs[k] for k in _FIELDS if k in logs}}
        if "loss" not in row and "eval_loss" not in row:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        self._since_plot += 1
        if self._since_plot >= self.plot_every:
            self._since_plot = 0
            plot_loss(self.path, self.png)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.path.exists():
            plot_loss(self.path, self.png)


def read_loss_log(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_loss(log_path: str | Path, png_path: str | Path) -> None:
    # Imported here: matplotlib (the `train` extra) is heavy, and only the PNG needs it.
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError as exc:
        raise missing_extra("train", exc, "the loss-curve PNG") from exc

    rows = read_loss_log(log_path)
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        steps, losses = zip(*train)
        ax.plot(steps, losses, lw=1, alpha=0.5, label="train loss")
        if len(losses) >= 10:
            k = max(2, len(losses) // 20)
            smooth = [sum(losses[max(0, i - k + 1): i + 1]) / len(losses[max(0, i - k + 1): i + 1])
                      for i in range(len(losses))]
            ax.plot(steps, smooth, lw=2, label=f"train loss (mean of {k})")
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
