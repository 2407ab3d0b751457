#!/usr/bin/env python3
"""Serve a video file as a network camera (MJPEG over HTTP), looping at its frame rate.

    python tools/mjpeg_camera.py VIDEO --port 8080
    robot-emotion run --set camera.source="http://127.0.0.1:8080/stream.mjpg"

A camera you can unplug: kill this process and the node reports the camera ``lost``, goes
on audio-only and reconnects when it is started again (tests/test_device_loss.py). Also
handy to feed a recorded face video to `run` / `record` / `calibrate` on a robot-less desk.
"""

from __future__ import annotations

import argparse
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--host", default="127.0.0.1")
    args = ap.parse_args()
    cap = cv2.VideoCapture(args.video)
    if not cap.isOpened():
        raise SystemExit(f"mjpeg_camera: cannot open {args.video}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 15.0
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())
    if not frames:
        raise SystemExit(f"mjpeg_camera: no frames in {args.video}")

    class Stream(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            t0, i = time.monotonic(), 0
            try:
                while True:
                    jpg = frames[i % len(frames)]
                    self.wfile.write(
                        b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg) + jpg + b"\r\n"
                    )
                    i += 1
                    time.sleep(max(0.0, t0 + i / fps - time.monotonic()))
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *a):
            pass

    print(f"serving {len(frames)} frames at {fps:g} fps on http://{args.host}:{args.port}/stream.mjpg", flush=True)
    ThreadingHTTPServer((args.host, args.port), Stream).serve_forever()


if __name__ == "__main__":
    main()
