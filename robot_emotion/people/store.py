"""People who persist across sessions: an opt-in SQLite store of voice embeddings.

The store (``people.store``, default ``$XDG_DATA_HOME/robot-emotion/people.db``, mode 0600
in a 0700 folder) holds, per person, a stable id (``P1``, ``P2``, ... never reused: SQLite
AUTOINCREMENT), an optional name and embeddings: GE2E d-vectors of their voice
(audio/voice_encoder.py) and, where a face-identity network is configured, face embeddings
(kind ``face``; none is offline: facenet's InceptionResnetV1 weights are a download, so today
only voices are stored). Never raw audio or images. ``forget`` deletes with SQLite's
secure_delete on and VACUUMs, so the file keeps no trace of the vector or the name.

Matching is a fitted decision (``assets/people_match.json``, benchmarks/people/fit.py, on
development voices): a logistic model of the cosine to a person's voice and the seconds of
speech heard, and a probability threshold chosen on dev for a low false-accept rate (a
stranger called by someone's name costs more than a person not recognised).
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robot_emotion.audio.voice_decisions import Logistic, same_features
from robot_emotion.errors import InputError, UsageError

MATCH_ASSET = Path(__file__).resolve().parent.parent / "assets" / "people_match.json"
VOICE_MODEL = "ge2e-resemblyzer-0.1.4"
SCHEMA = """
CREATE TABLE IF NOT EXISTS people (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, source TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS embeddings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    person INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    kind TEXT NOT NULL, model TEXT NOT NULL, vector BLOB NOT NULL, seconds REAL NOT NULL,
    created REAL NOT NULL);
"""


class PeopleError(InputError):
    """The store cannot be used (unreadable, loose mode, unknown id)."""


def default_store() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "robot-emotion" / "people.db"


def store_path(cfg_store: str = "") -> Path:
    return Path(cfg_store).expanduser() if cfg_store else default_store()


@dataclass(frozen=True)
class Person:
    id: str  # "P<n>"
    name: str | None
    source: str  # enrolled | remembered
    created: float
    voices: int
    seconds: float


def _pid(n: int) -> str:
    return f"P{n}"


def _num(pid: str) -> int:
    if not (isinstance(pid, str) and pid[:1] == "P" and pid[1:].isdigit()):
        raise UsageError(f"person id must look like P3, got {pid!r} (robot-emotion people list)")
    return int(pid[1:])


class PeopleStore:
    """One SQLite file. Thread-safe (one connection behind a lock): the CLI uses it from the
    main thread, the node from its utterance thread."""

    def __init__(self, path: str | Path, create: bool = True):
        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise PeopleError(f"no people store at {self.path} (robot-emotion people enroll NAME --from FILE)")
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))  # 0600 before any byte
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o077:
            raise PeopleError(
                f"people store {self.path} is open to other users (mode {mode:04o}): run chmod 600 {self.path}"
            )
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA secure_delete=ON")  # deleted rows are zeroed, not left as free pages
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise PeopleError(f"cannot open people store {self.path}: {e}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def mtime(self) -> float:
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return 0

    # ---- people ---------------------------------------------------------------------------
    def list(self) -> list[Person]:
        with self._lock:
            rows = self._db.execute(
                "SELECT p.id, p.name, p.source, p.created, COUNT(e.id), COALESCE(SUM(e.seconds), 0) "
                "FROM people p LEFT JOIN embeddings e ON e.person = p.id AND e.kind = 'voice' "
                "GROUP BY p.id ORDER BY p.id"
            ).fetchall()
        return [Person(_pid(r[0]), r[1], r[2], r[3], r[4], float(r[5])) for r in rows]

    def add(self, name: str | None, voice: np.ndarray, seconds: float, source: str = "enrolled") -> str:
        """A new person with one voice embedding; returns the new stable id."""
        with self._lock:
            self._db.execute("BEGIN")
            cur = self._db.execute(
                "INSERT INTO people(name, source, created) VALUES (?, ?, ?)", (name, source, time.time())
            )
            self._add_voice(cur.lastrowid, voice, seconds)
            self._db.execute("COMMIT")
        return _pid(cur.lastrowid)

    def add_voice(self, pid: str, voice: np.ndarray, seconds: float) -> None:
        n = self._existing(pid)
        with self._lock:
            self._add_voice(n, voice, seconds)

    def _add_voice(self, n: int, voice: np.ndarray, seconds: float) -> None:
        v = np.asarray(voice, np.float32).reshape(-1)
        self._db.execute(
            "INSERT INTO embeddings(person, kind, model, vector, seconds, created) VALUES (?, 'voice', ?, ?, ?, ?)",
            (n, VOICE_MODEL, v.tobytes(), float(seconds), time.time()),
        )

    def _existing(self, pid: str) -> int:
        n = _num(pid)
        with self._lock:
            if self._db.execute("SELECT 1 FROM people WHERE id = ?", (n,)).fetchone() is None:
                raise PeopleError(f"no person {pid} in {self.path} (robot-emotion people list)")
        return n

    def find(self, name: str) -> list[str]:
        with self._lock:
            return [_pid(r[0]) for r in self._db.execute("SELECT id FROM people WHERE name = ?", (name,))]

    def rename(self, pid: str, name: str) -> None:
        n = self._existing(pid)
        with self._lock:
            self._db.execute("UPDATE people SET name = ? WHERE id = ?", (name, n))
            self._db.execute("VACUUM")  # the old name must not linger in a free page

    def forget(self, pid: str | None) -> int:
        """Delete one person (or everyone, ``pid=None``) for real; returns how many."""
        n = None if pid is None else self._existing(pid)
        with self._lock:
            where, arg = ("", ()) if n is None else (" WHERE id = ?", (n,))
            gone = self._db.execute("SELECT COUNT(*) FROM people" + where, arg).fetchone()[0]
            self._db.execute("DELETE FROM embeddings" + where.replace("id", "person"), arg)
            self._db.execute("DELETE FROM people" + where, arg)
            self._db.execute("VACUUM")  # rebuild the file: no page keeps the old rows
        return gone

    def voices(self) -> tuple[list[str], list[str | None], np.ndarray, np.ndarray]:
        """(ids, names, (n, 256) unit voices, seconds): each person's embeddings averaged,
        weighted by their seconds of speech."""
        with self._lock:
            rows = self._db.execute(
                "SELECT p.id, p.name, e.vector, e.seconds FROM people p JOIN embeddings e "
                "ON e.person = p.id WHERE e.kind = 'voice' AND e.model = ? ORDER BY p.id, e.id",
                (VOICE_MODEL,),
            ).fetchall()
        acc: dict[int, list] = {}
        for n, name, blob, sec in rows:
            v = np.frombuffer(blob, np.float32)
            a = acc.setdefault(n, [name, np.zeros_like(v, np.float64), 0.0])
            a[1] += v * max(sec, 0.1)
            a[2] += sec
        ids = [_pid(n) for n in acc]
        names = [a[0] for a in acc.values()]
        mat = np.stack([a[1] / max(np.linalg.norm(a[1]), 1e-12) for a in acc.values()]) if acc else np.zeros((0, 256))
        return ids, names, mat.astype(np.float32), np.asarray([a[2] for a in acc.values()])


class Matcher:
    """The fitted decision: p(same person | cosine, seconds heard) and its threshold."""

    def __init__(self, model: Logistic, threshold: float, meta: dict | None = None):
        self.model, self.threshold, self.meta = model, float(threshold), dict(meta or {})

    @classmethod
    def load(cls, path: str | Path = MATCH_ASSET) -> "Matcher":
        try:
            d = json.loads(Path(path).read_text())
            return cls(Logistic.from_dict(d["model"], 3), float(d["threshold"]), d.get("fit"))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise PeopleError(f"cannot read the people match model {path}: {e}") from None

    def save(self, path: str | Path, fit: dict) -> None:
        Path(path).write_text(
            json.dumps({"model": self.model.to_dict(), "threshold": self.threshold, "fit": fit}, indent=1) + "\n"
        )

    def p(self, cos, seconds) -> np.ndarray:
        return self.model.prob(same_features(cos, seconds))

    def identify(self, voice: np.ndarray, seconds: float, mat: np.ndarray) -> tuple[int | None, float]:
        """(row of the matched person or None, that row's probability)."""
        if mat.shape[0] == 0:
            return None, 0.0
        cos = mat @ np.asarray(voice, np.float32)
        i = int(np.argmax(cos))
        p = float(self.p(float(cos[i]), seconds)[0])
        return (i if p >= self.threshold else None), p
