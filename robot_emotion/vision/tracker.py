"""Multi-face tracker: stable ids, smoothed expression, mouth activity and a time-stamped history.

Matching: every live track predicts its box at the new time with a constant-velocity model
(velocity = EMA of box displacement per second, extrapolated at most MAX_EXTRAPOLATE_S);
cost = (1 - IoU) + 0.3 x centre distance / face size, pairs are gated (IoU >= iou_min, or the
centre within 0.6 face sizes with a size ratio in [0.6, 1.67]) and solved with the Hungarian
algorithm (scipy.optimize.linear_sum_assignment). Unmatched detections open new tracks (ids
from 0, never reused); tracks unseen for more than `max_age_s` (1 s) are retired, but their
history stays queryable until it is `history_s` old.

Mouth activity (per track, from MouthSample measured by faces.py on eye-aligned crops):
  motion_t   = max(0, D(mouth_t, mouth_prev) - 1.5 D(control_t, control_prev)) / face intensity std,
               D = mean absolute difference of zero-mean patches, minimised over +-1 px shifts
               (absorbs landmark jitter); the control patch (nose bridge / cheeks) cancels what
               the whole face does (pose, lighting, blur), so only lip motion remains. The 1.5
               weight was chosen so that a still face swaying +-25 px, +-4 deg roll and +-8 %
               scale reads ~0.003 while real speech (MELD clip) reads ~0.06 and the demo
               session's talking mouths ~0.23.
  activity_t = mean(motion over the last MOUTH_WINDOW_S) + std(openness over that window).
Samples more than 0.5 s apart are not differenced. Values are calibrated for the 5 Hz face rate:
a still mouth (also a still face moving as a whole) reads ~0.00-0.02, speech ~0.05-0.3.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment


@dataclass
class MouthSample:
    openness: float  # dark (lip gap / open mouth) fraction of the mouth box, 0..1
    mouth: np.ndarray  # MOUTH_PATCH grey patch of the mouth, zero-mean
    control: np.ndarray  # same size patch over the nose / upper cheeks, zero-mean
    scale: float  # intensity std of the face, for normalising differences


MOUTH_WINDOW_S = 0.8
MAX_DIFF_GAP_S = 0.5
MAX_EXTRAPOLATE_S = 0.5
CONTROL_WEIGHT = 1.5


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)

    def area(z):
        return (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])

    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def shift_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |a - b| of zero-mean patches, minimised over +-1 px shifts of a."""
    h, w = a.shape
    bb = b[1 : h - 1, 1 : w - 1]
    bb = bb - bb.mean()
    best = np.inf
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            aa = a[1 + dy : h - 1 + dy, 1 + dx : w - 1 + dx]
            best = min(best, float(np.abs(aa - aa.mean() - bb).mean()))
    return best


@dataclass
class HistoryEntry:
    t: float
    box: np.ndarray
    mouth_open: float
    mouth_activity: float
    feats: np.ndarray | None
    expression: np.ndarray | None = None  # this frame's FER probabilities (not smoothed)


@dataclass
class Track:
    id: int
    box: np.ndarray
    landmarks: np.ndarray
    score: float
    first_t: float
    last_t: float
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))
    hits: int = 1
    expression: np.ndarray | None = None  # EMA of probs, MELD order
    feats: np.ndarray | None = None  # latest penultimate expression features
    mouth_open: float = 0.0
    mouth_activity: float = 0.0
    speaking: bool = False
    history: deque = field(default_factory=deque)
    _mouth: MouthSample | None = None
    _mouth_t: float = -np.inf
    _recent: deque = field(default_factory=deque)  # (t, openness, motion or nan)

    def predict(self, t: float) -> np.ndarray:
        dt = float(np.clip(t - self.last_t, 0.0, MAX_EXTRAPOLATE_S))
        box = self.box + self.velocity * dt
        if box[2] - box[0] < 4 or box[3] - box[1] < 4:  # a shrinking prediction collapsed
            return self.box.copy()
        return box

    def update_mouth(self, t: float, sample: MouthSample) -> None:
        motion = np.nan
        if self._mouth is not None and 0 < t - self._mouth_t <= MAX_DIFF_GAP_S:
            d_mouth = shift_diff(sample.mouth, self._mouth.mouth)
            d_ctrl = shift_diff(sample.control, self._mouth.control)
            motion = max(0.0, d_mouth - CONTROL_WEIGHT * d_ctrl) / sample.scale
        self._mouth, self._mouth_t = sample, t
        self._recent.append((t, sample.openness, motion))
        while self._recent and self._recent[0][0] < t - MOUTH_WINDOW_S - 1e-6:
            self._recent.popleft()
        opens = np.array([r[1] for r in self._recent])
        motions = np.array([r[2] for r in self._recent])
        motions = motions[np.isfinite(motions)]
        self.mouth_open = float(sample.openness)
        self.mouth_activity = float(
            (motions.mean() if motions.size else 0.0) + (opens.std() if opens.size > 1 else 0.0)
        )


class FaceTracker:
    def __init__(
        self,
        max_age_s: float = 1.0,
        iou_min: float = 0.2,
        history_s: float = 30.0,
        expression_alpha: float = 0.5,
        velocity_alpha: float = 0.5,
    ):
        self.max_age_s, self.iou_min, self.history_s = max_age_s, iou_min, history_s
        self.expression_alpha, self.velocity_alpha = expression_alpha, velocity_alpha
        self.tracks: list[Track] = []  # live
        self.retired: list[Track] = []  # deleted, history kept for tracks_between
        self._next_id = 0
        self._last_t = -np.inf

    # ------------------------------------------------------------------ matching
    def _cost(self, preds: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        iou = iou_matrix(preds, boxes)
        size_p = np.sqrt((preds[:, 2] - preds[:, 0]) * (preds[:, 3] - preds[:, 1]))
        size_d = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        cp = (preds[:, :2] + preds[:, 2:]) / 2
        cd = (boxes[:, :2] + boxes[:, 2:]) / 2
        dist = np.linalg.norm(cp[:, None] - cd[None], axis=2) / np.maximum(size_p[:, None], 1.0)
        ratio = size_d[None, :] / np.maximum(size_p[:, None], 1.0)
        ok = (iou >= self.iou_min) | ((dist < 0.6) & (ratio > 0.6) & (ratio < 1.67))
        return np.where(ok, 1.0 - iou + 0.3 * dist, 1e6)

    def update(self, t: float, boxes, scores, landmarks, expressions=None, feats=None, mouths=None) -> list[Track]:
        """Associate this frame's detections; returns the track of each detection, in order.

        expressions (N, 7) probs, feats (N, D) and mouths (N MouthSample) are optional.
        """
        t = float(t)
        if t < self._last_t:
            raise ValueError(f"frame time went backwards: {t} < {self._last_t}")
        self._last_t = t
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        n = len(boxes)
        self._retire(t)
        assigned: list[Track | None] = [None] * n
        if self.tracks and n:
            preds = np.stack([tr.predict(t) for tr in self.tracks])
            cost = self._cost(preds, boxes)
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols):
                if cost[r, c] < 1e5:
                    assigned[c] = self.tracks[r]
        for i in range(n):
            tr = assigned[i]
            lm = np.asarray(landmarks[i], np.float64).reshape(5, 2)
            if tr is None:
                tr = Track(self._next_id, boxes[i].copy(), lm, float(scores[i]), t, t)
                self._next_id += 1
                self.tracks.append(tr)
                assigned[i] = tr
            else:
                dt = t - tr.last_t
                if dt > 1e-6:
                    inst = (boxes[i] - tr.box) / dt
                    a = self.velocity_alpha if tr.hits > 1 else 1.0
                    tr.velocity = a * inst + (1 - a) * tr.velocity
                tr.box, tr.landmarks, tr.score = boxes[i].copy(), lm, float(scores[i])
                tr.last_t, tr.hits = t, tr.hits + 1
            p = None
            if expressions is not None:
                p = np.asarray(expressions[i], np.float64)
                tr.expression = (
                    p
                    if tr.expression is None
                    else (self.expression_alpha * p + (1 - self.expression_alpha) * tr.expression)
                )
                tr.expression = tr.expression / tr.expression.sum()
            if feats is not None:
                tr.feats = np.asarray(feats[i], np.float32)
            if mouths is not None and mouths[i] is not None:
                tr.update_mouth(t, mouths[i])
            tr.history.append(HistoryEntry(t, tr.box.copy(), tr.mouth_open, tr.mouth_activity, tr.feats, p))
            while tr.history and tr.history[0].t < t - self.history_s:
                tr.history.popleft()
        return assigned

    def _retire(self, t: float) -> None:
        keep = []
        for tr in self.tracks:
            (keep if t - tr.last_t <= self.max_age_s else self.retired).append(tr)
        self.tracks = keep
        self.retired = [tr for tr in self.retired if tr.last_t >= t - self.history_s]

    # ------------------------------------------------------------------ queries
    def visible(self, t: float) -> list[Track]:
        """Tracks updated at time t (i.e. detected in the latest frame)."""
        return [tr for tr in self.tracks if tr.last_t == t]

    def tracks_between(self, t0: float, t1: float) -> dict[int, dict[str, np.ndarray]]:
        """Per track with samples in [t0, t1]: arrays t (K,), box (K, 4), mouth_open (K,),
        mouth_activity (K,), feats (K, D) (rows without features are zeros; K x 0 if none),
        and "expression" (K', 7) per-frame probabilities when the classifier ran."""
        out = {}
        for tr in sorted(self.retired + self.tracks, key=lambda z: z.id):
            rows = [h for h in tr.history if t0 <= h.t <= t1]
            if not rows:
                continue
            dims = {h.feats.shape[0] for h in rows if h.feats is not None}
            d = dims.pop() if len(dims) == 1 else 0
            feats = np.zeros((len(rows), d), np.float32)
            for k, h in enumerate(rows):
                if h.feats is not None and d:
                    feats[k] = h.feats
            out[tr.id] = {
                "t": np.array([h.t for h in rows]),
                "box": np.stack([h.box for h in rows]).astype(np.float32),
                "mouth_open": np.array([h.mouth_open for h in rows], np.float32),
                "mouth_activity": np.array([h.mouth_activity for h in rows], np.float32),
                "feats": feats,
            }
            expr = [h.expression for h in rows if h.expression is not None]
            if expr:
                out[tr.id]["expression"] = np.stack(expr).astype(np.float32)
        return out

    def activity_series(self, t0: float, t1: float) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """{track id: (times, mouth activity)} over [t0, t1], the input of assign_active_speaker."""
        return {k: (v["t"], v["mouth_activity"]) for k, v in self.tracks_between(t0, t1).items()}
