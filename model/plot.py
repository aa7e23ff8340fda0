"""The loss plot an admin gets after a retraining run (matplotlib, off-screen)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from model.run_result import Losses


def plot_losses(
    history: dict[str, list[float]], losses: Losses, path: str | Path, *, accepted: bool
) -> Path:
    """A PNG of training and validation loss per epoch (bits/byte), the live model's as a line."""
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)  # render off-screen, without pyplot's global state
    ax = fig.add_subplot()
    for key, label in (("loss", "training"), ("val_loss", "validation (held-out chats)")):
        values = history.get(key, [])
        ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
    if losses.memory:
        live = "live model with the chat memory, held-out chats"
    elif losses.mixed:
        live = "live model at its best weight, held-out chats"
    else:
        live = "live model, held-out chats"
    ax.axhline(losses.live_chat, color="gray", linestyle="--", label=live)
    if losses.mixed or losses.memory:
        served = "candidate with the chat memory" if losses.memory else "candidate as served"
        ax.axhline(losses.candidate_chat, color="green", linestyle=":", label=served)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (bits/byte)")
    ax.set_title(f"retraining: candidate {'accepted' if accepted else 'rejected'}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path
