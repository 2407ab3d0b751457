"""MTCNN's whole-frame face search on one RGB frame, with its resampling done in batches.

This is facenet-pytorch's ``detect_face`` (three stages: PNet on an image pyramid, RNet on
24x24 crops of the candidates, ONet on 48x48 crops) for a single frame, with one change:
facenet resamples every pyramid level and every candidate crop with its own
``F.interpolate(mode="area")`` call (adaptive average pooling), ~90 calls a search on a
640x360 frame and 15% of the face thread's time. Here they all come from one integral image
of the frame, each stage's crops in one vectorised gather: the same pooling windows and means
(summed in float64 instead of float32), so the same faces (``tests/test_faces.py`` compares
both on the real face video and the MELD clip).

``search(frame_rgb, mtcnn)`` -> (boxes (N, 4), probs (N,), landmarks (N, 5, 2)), float32,
largest box first, as ``MTCNN.detect(frame, landmarks=True)`` orders them.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch


def integral_image(frame: np.ndarray) -> np.ndarray:
    """(H + 1, W + 1, C) float64: entry [y, x] is the sum of frame[:y, :x] (exact)."""
    return cv2.integral(np.ascontiguousarray(frame), sdepth=cv2.CV_64F).reshape(
        frame.shape[0] + 1, frame.shape[1] + 1, -1
    )


def _windows(start: np.ndarray, size: np.ndarray, out: int) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive pooling's windows (torch's start = floor(i * size / out), end = ceil((i + 1) *
    size / out)) for K regions: two (K, out) arrays of absolute indices."""
    i = np.arange(out)
    lo = start[:, None] + (i[None, :] * size[:, None]) // out
    hi = start[:, None] - (-(i[None, :] + 1) * size[:, None]) // out
    return lo, hi


def area_crops(ii: np.ndarray, y0, y1, x0, x1, out_h: int, out_w: int) -> torch.Tensor:
    """The regions frame[y0:y1, x0:x1] (arrays of K) average-pooled to out_h x out_w and
    normalised as MTCNN's nets expect: (K, C, out_h, out_w) float32."""
    y0, y1, x0, x1 = (np.asarray(v, np.int64).reshape(-1) for v in (y0, y1, x0, x1))
    ys, ye = _windows(y0, y1 - y0, out_h)
    xs, xe = _windows(x0, x1 - x0, out_w)
    flat, w1 = ii.reshape(-1, ii.shape[2]), ii.shape[1]  # (take on flat indices: 2x a 2-D gather)
    Y0, Y1, X0, X1 = ys[:, :, None] * w1, ye[:, :, None] * w1, xs[:, None, :], xe[:, None, :]
    corner = lambda idx: flat.take(idx.ravel(), 0)  # noqa: E731
    sums = corner(Y1 + X1) - corner(Y0 + X1) - corner(Y1 + X0) + corner(Y0 + X0)
    sums = sums.reshape(len(y0), out_h, out_w, -1)
    mean = sums / ((ye - ys)[:, :, None] * (xe - xs)[:, None, :])[..., None]
    return torch.from_numpy(((mean - 127.5) * 0.0078125).astype(np.float32)).permute(0, 3, 1, 2)


def area_resize(ii: np.ndarray, out_h: int, out_w: int) -> torch.Tensor:
    """The whole frame average-pooled to out_h x out_w, normalised: (1, C, out_h, out_w).
    Rows first, then columns: two gathers of whole rows instead of four of pixels."""
    ys, ye = _windows(np.zeros(1, np.int64), np.array([ii.shape[0] - 1]), out_h)
    xs, xe = _windows(np.zeros(1, np.int64), np.array([ii.shape[1] - 1]), out_w)
    ys, ye, xs, xe = ys[0], ye[0], xs[0], xe[0]
    rows = ii.take(ye, 0) - ii.take(ys, 0)  # (out_h, W + 1, C)
    mean = (rows.take(xe, 1) - rows.take(xs, 1)) / ((ye - ys)[:, None] * (xe - xs)[None, :])[..., None]
    return torch.from_numpy(((mean - 127.5) * 0.0078125).astype(np.float32)).permute(2, 0, 1)[None]


def onet_landmarks(boxes: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """ONet's landmark outputs (K, 10: five x, then five y, in units of the box) -> frame
    coordinates (K, 5, 2), with facenet-pytorch's +1 / -1 box conventions."""
    bw, bh = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    return torch.stack(
        [bw[:, None] * pts[:, :5] + boxes[:, :1] - 1, bh[:, None] * pts[:, 5:10] + boxes[:, 1:2] - 1], -1
    )


def _crops(ii, boxes, w, h, size):
    """facenet's crops of ``boxes`` (pad(): truncated, clipped to the frame) -> (valid, crops)."""
    from facenet_pytorch.models.utils.detect_face import pad

    y, ey, x, ex = pad(boxes, w, h)
    valid = (ey > y - 1) & (ex > x - 1)  # facenet skips empty crops too
    return valid, area_crops(ii, y[valid] - 1, ey[valid], x[valid] - 1, ex[valid], size, size)


@torch.inference_mode()
def search(frame_rgb: np.ndarray, mtcnn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from facenet_pytorch.models.utils.detect_face import (
        batched_nms,
        batched_nms_numpy,
        bbreg,
        generateBoundingBox,
        rerec,
    )

    none = np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
    h, w = frame_rgb.shape[:2]
    ii = integral_image(frame_rgb)
    device, th = mtcnn.device, mtcnn.thresholds
    scale = 12.0 / mtcnn.min_face_size
    side, scales = min(h, w) * scale, []
    while side >= 12:
        scales.append(scale)
        scale, side = scale * mtcnn.factor, side * mtcnn.factor

    # Stage 1: PNet over the pyramid, NMS within each scale, then across scales.
    boxes, picks, offset = [], [], 0
    for s in scales:
        im = area_resize(ii, int(h * s + 1), int(w * s + 1)).to(device)
        reg, probs = mtcnn.pnet(im)
        b, inds = generateBoundingBox(reg, probs[:, 1], s, th[0])
        boxes.append(b)
        picks.append(batched_nms(b[:, :4], b[:, 4], inds, 0.5) + offset)
        offset += b.shape[0]
    boxes = torch.cat(boxes)[torch.cat(picks)]
    zeros = torch.zeros(len(boxes), dtype=torch.int64, device=boxes.device)  # one image
    boxes = boxes[batched_nms(boxes[:, :4], boxes[:, 4], zeros, 0.7)]
    regw, regh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    boxes = rerec(
        torch.stack(
            [
                boxes[:, 0] + boxes[:, 5] * regw,
                boxes[:, 1] + boxes[:, 6] * regh,
                boxes[:, 2] + boxes[:, 7] * regw,
                boxes[:, 3] + boxes[:, 8] * regh,
                boxes[:, 4],
            ],
            1,
        )
    )
    if len(boxes) == 0:
        return none

    # Stage 2: RNet on 24x24 crops.
    valid, im = _crops(ii, boxes, w, h, 24)
    boxes = boxes[torch.from_numpy(valid).to(boxes.device)]
    reg, prob = mtcnn.rnet(im.to(device))
    score = prob[:, 1]
    keep = score > th[1]
    boxes, reg, score = boxes[keep, :4], reg[keep], score[keep]
    boxes = torch.cat((boxes, score[:, None]), 1)
    pick = batched_nms(boxes[:, :4], boxes[:, 4], torch.zeros_like(score, dtype=torch.int64), 0.7)
    boxes = rerec(bbreg(boxes[pick], reg[pick]))
    if len(boxes) == 0:
        return none

    # Stage 3: ONet on 48x48 crops: box, landmarks, probability.
    valid, im = _crops(ii, boxes, w, h, 48)
    boxes = boxes[torch.from_numpy(valid).to(boxes.device)]
    reg, pts, prob = mtcnn.onet(im.to(device))
    score = prob[:, 1]
    keep = score > th[2]
    boxes, reg, pts, score = boxes[keep, :4], reg[keep], pts[keep], score[keep]
    boxes = torch.cat((boxes, score[:, None]), 1)
    points = onet_landmarks(boxes, pts)
    boxes = bbreg(boxes, reg)
    pick = batched_nms_numpy(boxes[:, :4], boxes[:, 4], torch.zeros_like(score, dtype=torch.int64), 0.7, "Min")
    boxes, points = boxes[pick].float().cpu().numpy(), points[pick].float().cpu().numpy()
    if len(boxes) == 0:
        return none
    order = np.argsort((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[::-1]
    return (boxes[order, :4].astype(np.float32), boxes[order, 4].astype(np.float32), points[order].astype(np.float32))
