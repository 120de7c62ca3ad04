"""The capture's networks: load the reconstructor and the emotion network (in a thread, while the reader
decodes), run them on batches of crops, and turn their outputs into take columns.

Conventions: crops are (B, 224, 224, 3) uint8 RGB; the networks take (B, 3, 224, 224) float32 in [0, 1]
(emoca.md 4.1.4: no mean/std). Rows come back as numpy float32 in crop space; :func:`landmarks_to_frame` moves
the model's landmarks to frame pixels (backend.flame.camera.crop_to_frame).
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from backend.capture.options import CaptureOptions, Warn
from backend.flame.camera import crop_to_frame
from emoca_contract.errors import EmocaError

# CPU forward passes run in slices of this many crops (bounds the work an abandoned pass does after a cancel).
CPU_MICRO_BATCH = 8


@dataclass
class Networks:
    """The reconstructor and emotion model, plus how to call them on a batch of crops."""

    recon: Any  # backend.models.reconstructor.FaceReconstructor
    emotion: Any  # backend.models.emotion model (predict(x, codes)) or None
    device: str
    micro_batch: int
    detail: bool = False

    def run(self, crops: np.ndarray, cancel: threading.Event | None = None) -> dict[str, np.ndarray]:
        """crops (B, 224, 224, 3) uint8 RGB -> per-crop rows (numpy, float32), in micro-batches.

        The reconstructor applies bf16 autocast and channels_last on CUDA itself. With ``cancel``, each
        micro-batch runs in the network thread while this one watches the event: a cancel returns at once (the
        abandoned forward pass finishes in the background; its result is dropped), however slow one micro-batch
        is."""
        outs: list[dict[str, np.ndarray]] = []
        for a in range(0, len(crops), self.micro_batch):
            chunk = crops[a : a + self.micro_batch]
            outs.append(self._forward(chunk) if cancel is None else self._forward_cancellable(chunk, cancel))
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}

    def _forward_cancellable(self, crops: np.ndarray, cancel: threading.Event) -> dict[str, np.ndarray]:
        if cancel.is_set():
            raise EmocaError("cancelled", "capture cancelled")
        fut = _executor().submit(self._forward, crops)
        while True:
            try:
                return fut.result(timeout=0.05)
            except concurrent.futures.TimeoutError:
                if cancel.is_set():
                    raise EmocaError("cancelled", "capture cancelled") from None

    def _forward(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        x = self.recon.to_tensor(crops)
        with torch.inference_mode():
            rec = self.recon.reconstruct(x, as_numpy=False, detail=self.detail)
            emo = self.emotion.predict(x, codes=rec) if self.emotion is not None else None
        return rows_from_outputs(rec, emo)


# (networks, model meta, emotion meta, fallbacks): what load_networks returns and capture(networks=...) takes
Loaded = tuple[Networks, dict, dict, list[str]]

_EXECUTOR: concurrent.futures.ThreadPoolExecutor | None = None


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    """One network thread per process: an abandoned (cancelled) pass delays the next job, never runs beside it."""
    global _EXECUTOR
    if _EXECUTOR is None:
        _EXECUTOR = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="capture-net")
    return _EXECUTOR


def _np(t: Any) -> np.ndarray:
    """A torch tensor or array -> numpy float32."""
    if hasattr(t, "detach"):
        t = t.detach().float().cpu().numpy()
    return np.asarray(t, np.float32)


def rows_from_outputs(rec: dict, emo: dict | None) -> dict[str, np.ndarray]:
    """Network outputs (B rows) -> take columns in crop space (``landmarks_norm``: (B, 68, 2) normalised crop
    coordinates, NaN when no landmark embedding is installed; see :func:`landmarks_to_frame`)."""
    pose = _np(rec["pose"])
    rows = {
        "shape": _np(rec["shape"]),
        "exp": _np(rec["exp"]),
        "global_pose": pose[:, :3],
        "jaw_pose": pose[:, 3:6],
        "cam": _np(rec["cam"]),
        # no landmark embedding installed: NaN here, zeros in the take (never invented)
        "landmarks_norm": (
            _np(rec["landmarks2d"])[:, :, :2]
            if rec.get("landmarks2d") is not None
            else np.full((len(pose), 68, 2), np.nan, np.float32)
        ),
    }
    for k in ("tex", "light", "detail"):
        if rec.get(k) is not None:
            rows[k] = _np(rec[k]).reshape(len(pose), -1)
    if emo is not None:
        rows["valence"] = _np(emo["valence"]).reshape(-1)
        rows["arousal"] = _np(emo["arousal"]).reshape(-1)
        rows["expression"] = _np(emo["expression"])
    return rows


def landmarks_to_frame(lmk_norm: np.ndarray, tform: np.ndarray) -> np.ndarray:
    """(B, 68, 2) normalised crop coords, (B, 3, 3) crop -> frame -> (B, 68, 2) float32 frame pixels (NaN -> 0)."""
    return np.nan_to_num(crop_to_frame(lmk_norm, tform).astype(np.float32), nan=0.0)


def _model_meta(info: dict, device: str) -> dict:
    return {
        "name": str(info.get("name")),
        "trained": bool(info.get("trained")),
        "flame": str(info.get("flame")),
        "device": device,
    }


def _model_fallbacks(model_meta: dict, notes: list[str]) -> list[str]:
    """What the take's meta.fallbacks says about the reconstructor: its own warnings, plus 'untrained' and a
    head that is not FLAME when its warnings did not say so."""
    out = list(notes)
    if not model_meta["trained"] and not any("untrained" in m.lower() for m in notes):
        out.append(f"untrained network ({model_meta['name']}): the expressions are not meaningful")
    flame = model_meta["flame"]
    if ("not FLAME" in flame or "synthetic" in flame.lower()) and not any("not FLAME" in m for m in notes):
        out.append(f"head model: {flame}")
    return out


def load_networks(options: CaptureOptions, device: str, warn: Warn) -> Loaded:
    """Load the reconstructor and the best installed emotion network; returns (nets, model meta, emotion meta,
    fallbacks). Every fallback is also passed to ``warn``."""
    from backend.assets import resolve_capture, resolve_emotion
    from backend.models.emotion import load_emotion_model
    from backend.models.reconstructor import FaceReconstructor

    found = resolve_capture(options.model, options.flame)
    recon = FaceReconstructor.from_paths(
        found.model, found.flame, device=device, landmarks=found.landmarks, mediapipe=found.mediapipe
    )
    info = dict(recon.info)
    model_meta = _model_meta(info, device)
    fallbacks = _model_fallbacks(model_meta, [str(m) for m in (info.get("warnings") or [])])
    emotion_path = options.emotion if options.emotion is not None else resolve_emotion(model_meta["trained"])
    emotion = load_emotion_model(emotion_path, device=device)
    emo_meta = {"model": str(emotion.name), "classes": list(emotion.classes), "valence_arousal": str(emotion.va_source)}
    if "estimated" in emo_meta["valence_arousal"] or "circumplex" in emo_meta["valence_arousal"]:
        fallbacks.append(f"emotion: {emo_meta['model']} (valence/arousal {emo_meta['valence_arousal']})")
    for msg in fallbacks:
        warn(msg)
    micro = CPU_MICRO_BATCH if device == "cpu" else max(1, options.batch_size or 128)
    return Networks(recon, emotion, device, micro, bool(options.detail)), model_meta, emo_meta, fallbacks


class Loader(threading.Thread):
    """load_networks in a thread; ``wait(cancel)`` returns its result or raises its error / 'cancelled'.

    ``preloaded`` (a load_networks result) makes it a no-op that is done at once."""

    def __init__(self, options: CaptureOptions, device: str, warn: Warn, preloaded: Loaded | None = None):
        super().__init__(name="capture-loader", daemon=True)
        self.args = (options, device, warn)
        self.result = preloaded
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.done = threading.Event()
        if preloaded is not None:
            self.done.set()

    def start(self) -> None:
        if not self.done.is_set():
            super().start()

    def run(self) -> None:
        t0 = time.perf_counter()
        try:
            self.result = load_networks(*self.args)
        except BaseException as exc:
            self.error = exc
        finally:
            self.seconds = time.perf_counter() - t0
            self.done.set()

    def wait(self, cancel: threading.Event) -> Loaded:
        while not self.done.wait(0.05):
            if cancel.is_set():
                raise EmocaError("cancelled", "capture cancelled")
        if self.error is not None:
            raise self.error
        assert self.result is not None  # set by run() when no error
        return self.result
