"""Live microphone via sounddevice: 16 kHz mono int16 blocks into a bounded queue.

The PortAudio callback only timestamps and enqueues (never blocks, never allocates much);
overflows of our queue and PortAudio input overflows are both counted.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from robot_emotion import SAMPLE_RATE
from robot_emotion.config import MicrophoneConfig
from robot_emotion.sources.base import AudioBlock, AudioQueue
from robot_emotion.errors import InputError, quiet_stderr


class SourceError(InputError, RuntimeError):
    """A device that cannot be opened or that disappeared (one-line message)."""


def device_arg(spec: str):
    """A config device spec as sounddevice takes it: None (default), an index or a name."""
    if spec == "":
        return None
    return int(spec) if spec.isdigit() else spec


class MicrophoneSource:
    name = "microphone"

    def __init__(self, cfg: MicrophoneConfig, clock, out: AudioQueue, recorder=None):
        self.cfg, self.clock, self.out, self.recorder = cfg, clock, out, recorder
        self.state = "stopped"
        self.portaudio_overflows = 0
        self._stream = None
        self._gain = float(10 ** (cfg.gain_db / 20))
        self.lost = threading.Event()
        self._t0: float | None = None
        self._n = 0
        self.last_callback = 0.0  # time.monotonic() of the latest block (watchdog)
        self._started = 0.0

    def start(self) -> None:
        try:
            import sounddevice as sd
        except OSError as e:  # libportaudio2 missing
            raise SourceError(f"microphone unavailable: {e}") from None
        try:
            try:
                self._open(sd)
            except Exception:  # PortAudioError, ValueError for unknown device names
                # PortAudio lists the devices once, when the process first loads it: a USB
                # microphone plugged in (or a sound server started) since is not in that list.
                self._close()
                if not _rescan_devices(sd):
                    raise
                self._open(sd)
        except Exception as e:
            self._close()
            raise SourceError(f"cannot open microphone {self.cfg.device or '(default)'}: {e}") from None
        self.state = "running"

    def _open(self, sd) -> None:
        self._close()
        stream = sd.InputStream(
            samplerate=SAMPLE_RATE,
            channels=1,
            dtype="int16",
            blocksize=SAMPLE_RATE * self.cfg.block_ms // 1000,
            device=device_arg(self.cfg.device),
            callback=self._callback,
            latency="low",  # ALSA's pulse plugin otherwise buffers ~2 s before the first callback
            finished_callback=self._finished,
        )
        self._stream = stream
        with _streams_lock:
            _open_streams.add(id(stream))
        self._started = time.monotonic()
        stream.start()

    def _close(self) -> None:
        if self._stream is not None:
            self._stream.close(ignore_errors=True)
            with _streams_lock:
                _open_streams.discard(id(self._stream))
            self._stream = None

    def _callback(self, indata, frames, time_info, status) -> None:
        self.last_callback = time.monotonic()
        if status.input_overflow:
            self.portaudio_overflows += 1
        # Time by sample count from the first callback: callback timing jitters by tens of
        # ms, the sample clock does not, and the recorded wav is laid out the same way.
        if self._t0 is None:
            self._t0 = self.clock.now() - frames / SAMPLE_RATE
        t = self._t0 + self._n / SAMPLE_RATE
        self._n += frames
        samples = indata[:, 0].copy()
        if self._gain != 1.0:
            samples = np.clip(samples * self._gain, -32768, 32767).astype(np.int16)
        self.out.put_nowait(AudioBlock(t, samples))
        if self.recorder is not None:
            self.recorder.write_audio(samples, t)

    def check_alive(self, timeout_s: float = 3.0, startup_s: float = 10.0) -> bool:
        """A stream can stall without an error when its device goes away: watch the callbacks.

        Some backends (ALSA's pulse plugin) take over a second to deliver the first block,
        hence the longer grace period before the first callback.
        """
        now = time.monotonic()
        if self.state == "running":
            silent = now - (self.last_callback or self._started)
            if silent > (timeout_s if self.last_callback else startup_s):
                self.state = "lost"
                self.lost.set()
        return not self.lost.is_set()

    def _finished(self) -> None:
        if self.state == "running":  # not stopped by us: the device went away
            self.state = "lost"
            self.lost.set()

    def reopen(self) -> bool:
        """After a loss: open the device again (the runner retries for microphone.lost_grace_s).
        Capture times restart from the session clock, so the gap stays a gap."""
        self._t0, self._n, self.last_callback = None, 0, 0.0
        try:
            with quiet_stderr():  # each failed try: PortAudio/ALSA lines that say nothing new
                self.start()  # (closes the lost stream first)
        except SourceError:
            return False
        self.lost.clear()
        return True

    def stop(self) -> None:
        self.state = "stopped"
        self._close()


# Streams this module holds open in the process: PortAudio can only list the devices again
# (terminate, initialise) while none is open, since terminating closes every stream.
_open_streams: set[int] = set()
_streams_lock = threading.Lock()


def _rescan_devices(sd) -> bool:
    """List the audio devices again; False where a stream of this process is still open."""
    with _streams_lock:
        if _open_streams:
            return False
        sd._terminate()
        sd._initialize()
        return True
