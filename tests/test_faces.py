"""Faces on real media: MTCNN detection + tracking, FER2013 CNN layout check, expression output."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

from robot_emotion import EMOTIONS

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
SINGLE = FIXTURES / "single_face.mp4"
MELD = FIXTURES / "meld_train_dia1_utt0.mp4"


def _weights() -> Path:
    from robot_emotion.vision.expression import default_weights_path

    path = default_weights_path()
    if not path.is_file():
        pytest.skip(f"FER weights not installed at {path}")
    return path


def _need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"fixture not available: {path}")
    return path


# ------------------------------------------------------------------ numpy reference (Keras graph)
def keras_numpy_forward(h5_path, x_nhwc):
    """Interpret the hdf5's Keras functional graph in float64 numpy, NHWC, with TF 'same'
    padding. Independent of the PyTorch rebuild: it uses the kernels in their stored layout."""
    import h5py

    with h5py.File(h5_path, "r") as f:
        cfg = json.loads(f.attrs["model_config"])
        weights: dict = {}

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                weights.setdefault(name.split("/")[0], {})[name.split("/")[-1].split(":")[0]] = np.asarray(
                    obj[()], np.float64
                )

        f["model_weights"].visititems(visit)

    def pad(x, k, s, mode, value=0.0):
        if mode == "valid":
            return x
        pads = []
        for n in x.shape[1:3]:
            out = -(-n // s)
            total = max((out - 1) * s + k - n, 0)
            pads.append((total // 2, total - total // 2))
        return np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=value)

    def windows(x, k, s):
        ho, wo = (x.shape[1] - k) // s + 1, (x.shape[2] - k) // s + 1
        for i in range(k):
            for j in range(k):
                yield i, j, x[:, i : i + (ho - 1) * s + 1 : s, j : j + (wo - 1) * s + 1 : s, :]

    def conv(x, kern, s, mode):
        x = pad(x, kern.shape[0], s, mode)
        return sum(win @ kern[i, j] for i, j, win in windows(x, kern.shape[0], s))

    def depthwise(x, kern, mode):
        x = pad(x, kern.shape[0], 1, mode)
        return sum(win * kern[i, j, :, 0] for i, j, win in windows(x, kern.shape[0], 1))

    vals = {}
    for layer in cfg["config"]["layers"]:
        c, kind, name = layer["config"], layer["class_name"], layer["config"]["name"]
        ins = [vals[n[0]] for node in layer["inbound_nodes"] for n in node]
        w = weights.get(name, {})
        if kind == "InputLayer":
            y = x_nhwc.astype(np.float64)
        elif kind == "Conv2D":
            y = conv(ins[0], w["kernel"], c["strides"][0], c["padding"]) + w.get("bias", 0.0)
        elif kind == "SeparableConv2D":
            y = conv(depthwise(ins[0], w["depthwise_kernel"], c["padding"]), w["pointwise_kernel"], 1, "valid")
        elif kind == "BatchNormalization":
            y = (ins[0] - w["moving_mean"]) / np.sqrt(w["moving_variance"] + c["epsilon"]) * w["gamma"] + w["beta"]
        elif kind == "Activation" and c["activation"] == "relu":
            y = np.maximum(ins[0], 0.0)
        elif kind == "Activation" and c["activation"] == "softmax":
            e = np.exp(ins[0] - ins[0].max(-1, keepdims=True))
            y = e / e.sum(-1, keepdims=True)
        elif kind == "MaxPooling2D":
            k, s = c["pool_size"][0], c["strides"][0]
            xp = pad(ins[0], k, s, c["padding"], value=-np.inf)
            y = np.max(np.stack([win for _, _, win in windows(xp, k, s)]), axis=0)
        elif kind == "Add":
            y = sum(ins)
        elif kind == "GlobalAveragePooling2D":
            y = ins[0].mean(axis=(1, 2))
        else:
            raise AssertionError(f"unexpected Keras layer {kind}")
        vals[name] = y
    return y, vals


def test_torch_rebuild_matches_numpy_reference():
    import torch
    from robot_emotion.vision.expression import ExpressionNet

    path = _weights()
    net = ExpressionNet.from_keras_h5(path)
    x = np.random.default_rng(0).uniform(-1, 1, (4, 64, 64, 1)).astype(np.float32)
    ref, vals = keras_numpy_forward(path, x)
    with torch.no_grad():
        logits, feats = net(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    probs = torch.softmax(logits.double(), dim=1).numpy()
    np.testing.assert_allclose(probs, ref, atol=1e-4)
    last_add = [k for k in vals if k.startswith("add")][-1]
    np.testing.assert_allclose(feats.numpy(), vals[last_add].mean(axis=(1, 2)), atol=1e-4)
    assert not np.allclose(ref[0], ref[1], atol=1e-3)  # the check is not trivially satisfied


def test_folded_batchnorm_is_the_same_net():
    """The classifier runs the net with its BatchNorms folded into the convs: same outputs,
    and the Keras reference still holds for what it runs."""
    import torch
    from robot_emotion.vision.expression import ExpressionClassifier, ExpressionNet

    path = _weights()
    plain = ExpressionNet.from_keras_h5(path)
    folded = ExpressionClassifier(device="cpu", weights=path).net
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = np.random.default_rng(1).uniform(-1, 1, (3, 64, 64, 1)).astype(np.float32)
    ref, _ = keras_numpy_forward(path, x)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2))
    with torch.no_grad():
        (lp, fp), (lf, ff) = plain(xt), folded(xt.contiguous(memory_format=torch.channels_last))
    np.testing.assert_allclose(lf.numpy(), lp.numpy(), atol=1e-4)
    np.testing.assert_allclose(ff.numpy(), fp.numpy(), atol=1e-4)
    np.testing.assert_allclose(torch.softmax(lf.double(), 1).numpy(), ref, atol=1e-4)


def test_missing_weights_one_line_error(tmp_path, monkeypatch):
    from robot_emotion.vision.expression import ExpressionClassifier, ExpressionModelError

    missing = tmp_path / "nope" / "emotion_model.hdf5"
    monkeypatch.setenv("ROBOT_EMOTION_FER_H5", str(missing))
    with pytest.raises(ExpressionModelError) as err:
        ExpressionClassifier(device="cpu")
    msg = str(err.value)
    assert str(missing) in msg and "\n" not in msg


# ------------------------------------------------------------------ real video
def _frames_5hz(path: Path):
    import av

    with av.open(str(path)) as container:
        next_t = 0.0
        for frame in container.decode(video=0):
            t = float(frame.time)
            if t + 1e-6 >= next_t:
                next_t += 0.2
                yield t, frame.to_ndarray(format="rgb24")


@pytest.fixture(scope="module")
def pipeline():
    from robot_emotion.config import FacesConfig
    from robot_emotion.vision import FacePipeline

    _weights()
    return FacePipeline(FacesConfig(), device="cpu")


def _run(pipeline, path: Path):
    pipeline.reset()
    results = []
    for t, img in _frames_5hz(path):
        results.append((t, pipeline.process(img, t), dict(pipeline.timings_ms)))
    return results


@pytest.mark.parametrize("path", [SINGLE, MELD], ids=["single_face", "meld_clip"])
def test_detect_and_track_main_face(pipeline, path):
    results = _run(pipeline, _need(path))
    assert len(results) >= 10
    main_ids = []
    for _, faces, _ in results:
        if faces:
            main = max(faces, key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))
            main_ids.append(main["id"])
            assert list(main["expression"]) == list(EMOTIONS)
            assert abs(sum(main["expression"].values()) - 1.0) < 1e-5
            assert all(0.0 <= p <= 1.0 for p in main["expression"].values())
            assert len(main["landmarks"]) == 5 and main["score"] >= 0.9
            assert np.isfinite(main["mouth_activity"]) and main["mouth_activity"] >= 0
            assert isinstance(main["speaking"], bool)
    rate = len(main_ids) / len(results)
    assert rate >= 0.9, f"face found in {rate:.0%} of 5 Hz frames"
    assert len(set(main_ids)) == 1, f"main face changed id: {main_ids}"

    tracks = pipeline.tracker.tracks_between(0.0, 10.0)
    series = tracks[main_ids[0]]
    assert len(series["t"]) == len(main_ids) and series["feats"].shape == (len(main_ids), 128)
    assert series["box"].shape == (len(main_ids), 4)
    if path == MELD:  # Joey talks through the whole clip: his mouth must read as active
        from robot_emotion.vision.active_speaker import ACTIVITY_FLOOR

        act = series["mouth_activity"][series["t"] >= 0.5]
        assert np.median(act) > 2 * ACTIVITY_FLOOR, act


def test_whole_face_motion_is_not_mouth_activity(pipeline):
    """A still face swaying (+-25 px, +-4 deg roll, +-8 % scale) must stay under the floor."""
    import av
    import cv2
    from robot_emotion.vision.active_speaker import ACTIVITY_FLOOR
    from robot_emotion.vision.tracker import FaceTracker

    with av.open(str(_need(SINGLE))) as container:
        img = next(container.decode(video=0)).to_ndarray(format="rgb24")
    h, w = img.shape[:2]
    pipeline.tracker = FaceTracker()
    acts = []
    for k in range(16):
        t = 0.2 * k
        m = cv2.getRotationMatrix2D((w / 2, h / 2), 4 * np.sin(np.pi * t), 1 + 0.08 * np.sin(2 * np.pi * t / 3))
        m[:, 2] += (25 * np.sin(2 * np.pi * t / 1.7), 10 * np.cos(2 * np.pi * t / 2.3))
        faces = pipeline.process(cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT), t)
        assert len(faces) == 1 and faces[0]["id"] == 0
        acts.append(faces[0]["mouth_activity"])
    assert np.mean(acts[2:]) < ACTIVITY_FLOOR, np.round(acts, 3)


def test_smiling_face_reads_as_joy(pipeline):
    """single_face.mp4: the man smiles broadly from ~0.6 s on."""
    results = _run(pipeline, _need(SINGLE))
    late = [faces[0]["expression"] for t, faces, _ in results if t >= 1.0 and faces]
    assert late and all(max(e, key=e.get) == "joy" for e in late), late


def test_detector_rejects_bad_frames():
    from robot_emotion.vision.faces import FaceDetector

    det = FaceDetector(device="cpu")
    with pytest.raises(ValueError, match="RGB uint8"):
        det.detect(np.zeros((10, 10), np.float32))
    boxes, probs, lms = det.detect(np.full((120, 160, 3), 127, np.uint8))
    assert boxes.shape == (0, 4) and probs.shape == (0,) and lms.shape == (0, 5, 2)
    # a frame smaller than the smallest face (a small replayed video): no face, no crash
    big = FaceDetector(min_face_px=500, device="cpu")
    boxes, probs, lms = big.detect(np.full((360, 640, 3), 127, np.uint8))
    assert boxes.shape == (0, 4) and lms.shape == (0, 5, 2)


@pytest.mark.parametrize("path", [SINGLE, MELD], ids=["single_face", "meld_clip"])
def test_following_known_faces_matches_a_search(path):
    """Between whole-frame searches (faces.detect_hz) known faces are followed by MTCNN's last
    two stages: on real faces the same faces, boxes and landmarks as a search, and a face that
    is gone is dropped (then the pipeline searches again)."""
    from robot_emotion.vision.faces import FaceDetector

    det = FaceDetector(min_face_px=40)
    frames = [img for _, img in _frames_5hz(_need(path))][:12]
    prev = det.detect(frames[0])[0]
    assert len(prev) >= 1
    for img in frames[1:]:
        searched, followed = det.detect(img), det.follow(img, prev)
        assert len(followed[0]) == len(searched[0])
        for box, lm in zip(followed[0], followed[2]):
            i = int(np.argmax([_iou(box, s) for s in searched[0]]))
            side = box[2] - box[0]
            assert _iou(box, searched[0][i]) > 0.75
            assert np.abs(lm - searched[2][i]).max() < 0.1 * side
        prev = followed[0]
    grey = np.full_like(frames[0], 128)
    assert len(det.follow(grey, prev)[0]) == 0


def _iou(a, b):
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("path", [SINGLE, MELD], ids=["single_face", "meld_clip"])
def test_batched_search_finds_what_facenet_finds(path):
    """mtcnn_search.search resamples from an integral image in batches instead of facenet's one
    F.interpolate(mode="area") per pyramid level and crop: on real faces the same faces, boxes,
    probabilities and landmarks as facenet-pytorch's own MTCNN.detect."""
    from robot_emotion.vision.faces import FaceDetector
    from robot_emotion.vision.mtcnn_search import search

    mtcnn = FaceDetector(min_face_px=40).mtcnn
    found = 0
    for _, img in list(_frames_5hz(_need(path)))[:10]:
        boxes, probs, points = mtcnn.detect(img, landmarks=True)
        mine = search(img, mtcnn)
        if boxes is None:
            assert len(mine[0]) == 0
            continue
        # (facenet-pytorch returns object arrays under recent numpy)
        boxes = np.asarray(boxes.tolist(), np.float32).reshape(-1, 4)
        assert len(mine[0]) == len(boxes)
        assert np.abs(mine[0] - boxes).max() < 0.01
        assert np.abs(mine[1] - np.asarray(probs.tolist(), np.float32)).max() < 1e-4
        assert np.abs(mine[2] - np.asarray(points.tolist(), np.float32).reshape(-1, 5, 2)).max() < 0.01
        found += len(boxes)
    assert found >= 10
