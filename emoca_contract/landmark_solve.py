"""The landmark-driven retarget's numerics (numpy only): what both the add-on (custom shape keys in Blender) and the
backend (the ARKit map's fits, the benchmarks) solve, once.

* :func:`bounded_lsq`: bounded least squares for many frames at once, with a ridge and a smoothness term across
  frames, solved exactly (projected Newton; the smoothed problem's Newton systems are block tridiagonal);
* :func:`similarity` / :func:`face_size`: aligning two faces' landmarks, and the face size errors are given in;
* :func:`take_neutral`, :func:`motion_onto`, :func:`solve_landmarks`: a take's landmark motion relative to its
  least expressive frames, moved onto a character's landmarks (rotation, scale and proportions), and the key
  weights that reproduce it.

Conventions: landmarks (L, 3) in one right-handed frame and unit per face; motion (N, L, 3) is offsets from a
neutral; a key's effect (L, 3) is what the key at weight 1 does to the landmarks (linear keys: weight w moves
them by w times it); weights (N, K). Regularisers are given relative to the mean squared effect of one key
(``mean(diag(A^T A))``), so they mean the same on a face in metres or in centimetres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ARMIJO = 1e-4  # sufficient-decrease constant of the projected line search
MAX_NEWTON = 60  # projected Newton iterations (it converges in a handful; this is a guard)
WINDOW, OVERLAP = 300, 30  # frames per block-tridiagonal solve of a smoothed problem, and their overlap
BATCH_FRAMES = 2048  # frames whose Newton systems are factorised at once (memory: BATCH_FRAMES * K * K floats)


# ------------------------------------------------------------------------------------------- bounded least squares
# The solver works on blocks: w (B, T, K) is B independent problems of T frames coupled by the smoothness term
# (T = 1 when there is none), every step batched over the blocks.
def _laplacian(w: np.ndarray) -> np.ndarray:
    """The path graph's Laplacian along each block's frames applied to w (B, T, K): n_t w_t - w_{t-1} - w_{t+1}."""
    out = np.zeros_like(w)
    d = w[:, 1:] - w[:, :-1]
    out[:, 1:] += d
    out[:, :-1] -= d
    return out


def _objective(w: np.ndarray, q: np.ndarray, c: np.ndarray, smooth: float) -> np.ndarray:
    """Each block's objective (B,): sum_t w_t^T Q w_t / 2 - c_t^T w_t + smooth |w_t - w_{t-1}|^2 / 2."""
    f = (0.5 * (w @ q) * w - c * w).sum((1, 2))
    if smooth > 0 and w.shape[1] > 1:
        f += 0.5 * smooth * ((w[:, 1:] - w[:, :-1]) ** 2).sum((1, 2))
    return f


def _gradient(w: np.ndarray, q: np.ndarray, c: np.ndarray, smooth: float) -> np.ndarray:
    g = w @ q - c
    return g + smooth * _laplacian(w) if smooth > 0 else g


def _newton_step(q: np.ndarray, smooth: float, free: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve H_FF x = rhs on each block's free variables, H = I (x) Q + smooth * Laplacian (x) I (the block Thomas
    algorithm along the frames, batched over blocks). free (B, T, K) bool, rhs (B, T, K) -> x (B, T, K), zero
    where not free (there the system is the identity)."""
    nb, nt, k = rhs.shape
    f = free.astype(np.float64)
    counts = np.full(nt, 2.0)
    counts[[0, -1]] = 1.0 if nt > 1 else 0.0
    u = -smooth * f[:, :-1] * f[:, 1:]  # (B, T-1, K): the off-diagonal blocks are diagonal
    eye = np.eye(k)
    factors = np.empty((nb, nt, k, k + 1))
    for t in range(nt):
        ft = f[:, t]
        m = (q + smooth * counts[t] * eye) * (ft[:, :, None] * ft[:, None, :]) + (1.0 - ft)[:, :, None] * eye
        y = rhs[:, t].copy()
        if t > 0:
            m -= u[:, t - 1][:, :, None] * factors[:, t - 1, :, :k]
            y -= u[:, t - 1] * factors[:, t - 1, :, k]
        coupling = u[:, t][:, :, None] * eye if t < nt - 1 else np.zeros((nb, k, k))
        factors[:, t] = np.linalg.solve(m, np.concatenate([coupling, y[:, :, None]], axis=2))
    x = np.empty_like(rhs)
    x[:, -1] = factors[:, -1, :, k]
    for t in range(nt - 2, -1, -1):
        x[:, t] = factors[:, t, :, k] - np.einsum("bij,bj->bi", factors[:, t, :, :k], x[:, t + 1])
    return x * f


def _line_search(w, step, g, q, c, smooth, lower, upper) -> np.ndarray:
    """The projected Armijo search along clip(w + s * step), one s per block."""
    f0 = _objective(w, q, c, smooth)
    scale = np.ones(len(w))
    for _ in range(40):
        trial = np.clip(w + scale[:, None, None] * step, lower, upper)
        decrease = (g * (trial - w)).sum((1, 2))
        bad = _objective(trial, q, c, smooth) > f0 + ARMIJO * decrease + 1e-13 * np.abs(f0)
        if not bad.any():
            break
        scale = np.where(bad, 0.5 * scale, scale)
    return np.clip(w + scale[:, None, None] * step, lower, upper)


def _solve_blocks(q, c, lower, upper, smooth, start, tol) -> np.ndarray:
    """Projected Newton (Bertsekas 1982) on blocks c, start (B, T, K): the minimiser within the bounds."""
    w = np.clip(start, lower, upper)
    diag = np.diag(q) + (2.0 * smooth if w.shape[1] > 1 else 0.0)
    for _ in range(MAX_NEWTON):
        g = _gradient(w, q, c, smooth)
        moved = w - np.clip(w - g / diag, lower, upper)  # the scaled projected gradient: zero at the optimum
        if np.abs(moved).max(initial=0.0) <= tol:
            break
        width = np.minimum(np.abs(moved), 1e-3 * np.minimum(upper - lower, 1.0))
        held = ((w <= lower + width) & (g > 0)) | ((w >= upper - width) & (g < 0))  # at a bound, pushed outwards
        step = _newton_step(q, smooth, ~held, -g * ~held)
        step = np.where(held, -g / diag, step)  # held variables: a scaled gradient step (the projection keeps them)
        w = _line_search(w, step, g, q, c, smooth, lower, upper)
    return w


def _windows(n: int) -> list[tuple[int, int]]:
    """Overlapping windows [start, stop) of one length, min(n, WINDOW), covering frames 0..n."""
    if n <= WINDOW:
        return [(0, n)]
    starts = list(range(0, n - WINDOW, WINDOW - OVERLAP)) + [n - WINDOW]
    return [(s, s + WINDOW) for s in starts]


def _ramp(start: int, stop: int, n: int, overlap: int) -> np.ndarray:
    """A window's blending weights (stop - start,): a linear fade over the part it shares with a neighbour."""
    r = np.ones(stop - start)
    if start > 0:
        r[:overlap] = np.linspace(0.0, 1.0, overlap + 2)[1:-1]
    if stop < n:
        r[-overlap:] = np.minimum(r[-overlap:], np.linspace(1.0, 0.0, overlap + 2)[1:-1])
    return r


def bounded_lsq(
    a: np.ndarray,
    b: np.ndarray,
    lower: np.ndarray | float,
    upper: np.ndarray | float,
    ridge: float = 0.0,
    smoothness: float = 0.0,
    start: np.ndarray | None = None,
    tol: float = 1e-9,
) -> np.ndarray:
    """Weights W (N, K) minimising sum_t |A w_t - b_t|^2 / 2 + ridge |w_t|^2 / 2 + smoothness |w_t - w_{t-1}|^2 / 2
    with lower <= w <= upper.

    a (M, K) the system (a column per unknown), b (N, M) one target per frame, lower/upper (K,) or scalars
    (-inf/inf allowed), ridge and smoothness absolute (>= 0). Exact to ``tol`` (the scaled projected gradient,
    in the units of w); a singular system needs ``ridge`` > 0 or a bound on every direction it cannot see. A
    smoothed problem longer than :data:`WINDOW` frames is solved in windows overlapping by :data:`OVERLAP` frames,
    blended across the overlap (the smoothing's reach is a few frames, far shorter than the overlap).
    """
    a = np.atleast_2d(np.asarray(a, np.float64))
    b = np.atleast_2d(np.asarray(b, np.float64))
    k = a.shape[1]
    lo = np.broadcast_to(np.asarray(lower, np.float64), (k,)).copy()
    hi = np.broadcast_to(np.asarray(upper, np.float64), (k,)).copy()
    if b.shape[1] != a.shape[0] or (lo > hi).any() or ridge < 0 or smoothness < 0:
        raise ValueError(f"bounded_lsq: a {a.shape}, b {b.shape}, bounds {lo.shape}, ridge {ridge}, "
                         f"smoothness {smoothness}")  # fmt: skip
    q = a.T @ a + ridge * np.eye(k)
    c = b @ a  # (N, K): the quadratic is w^T Q w / 2 - c^T w per frame
    w0 = np.linalg.lstsq(q, c.T, rcond=None)[0].T if start is None else np.asarray(start, np.float64)
    n = len(b)
    if smoothness <= 0 or n <= 1:
        out = np.empty((n, k))
        for s in range(0, n, BATCH_FRAMES):
            e = min(s + BATCH_FRAMES, n)
            out[s:e] = _solve_blocks(q, c[s:e, None], lo, hi, 0.0, w0[s:e, None], tol)[:, 0]
        return out
    windows = _windows(n)
    per_batch = max(1, BATCH_FRAMES // (windows[0][1] - windows[0][0]))
    out, total = np.zeros((n, k)), np.zeros(n)
    for i in range(0, len(windows), per_batch):
        group = windows[i : i + per_batch]
        rows = np.array([np.arange(s, e) for s, e in group])  # (B, T)
        w = _solve_blocks(q, c[rows], lo, hi, smoothness, w0[rows], tol)
        for (s, e), wb in zip(group, w):
            ramp = _ramp(s, e, n, OVERLAP)
            out[s:e] += ramp[:, None] * wb
            total[s:e] += ramp
    return out / total[:, None]


# ------------------------------------------------------------------------------------------------- alignment
@dataclass(frozen=True)
class Similarity:
    """x -> scale * rotation @ x + translation."""

    scale: float
    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Points (..., 3) moved."""
        return self.scale * np.asarray(points, np.float64) @ self.rotation.T + self.translation

    def apply_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """Offsets (..., 3) moved (scale and rotation, no translation)."""
        return self.scale * np.asarray(vectors, np.float64) @ self.rotation.T


def similarity(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> Similarity:
    """The similarity that best maps src (L, 3) onto dst (L, 3) in least squares (Umeyama 1991; no reflection)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    ms, md = w @ src, w @ dst
    xs, xd = src - ms, dst - md
    cov = (w[:, None] * xd).T @ xs
    u, sv, vt = np.linalg.svd(cov)
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ d @ vt
    var = (w * (xs**2).sum(1)).sum()
    scale = float(np.trace(np.diag(sv) @ d) / var) if var > 0 else 1.0
    return Similarity(scale, rotation, md - scale * rotation @ ms)


def face_size(landmarks: np.ndarray) -> float:
    """A face's size from its landmarks (L, 3): the geometric mean of their extents along the two main axes of
    the point set (sqrt(width * height) of a frontal face's landmark box), whatever the frame's orientation."""
    p = np.asarray(landmarks, np.float64)
    x = p - p.mean(0)
    axes = np.linalg.svd(x, full_matrices=False)[2][:2]
    extent = np.ptp(x @ axes.T, axis=0)
    return float(np.sqrt(extent[0] * extent[1]))


# ----------------------------------------------------------------------------------------- motion onto a character
def take_neutral(landmarks: np.ndarray, reference: np.ndarray | None = None, fraction: float = 0.1) -> np.ndarray:
    """A take's neutral landmarks (L, 3): the mean of its least expressive frames (the ``fraction`` of frames,
    at least one, whose landmarks lie nearest ``reference``, default the median frame). landmarks (N, L, 3)."""
    lm = np.asarray(landmarks, np.float64)
    ref = np.median(lm, axis=0) if reference is None else np.asarray(reference, np.float64)
    distance = np.linalg.norm(lm - ref, axis=2).mean(1)
    count = max(1, int(round(fraction * len(lm))))
    return lm[np.argsort(distance, kind="stable")[:count]].mean(0)


@dataclass(frozen=True)
class Onto:
    """How a source face's motion is moved onto a target face: x_target = align(proportions * x_source)."""

    align: Similarity
    proportions: np.ndarray  # (3,) per-axis factors in the source frame (1 = the source's proportions)

    def motion(self, motion: np.ndarray) -> np.ndarray:
        """Source offsets (..., L, 3) -> target offsets (..., L, 3)."""
        return self.align.apply_vectors(np.asarray(motion, np.float64) * self.proportions)


def onto(source: np.ndarray, target: np.ndarray, proportions: bool = True, limit: float = 2.0,
         weights: np.ndarray | None = None) -> Onto:  # fmt: skip
    """The mapping of motion from the source face's landmarks (L, 3) onto the target's (L, 3): the similarity
    between them, then (``proportions``) per source axis the ratio of the target's landmark spread to the
    source's after alignment (a wider or longer face moves wider or longer), each within [1/limit, limit].
    ``weights`` (L,): how much each landmark counts (default 1)."""
    w = np.ones(len(source)) if weights is None else np.asarray(weights, np.float64)
    align = similarity(source, target, w)
    factors = np.ones(3)
    if proportions:
        back = (np.asarray(target, np.float64) - align.translation) @ align.rotation / align.scale
        src = np.asarray(source, np.float64)
        factors = np.clip(_spread(back, w) / np.maximum(_spread(src, w), 1e-12), 1.0 / limit, limit)
    return Onto(align, factors)


def _spread(points: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted standard deviation of points (L, 3) along each axis (3,)."""
    w = weights / weights.sum()
    mean = w @ points
    return np.sqrt(w @ (points - mean) ** 2)


CONTOUR = np.arange(17)  # iBUG-68's jaw contour: where head models and detectors disagree most


def landmark_weights(n: int, contour: float) -> np.ndarray:
    """How much each of n landmarks counts (n,): 1, the iBUG-68 contour ``contour`` (68 landmarks only)."""
    w = np.ones(n)
    if n == 68:
        w[CONTOUR] = contour
    return w


@dataclass
class SolveOptions:
    """The landmark solve's settings. ``smoothness`` and ``ridge`` are relative to one key's mean squared effect;
    ``neutral_fraction`` is the share of least expressive frames that make the take's neutral; ``proportions``
    scales the motion per axis to the character's face; ``contour_weight`` is how much the 17 jaw-contour points
    count (0: not at all; head models and detectors place them differently); ``robust`` is the number of
    reweighting passes (a landmark the keys follow worse than the median one counts (median / its error)^2: where
    the two faces' landmark conventions differ, the solve leans on the others)."""

    smoothness: float = 0.05
    ridge: float = 1e-3
    neutral_fraction: float = 0.1
    proportions: bool = True
    contour_weight: float = 0.0
    robust: int = 2


@dataclass
class LandmarkSolve:
    """A solve's result: weights (N, K), the target motion (N, L, 3) in the character's frame, the motion the
    weights reproduce (N, L, 3), the character's face size and the mean landmark error in % of it."""

    weights: np.ndarray
    target: np.ndarray
    reproduced: np.ndarray
    face_size: float
    error_pct: float


def solve_weights(effects: np.ndarray, motion: np.ndarray, lower: np.ndarray | float, upper: np.ndarray | float,
                  smoothness: float = 0.0, ridge: float = 1e-3, landmark_weights: np.ndarray | None = None,
                  start: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Key weights (N, K) reproducing landmark motion (N, L, 3) with key effects (K, L, 3), within the bounds;
    ``smoothness`` and ``ridge`` relative to the mean squared effect of one key; ``landmark_weights`` (L,) how much
    each landmark counts (default 1); ``start`` (N, K) where the solver starts (a previous solve's weights)."""
    e = np.asarray(effects, np.float64)
    lw = np.ones(e.shape[1]) if landmark_weights is None else np.asarray(landmark_weights, np.float64)
    root = np.repeat(np.sqrt(lw), 3)  # (3L,)
    a = e.reshape(len(e), -1).T * root[:, None]  # (3L, K)
    unit = float(np.mean((a**2).sum(0))) or 1.0
    b = np.asarray(motion, np.float64).reshape(len(motion), -1) * root
    return bounded_lsq(a, b, lower, upper, ridge=ridge * unit, smoothness=smoothness * unit, start=start,
                       tol=1e-6)  # fmt: skip


def solve_landmarks(
    effects: np.ndarray,
    character: np.ndarray,
    take_landmarks: np.ndarray,
    model_neutral: np.ndarray,
    lower: np.ndarray | float = 0.0,
    upper: np.ndarray | float = 1.0,
    options: SolveOptions | None = None,
) -> LandmarkSolve:
    """The whole solve: a take's model landmarks (N, L, 3) (head pose removed) made motion relative to the take's
    neutral (:func:`take_neutral` near ``model_neutral`` (L, 3)), moved onto the character's landmarks (L, 3)
    (:func:`onto`), and the weights of the character's keys (effects (K, L, 3)) that reproduce it."""
    opt = options or SolveOptions()
    take_landmarks = np.asarray(take_landmarks, np.float64)
    neutral = take_neutral(take_landmarks, model_neutral, opt.neutral_fraction)
    base = landmark_weights(len(character), opt.contour_weight)
    mapping = onto(neutral, character, opt.proportions, weights=base)
    target = mapping.motion(take_landmarks - neutral)
    effects = np.asarray(effects, np.float64)
    weights = solve_weights(effects, target, lower, upper, opt.smoothness, opt.ridge, base)
    reproduced = np.einsum("nk,klc->nlc", weights, effects)
    for _ in range(max(0, opt.robust)):  # each pass starts from the last one's weights
        lw = reweighted(base, np.linalg.norm(reproduced - target, axis=2))
        weights = solve_weights(effects, target, lower, upper, opt.smoothness, opt.ridge, lw, start=weights)
        reproduced = np.einsum("nk,klc->nlc", weights, effects)
    size = face_size(character)
    used = base > 0
    error = np.linalg.norm(reproduced - target, axis=2)[:, used].mean() / size * 100.0 if len(target) else 0.0
    return LandmarkSolve(weights, target, reproduced, size, float(error))


def reweighted(base: np.ndarray, errors: np.ndarray) -> np.ndarray:
    """Landmark weights (L,) after a pass with errors (N, L): ``base`` times (median / rms error)^2 for landmarks
    worse than the median of those ``base`` uses."""
    rms = np.sqrt((errors**2).mean(0))
    scale = float(np.median(rms[base > 0])) if (base > 0).any() else 0.0
    if scale <= 0:
        return base
    return base / np.maximum(rms / scale, 1.0) ** 2
