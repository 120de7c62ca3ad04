"""The capture's networks: load the reconstructor and the emotion network (in a thread, while the reader
decodes), run them on batches of crops, and turn their outputs into take columns.

Two models (backend.capture.options.capture_kind): "flame" runs an EMOCA/DECA reconstructor and the emotion
network; "open" runs no reconstructor (the Face Landmarker already gave the face: backend.capture.open) and only
the emotion network. Both pass the frame's ARKit scores to the emotion network when the detector gave them
(``EmotionModel.predict(..., arkit=...)``: the expression-based estimate fused in).

Conventions: crops are (B, 224, 224, 3) uint8 RGB; the networks take (B, 3, 224, 224) float32 in [0, 1]
(emoca.md 4.1.4: no mean/std). Rows come back as numpy float32 in crop space; :func:`landmarks_to_frame` moves
the model's landmarks to frame pixels (backend.flame.camera.crop_to_frame).
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from backend.capture.open import open_model_meta
from backend.capture.options import UNTRAINED_MODEL, CaptureOptions, Warn, capture_kind, detector_gives_arkit
from backend.flame.camera import crop_to_frame
from backend.footage.crop import crops_to_tensor
from emoca_contract.errors import EmocaError

# CPU forward passes run in slices of this many crops (bounds the work an abandoned pass does after a cancel).
CPU_MICRO_BATCH = 8
# torch intra-op threads for the open model's forward passes (the emotion network alone). Its work is small
# (about 2 ms a crop), and two torch threads beside the detector's own on a 2-core CPU fight over the cores:
# measured on a 720p clip, 54 frames/s end to end with one thread against 18 with two.
OPEN_TORCH_THREADS = 1


@dataclass
class Networks:
    """The reconstructor (None for the open model) and emotion model, plus how to call them on a batch of crops."""

    recon: Any  # backend.models.reconstructor.FaceReconstructor, or None (the open model)
    emotion: Any  # backend.models.emotion.EmotionModel (predict(x, codes, arkit)) or None
    device: str
    micro_batch: int
    detail: bool = False
    threads: int | None = None  # torch intra-op threads during a forward pass (None: torch's setting)

    @property
    def kind(self) -> str:
        """The take kind these networks write: "flame" (a reconstructor) or "open"."""
        return "open" if self.recon is None else "flame"

    def run(
        self, crops: np.ndarray, cancel: threading.Event | None = None, arkit: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """crops (B, 224, 224, 3) uint8 RGB (and the faces' (B, 52) ARKit scores, when the detector gave them)
        -> per-crop rows (numpy, float32), in micro-batches.

        The reconstructor applies its precision (bf16 autocast + channels_last where chosen) itself. With
        ``cancel``, each micro-batch runs in the network thread while this one watches the event: a cancel
        returns at once (the abandoned forward pass finishes in the background; its result is dropped), however
        slow one micro-batch is."""
        outs: list[dict[str, np.ndarray]] = []
        for a in range(0, len(crops), self.micro_batch):
            chunk = crops[a : a + self.micro_batch]
            scores = None if arkit is None else arkit[a : a + self.micro_batch]
            outs.append(
                self._forward(chunk, scores) if cancel is None else self._forward_cancellable(chunk, scores, cancel)
            )
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}

    def _forward_cancellable(
        self, crops: np.ndarray, arkit: np.ndarray | None, cancel: threading.Event
    ) -> dict[str, np.ndarray]:
        if cancel.is_set():
            raise EmocaError("cancelled", "capture cancelled")
        fut = _executor().submit(self._forward, crops, arkit)
        while True:
            try:
                return fut.result(timeout=0.05)
            except concurrent.futures.TimeoutError:
                if cancel.is_set():
                    raise EmocaError("cancelled", "capture cancelled") from None

    def _forward(self, crops: np.ndarray, arkit: np.ndarray | None = None) -> dict[str, np.ndarray]:
        import torch

        if self.threads is None:
            return self._forward_rows(crops, arkit)
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)  # OpenMP: this thread's setting; put back either way
        try:
            return self._forward_rows(crops, arkit)
        finally:
            torch.set_num_threads(before)

    def _forward_rows(self, crops: np.ndarray, arkit: np.ndarray | None) -> dict[str, np.ndarray]:
        import torch

        if self.recon is None:
            x = torch.from_numpy(crops_to_tensor(crops)).to(self.device)
        else:
            x = self.recon.to_tensor(crops)
        with torch.inference_mode():
            rec = None if self.recon is None else self.recon.reconstruct(x, as_numpy=False, detail=self.detail)
            emo = None if self.emotion is None else self.emotion.predict(x, codes=rec, arkit=arkit)
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


def rows_from_outputs(rec: dict | None, emo: dict | None) -> dict[str, np.ndarray]:
    """Network outputs (B rows) -> take columns in crop space (``landmarks_norm``: (B, 68, 2) normalised crop
    coordinates, NaN when no landmark embedding is installed; see :func:`landmarks_to_frame`). ``rec`` None (the
    open model): the emotion columns only."""
    rows = {} if rec is None else reconstruction_rows(rec)
    if emo is not None:
        rows["valence"] = _np(emo["valence"]).reshape(-1)
        rows["arousal"] = _np(emo["arousal"]).reshape(-1)
        rows["expression"] = _np(emo["expression"])
    return rows


def reconstruction_rows(rec: dict) -> dict[str, np.ndarray]:
    """The reconstructor's outputs (B rows) -> the FLAME take columns (crop space)."""
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
    return rows


def landmarks_to_frame(lmk_norm: np.ndarray, tform: np.ndarray) -> np.ndarray:
    """(B, 68, 2) normalised crop coords, (B, 3, 3) crop -> frame -> (B, 68, 2) float32 frame pixels (NaN -> 0)."""
    return np.nan_to_num(crop_to_frame(lmk_norm, tform).astype(np.float32), nan=0.0)


def _model_meta(info: dict, device: str) -> dict:
    return {
        "name": str(info.get("name")),
        "kind": "flame",
        "trained": bool(info.get("trained")),
        "flame": str(info.get("flame")),
        "device": device,
        "precision": str(info.get("precision")),
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


def load_reconstructor(options: CaptureOptions, device: str) -> tuple[Any, dict, list[str]]:
    """The EMOCA/DECA reconstructor ``options`` ask for (the word "untrained": an untrained network, on the
    installed FLAME or else the synthetic head) -> (reconstructor, model meta, fallbacks)."""
    from backend.assets import resolve_capture
    from backend.models.reconstructor import FaceReconstructor

    untrained = options.model == UNTRAINED_MODEL
    found = resolve_capture(None if untrained else options.model, options.flame)
    recon = FaceReconstructor.from_paths(
        None if untrained else found.model,
        found.flame,
        device=device,
        landmarks=found.landmarks,
        mediapipe=found.mediapipe,
        precision=options.precision,
    )
    info = dict(recon.info)
    model_meta = _model_meta(info, device)
    return recon, model_meta, _model_fallbacks(model_meta, [str(m) for m in (info.get("warnings") or [])])


def load_networks(options: CaptureOptions, device: str, warn: Warn) -> Loaded:
    """Load the reconstructor (none for the open model) and the best installed emotion network; returns (nets,
    model meta, emotion meta, fallbacks). Every fallback is also passed to ``warn``."""
    import torch

    from backend.assets import resolve_emotion
    from backend.models.emotion import load_emotion_model

    fallbacks: list[str]
    if capture_kind(options) == "open":
        recon, model_meta, fallbacks = None, open_model_meta(device), []
    else:
        recon, model_meta, fallbacks = load_reconstructor(options, device)
    # EmoDECA reads a trained EMOCA's codes: never chosen for the open model or an untrained network
    trained_codes = recon is not None and model_meta["trained"]
    emotion_path = options.emotion if options.emotion is not None else resolve_emotion(trained_codes)
    # channels_last weights: the same outputs (to 1e-6) 2-3x faster on CPU for fer's separable convolutions.
    # (Module.to documents memory_format; torch's type stubs do not list it.)
    emotion = load_emotion_model(emotion_path, device=device)
    emotion.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    emo_meta = emotion.emotion_meta(fused=detector_gives_arkit(options.detector))
    if "estimated" in emo_meta["valence_arousal"] or "circumplex" in emo_meta["valence_arousal"]:
        fallbacks.append(f"emotion: {emo_meta['model']} (valence/arousal {emo_meta['valence_arousal']})")
    for msg in fallbacks:
        warn(msg)
    # CPU micro-batches bound a cancel's wait on the reconstructor; the emotion network alone is quick
    micro = CPU_MICRO_BATCH if device == "cpu" and recon is not None else max(1, options.batch_size or 128)
    threads = OPEN_TORCH_THREADS if recon is None and device == "cpu" else None
    nets = Networks(recon, emotion, device, micro, bool(options.detail), threads)
    return nets, model_meta, emo_meta, fallbacks


# what capture(networks=...) takes: loaded networks, or a function that returns them (a batch's shared cache:
# called in the loader thread, so the clip's footage is read meanwhile)
NetworkSource = Loaded | Callable[[], Loaded]


class Loader(threading.Thread):
    """load_networks in a thread; ``wait(cancel)`` returns its result or raises its error / 'cancelled'.

    ``preloaded``: a load_networks result makes it a no-op that is done at once; a function returning one is called
    in the thread instead of load_networks."""

    def __init__(self, options: CaptureOptions, device: str, warn: Warn, preloaded: NetworkSource | None = None):
        super().__init__(name="capture-loader", daemon=True)
        self.args = (options, device, warn)
        self.source = preloaded if callable(preloaded) else None
        self.result = None if callable(preloaded) else preloaded
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.done = threading.Event()
        if self.result is not None:
            self.done.set()

    def start(self) -> None:
        if not self.done.is_set():
            super().start()

    def run(self) -> None:
        t0 = time.perf_counter()
        try:
            self.result = self.source() if self.source is not None else load_networks(*self.args)
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
