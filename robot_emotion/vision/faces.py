"""Face detection (MTCNN), eye-aligned crops and per-frame mouth measurements.

`FaceDetector.detect(frame_rgb)` -> (boxes (N, 4) [x0, y0, x1, y1], probs (N,), landmarks (N, 5, 2))
with MTCNN's landmark order: eye, eye, nose, mouth corner, mouth corner (image-left one first for
upright faces). Faces below `min_face_px` / above `max_face_px` (longer box side) or with
detection probability < `min_prob` (0.9) are dropped.

`align_face` rotates the face so the eyes are level and crops a square around the box with a
margin; landmarks are mapped into the crop. `measure_mouth` reads the mouth region of that
aligned crop; because the crop is normalised for position, scale and roll, the measurements do
not respond to whole-face motion (only to landmark jitter, which the tracker's control region
cancels, see tracker.py).

`FacePipeline` (bottom of this file) combines detector, tracker, expression CNN, mouth activity
and the active-speaker rule into `process(frame_rgb, t) -> list[dict]`.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from robot_emotion.compute import torch_device
from robot_emotion.vision.expression import torch_threads
from robot_emotion.vision.mtcnn_search import onet_landmarks, search
from robot_emotion.vision.tracker import MouthSample

ALIGN_SIZE = 112  # side of the aligned crop in px
ALIGN_MARGIN = 0.15  # margin added on each side, as a fraction of the box side
MOUTH_PATCH = (16, 24)  # (h, w) the mouth / control patches are resampled to


def check_frame(frame) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        desc = f"{frame.shape} {frame.dtype}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"expected an RGB uint8 frame of shape (H, W, 3), got {desc}")
    return frame


def _channels_last(net):
    """The network, called with its input in channels-last memory layout (see FaceDetector)."""
    import torch

    class ChannelsLast(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x.contiguous(memory_format=torch.channels_last))

    return ChannelsLast().eval()


class FaceDetector:
    """MTCNN (facenet-pytorch, weights ship in the wheel) with size and probability filters."""

    def __init__(self, min_face_px: int = 40, device: str = "auto", max_face_px: int = 2000, min_prob: float = 0.9):
        from facenet_pytorch import MTCNN

        self.device = torch_device(device)
        self.min_face_px, self.max_face_px, self.min_prob = min_face_px, max_face_px, min_prob
        # The pyramid starts at min_face_px, which is what keeps MTCNN fast on CPU.
        self.mtcnn = MTCNN(
            keep_all=True, min_face_size=max(12, int(min_face_px)), device=self.device, post_process=False
        )
        if self.device.type == "cpu":
            # facenet-pytorch hands its three nets NCHW tensors; torch's CPU max-pooling is 3-4x
            # faster on channels-last ones (RNet on 80 candidates: 26 -> 7 ms). Same detections
            # (boxes within 1e-4 px on the real MELD clip and face video); a frame 1.4-2.4x faster.
            for name in ("pnet", "rnet", "onet"):
                setattr(self.mtcnn, name, _channels_last(getattr(self.mtcnn, name)))

    def detect(self, frame_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        frame_rgb = check_frame(frame_rgb)
        # A frame smaller than the smallest face cannot hold one (and MTCNN's pyramid would be
        # empty: it crashes on torch.cat of nothing), e.g. a small replayed video.
        if min(frame_rgb.shape[:2]) < max(12, self.min_face_px):
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        # MTCNN.detect's search, its resampling batched (mtcnn_search.py)
        boxes, probs, points = search(frame_rgb, self.mtcnn)
        side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        keep = (probs >= self.min_prob) & (side >= self.min_face_px) & (side <= self.max_face_px)
        return boxes[keep], probs[keep], points[keep]

    def follow(self, frame_rgb: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Known faces, found again without a search: MTCNN's last two stages on a square crop
        around each face's previous box (RNet moves the box onto the face as it does for a
        search's candidates, ONet gives box, landmarks and probability), as in ``detect`` but
        ~3 ms a face instead of a whole-frame search. A face that moved out of its crop or left
        scores low and is dropped; two boxes that converged on one face keep one."""
        import torch
        from facenet_pytorch.models.utils.detect_face import rerec
        from torchvision.ops import nms

        frame_rgb = check_frame(frame_rgb)
        none = np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        if len(boxes) == 0:
            return none
        b = rerec(torch.as_tensor(np.asarray(boxes, np.float32)[:, :4].copy()))
        with torch.inference_mode():
            reg, prob = (o.float().cpu() for o in self.mtcnn.rnet(self._crops(frame_rgb, b, 24)))
            b = rerec(_regress(b, reg))
            reg, pts, prob = (o.float().cpu() for o in self.mtcnn.onet(self._crops(frame_rgb, b, 48)))
        points = onet_landmarks(b, pts)
        new, score = _regress(b, reg), prob[:, 1]
        side = torch.maximum(new[:, 2] - new[:, 0], new[:, 3] - new[:, 1])
        keep = (
            (score >= max(self.min_prob, self.mtcnn.thresholds[2]))
            & (side >= self.min_face_px)
            & (side <= self.max_face_px)
        )
        idx = torch.nonzero(keep).flatten()
        if len(idx) == 0:
            return none
        idx = idx[nms(new[idx], score[idx], 0.5)].sort().values
        return new[idx].numpy(), score[idx].numpy(), points[idx].numpy()

    def _crops(self, frame_rgb: np.ndarray, b, size: int):
        """Square crops of boxes ``b`` resampled to size x size, normalised as MTCNN's nets expect."""
        import torch
        from facenet_pytorch.models.utils.detect_face import pad

        h, w = frame_rgb.shape[:2]
        ys, eys, xs, exs = pad(b.clone(), w, h)
        crops = [
            cv2.resize(frame_rgb[y - 1 : ey, x - 1 : ex], (size, size), interpolation=cv2.INTER_AREA)
            if ey > y and ex > x
            else np.zeros((size, size, 3), np.uint8)
            for y, ey, x, ex in zip(ys, eys, xs, exs)
        ]
        x = (torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() - 127.5) * 0.0078125
        return x.to(self.device)


def _regress(b, reg):
    """MTCNN's box regression: offsets in units of the box's size (facenet-pytorch's bbreg)."""
    import torch

    bw, bh = b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1
    return b + reg * torch.stack([bw, bh, bw, bh], 1)


@dataclass
class AlignedFace:
    crop: np.ndarray  # (S, S, 3) RGB uint8, eyes level
    landmarks: np.ndarray  # (5, 2) landmarks in crop coordinates
    affine: np.ndarray  # (2, 3) frame -> crop
    roll_deg: float


def align_face(
    frame_rgb: np.ndarray, box, landmarks, size: int = ALIGN_SIZE, margin: float = ALIGN_MARGIN
) -> AlignedFace:
    """Rotate about the box centre so the eye line is horizontal; square crop with a margin."""
    box = np.asarray(box, np.float64)
    lm = np.asarray(landmarks, np.float64)
    (lx, ly), (rx, ry) = sorted(lm[:2].tolist())  # image-left eye first
    theta = math.atan2(ry - ly, rx - lx)
    side = max(box[2] - box[0], box[3] - box[1]) * (1.0 + 2.0 * margin)
    centre = np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])
    s = size / max(side, 1.0)
    c, si = math.cos(theta), math.sin(theta)
    a = s * np.array([[c, si], [-si, c]])  # rotate by -theta, then scale
    t = size / 2.0 - a @ centre
    affine = np.hstack([a, t[:, None]])
    crop = cv2.warpAffine(frame_rgb, affine, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return AlignedFace(crop, lm @ a.T + t, affine.astype(np.float32), math.degrees(theta))


def _patch(grey: np.ndarray, cx: float, cy: float, w: float, h: float) -> np.ndarray:
    """Bilinear resample of an axis-aligned region (centre, size) to MOUTH_PATCH."""
    ph, pw = MOUTH_PATCH
    m = np.array([[w / pw, 0, cx - w / 2], [0, h / ph, cy - h / 2]], np.float32)
    return cv2.warpAffine(
        grey, m, (pw, ph), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
    ).astype(np.float32)


def measure_mouth(aligned: AlignedFace) -> MouthSample:
    """Mouth region from the mouth corners (landmarks 3, 4) in the aligned crop.

    openness: fraction of mouth-box pixels darker than 0.6 x the median skin brightness (the
    gap between the lips / the oral cavity); the box spans 1.5 x the corner distance in width and
    from 0.35 above to 0.65 x that distance below the corner line, so a dropping jaw stays in it.
    The zero-mean patches feed the tracker's frame-difference energy.
    """
    grey = cv2.cvtColor(aligned.crop, cv2.COLOR_RGB2GRAY)
    lm = aligned.landmarks
    ml, mr = lm[3], lm[4]
    mw = max(float(np.linalg.norm(mr - ml)), 4.0)
    mc = (ml + mr) / 2.0
    mouth = _patch(grey, mc[0], mc[1] + 0.15 * mw, 1.5 * mw, 1.0 * mw)
    nose = lm[2]
    eyes_y = (lm[0, 1] + lm[1, 1]) / 2.0
    ctrl = _patch(grey, nose[0], (eyes_y + nose[1]) / 2.0, 1.5 * mw, max(nose[1] - eyes_y, 4.0))
    face = grey[grey.shape[0] // 4 : 3 * grey.shape[0] // 4, grey.shape[1] // 4 : 3 * grey.shape[1] // 4]
    skin = float(np.median(ctrl)) + 1e-3
    openness = float(np.mean(mouth < 0.6 * skin))
    scale = float(face.std()) + 4.0
    return MouthSample(openness, mouth - mouth.mean(), ctrl - ctrl.mean(), scale)


# ------------------------------------------------------------------------------- pipeline
SPEAKING_WINDOW_S = 1.0
SPEAKING_MIN_CONFIDENCE = 0.25
AUDIO_BUFFER_S = 30.0


class FacePipeline:
    """Detect -> align -> expression -> mouth -> track -> active speaker, for one frame.

    cfg is a robot_emotion.config.FacesConfig (min_face_px, max_face_px, rate_hz). Call
    `process(frame_rgb, t)` for the frames you want analysed (`due(t)` implements rate_hz for a
    caller that sees every camera frame). `speaking` per track, decided over the last
    SPEAKING_WINDOW_S:
      * speech_active=False passed to process -> nobody speaks;
      * audio energy pushed with `push_audio` (or speech_active=True) -> assign_active_speaker over
        the window picks at most one speaker (confidence >= 0.25); with pushed audio and
        speech_active=None, speech is assumed present when the mean energy of the last 0.5 s is
        above 4 x the 10th percentile of the buffered energy (~12 dB over the noise floor);
      * no audio information at all -> visual only: the most active mouth above the floor.
    torch_threads: CPU intra-op threads used inside process() (default 1: fast enough for 5 Hz
    and never fights the other stages for the cores; None = leave torch's setting).
    """

    def __init__(
        self,
        cfg=None,
        device: str = "auto",
        expression: bool = True,
        weights=None,
        tracker=None,
        torch_threads: int | None = 1,
    ):
        from robot_emotion.config import FacesConfig
        from robot_emotion.vision.expression import ExpressionClassifier
        from robot_emotion.vision.tracker import FaceTracker

        self.cfg = cfg if cfg is not None else FacesConfig()
        from robot_emotion.shared_models import shared

        self.detector = shared(
            ("mtcnn", self.cfg.min_face_px, self.cfg.max_face_px, device),
            lambda: FaceDetector(self.cfg.min_face_px, device=device, max_face_px=self.cfg.max_face_px),
        )
        self.classifier = None
        if expression:  # (weights given as an object are this caller's own: not shared)
            self.classifier = (
                shared(("fer", device, str(weights)), lambda: ExpressionClassifier(device=device, weights=weights))
                if weights is None or isinstance(weights, (str, os.PathLike))
                else ExpressionClassifier(device=device, weights=weights)
            )
        self.tracker = tracker if tracker is not None else FaceTracker()
        # Held while process() updates the tracker: another thread that reads it (tracks_between
        # for an utterance) takes it too.
        self.lock = threading.Lock()
        self.torch_threads = torch_threads
        self.timings_ms: dict[str, float] = {}
        self._audio: deque = deque()
        self._last_processed = -math.inf
        self._last_search = -math.inf  # the last whole-frame face search (detect_hz)
        self._boxes = np.zeros((0, 4), np.float32)  # the faces of the last processed frame

    def reset(self) -> None:
        """Forget tracks, audio and the rate clock (e.g. between offline clips); ids restart at 0."""
        from robot_emotion.vision.tracker import FaceTracker

        self.tracker = FaceTracker()
        self._audio.clear()
        self._last_processed = -math.inf
        self._last_search = -math.inf
        self._boxes = np.zeros((0, 4), np.float32)

    def due(self, t: float) -> bool:
        """True when a frame at time t should be processed to keep cfg.rate_hz."""
        return t - self._last_processed >= 0.999 / self.cfg.rate_hz

    def push_audio(self, times, energy) -> None:
        """Add audio energy samples (any rate, any unit; e.g. RMS per 30 ms VAD frame)."""
        for t, e in zip(np.atleast_1d(times), np.atleast_1d(energy)):
            self._audio.append((float(t), float(e)))
        while self._audio and self._audio[0][0] < self._audio[-1][0] - AUDIO_BUFFER_S:
            self._audio.popleft()

    def audio_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if not self._audio:
            return np.zeros(0), np.zeros(0)
        a = np.asarray(self._audio, np.float64)
        return a[:, 0], a[:, 1]

    def process(self, frame_rgb: np.ndarray, t: float, speech_active: bool | None = None) -> list[dict]:
        from robot_emotion import EMOTIONS

        frame_rgb = check_frame(frame_rgb)
        t = float(t)
        self._last_processed = t
        with torch_threads(self.torch_threads):
            t0 = time.perf_counter()
            boxes, probs, lms = self._find(frame_rgb, t)
            t1 = time.perf_counter()
            aligned = [align_face(frame_rgb, b, l) for b, l in zip(boxes, lms)]
            expr = feats = None
            if self.classifier is not None:
                expr, feats = self.classifier.predict([a.crop for a in aligned])
            t2 = time.perf_counter()
        mouths = [measure_mouth(a) for a in aligned]
        with self.lock:  # only the tracker's update: a reader never waits for a detection
            tracks = self.tracker.update(t, boxes, probs, lms, expressions=expr, feats=feats, mouths=mouths)
            speaker = self._speaker(t, speech_active)
        t3 = time.perf_counter()
        self.timings_ms = {
            "detect": (t1 - t0) * 1e3,
            "expression": (t2 - t1) * 1e3,
            "mouth_track": (t3 - t2) * 1e3,
            "total": (t3 - t0) * 1e3,
            "faces": len(tracks),
        }
        out = []
        for tr in tracks:
            tr.speaking = tr.id == speaker
            out.append(
                {
                    "id": tr.id,
                    "box": [float(v) for v in tr.box],
                    "landmarks": [[float(x), float(y)] for x, y in tr.landmarks],
                    "score": float(tr.score),
                    "expression": (
                        {e: float(p) for e, p in zip(EMOTIONS, tr.expression)} if tr.expression is not None else None
                    ),
                    "mouth_activity": float(tr.mouth_activity),
                    "speaking": bool(tr.speaking),
                }
            )
        return out

    def _find(self, frame_rgb: np.ndarray, t: float):
        """Faces in this frame: a whole-frame search detect_hz times a second, when no face is
        known, or when a known one was lost; in between, the known faces are followed (follow)."""
        hz = getattr(self.cfg, "detect_hz", 0.0)
        if hz > 0 and len(self._boxes) and t - self._last_search < 0.999 / hz:
            found = self.detector.follow(frame_rgb, self._boxes)
            if len(found[0]) == len(self._boxes):
                self._boxes = found[0]
                return found
        found = self.detector.detect(frame_rgb)
        self._last_search, self._boxes = t, found[0]
        return found

    def _speaker(self, t: float, speech_active: bool | None) -> int | None:
        from robot_emotion.vision.active_speaker import ACTIVITY_FLOOR, PAD_S, assign_active_speaker

        if speech_active is False:
            return None
        w0 = t - SPEAKING_WINDOW_S
        series = self.tracker.activity_series(w0 - PAD_S, t)
        series = {k: v for k, v in series.items() if v[0][-1] == t}  # visible now
        if not series:
            return None
        at, ae = self.audio_arrays()
        if speech_active is None and len(at) == 0:
            levels = {k: float(np.mean(a[tt >= w0])) for k, (tt, a) in series.items()}
            best = max(levels, key=levels.get)
            return best if levels[best] >= ACTIVITY_FLOOR else None
        if speech_active is None:
            recent = ae[at >= t - 0.5]
            if recent.size == 0 or recent.mean() <= 4.0 * max(np.percentile(ae, 10), 1e-12):
                return None
        tid, conf = assign_active_speaker(series, at, ae, w0, t)
        return tid if conf >= SPEAKING_MIN_CONFIDENCE else None
