"""A running backend job as text: console lines (background mode, scripts, the API) and the panels' progress text.

Plain functions of protocol events (dicts, docs/formats.md) or of a job's progress properties (the
``JobProgress`` groups of properties.py: ``-1`` means unknown for ``eta``, ``total`` and ``loss``).
Console lines start with ``[emoca]``.
"""

from __future__ import annotations

from typing import Any


def print_line(text: str) -> None:
    print(f"[emoca] {text}", flush=True)


def event_line(event: dict) -> str | None:
    """The console text of one backend event: progress, warnings and logs; None for the others."""
    etype = event.get("type")
    if etype == "progress":
        eta, loss = event.get("eta"), event.get("loss")
        return (
            f"{event.get('stage')}: {event.get('done')}/{event.get('total')}"
            + (f" epoch {event['epoch']}" if "epoch" in event else "")
            + (f" loss {loss:.4f}" if isinstance(loss, (int, float)) else "")
            + (f" eta {eta:.0f}s" if isinstance(eta, (int, float)) else "")
        )
    if etype in ("warning", "log"):
        return str(event.get("message"))
    return None


def print_event(event: dict) -> None:
    """Print a backend event's console line (the API's ``verbose=True``)."""
    line = event_line(event)
    if line is not None:
        print_line(line)


def _eta(props: Any) -> str:
    return f", ETA {props.eta:.0f} s" if props.eta >= 0 else ""


def capture_text(props: Any) -> str:
    """``detect 42%, 12.5 fps, ETA 7 s``: a capture's progress (``WindowManager.emoca_job``)."""
    fps = f", {props.fps:.1f} fps" if props.fps > 0 else ""
    return f"{props.stage} {props.progress * 100:.0f}%{fps}{_eta(props)}"


def train_text(props: Any) -> str:
    """``epoch 2, step 37/100, loss 0.1234, ETA 60 s``: a training's progress (``WindowManager.emoca_train_job``)."""
    total = f"/{props.total}" if props.total > 0 else ""
    loss = f", loss {props.loss:.4f}" if props.loss >= 0 else ""
    return f"epoch {props.epoch}, step {props.step}{total}{loss}{_eta(props)}"
