"""People: the opt-in store (SQLite, 0600, forget leaves no trace), enrolment from real
recordings through the CLI, and the node naming an enrolled voice in its messages."""

import json
import os
import sqlite3
import stat

import numpy as np
import pytest
import soundfile as sf

from conftest import SHARED, run_cli, shared_file
from robot_emotion.config import load
from robot_emotion.people.store import Matcher, PeopleError, PeopleStore
from robot_emotion.node.runner import replay

LIBRI = SHARED / "speech" / "librispeech"


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(256).astype(np.float32)
    return v / np.linalg.norm(v)


def test_store_is_private_and_forget_leaves_no_trace(tmp_path):
    path = tmp_path / "sub" / "people.db"
    store = PeopleStore(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    ada, bob = unit(1), unit(2)
    a = store.add("Ada Lovelace", ada, 3.0)
    b = store.add("Bobby Tables", bob, 4.0)
    assert (a, b) == ("P1", "P2")
    store.rename(b, "Robert Tables")
    raw = path.read_bytes()
    assert b"Ada Lovelace" in raw and ada.tobytes() in raw and b"Bobby Tables" not in raw
    store.forget(a)
    raw = path.read_bytes()
    # neither the name nor any 16-byte run of the vector survives anywhere in the file
    assert b"Ada Lovelace" not in raw
    assert not any(ada.tobytes()[i : i + 16] in raw for i in range(0, 1024, 16))
    assert bob.tobytes() in raw and [p.id for p in store.list()] == ["P2"]
    c = store.add("Cleo", unit(3), 1.0)
    assert c == "P3"  # a forgotten id is never handed out again
    store.forget(None)
    raw = path.read_bytes()
    assert b"Robert" not in raw and b"Cleo" not in raw and bob.tobytes()[:16] not in raw
    assert store.list() == []
    store.close()
    os.chmod(path, 0o644)
    with pytest.raises(PeopleError, match="chmod 600"):
        PeopleStore(path)


def test_cli_enrol_list_rename_forget_on_real_voices(tmp_path):
    first = shared_file(LIBRI / "spk1_snt1.wav")
    store = tmp_path / "people.db"
    r = run_cli("people", "--store", str(store), "enroll", "Ada", "--from", str(first))
    assert r.returncode == 0, r.stderr
    assert "enrolled P1 Ada" in r.stdout
    r = run_cli("people", "--store", str(store), "enroll", "Ada", "--from", str(LIBRI / "spk1_snt2.wav"))
    assert "added a voice to P1" in r.stdout, r.stdout + r.stderr
    r = run_cli("people", "--store", str(store), "enroll", "Zed", "--from", str(LIBRI / "spk2_snt1.wav"))
    assert "enrolled P2 Zed" in r.stdout, r.stderr
    people = json.loads(run_cli("people", "--store", str(store), "list", "--json").stdout)
    assert [(p["id"], p["name"], p["voices"]) for p in people] == [("P1", "Ada", 2), ("P2", "Zed", 1)]
    assert all(1.0 < p["seconds"] < 10.0 for p in people)  # seconds of speech, not of file
    with sqlite3.connect(store) as db:
        voice = db.execute("SELECT vector FROM embeddings WHERE person = 2").fetchone()[0]
    assert run_cli("people", "--store", str(store), "rename", "P2", "Zoe").returncode == 0
    r = run_cli("people", "--store", str(store), "forget", "P2")
    assert r.returncode == 0 and "forgot 1 person" in r.stdout
    raw = store.read_bytes()
    assert b"Zed" not in raw and b"Zoe" not in raw and voice[:16] not in raw and b"Ada" in raw
    r = run_cli("people", "--store", str(store), "forget", "P9")
    assert r.returncode == 3 and r.stderr.count("\n") == 1 and "no person P9" in r.stderr
    assert run_cli("people", "--store", str(store), "forget", "--all").returncode == 0
    raw = store.read_bytes()
    assert b"Ada" not in raw and json.loads(run_cli("people", "--store", str(store), "list", "--json").stdout) == []


def _conversation(tmp_path):
    """spk1, spk2, spk1 again, with pauses that close turns: real read speech."""
    gap = np.zeros(int(1.5 * 16000), np.float32)
    parts = []
    for name in ("spk1_snt2", "spk2_snt2", "spk1_snt3", "spk2_snt3"):
        x, sr = sf.read(shared_file(LIBRI / f"{name}.wav"), dtype="float32")
        assert sr == 16000
        parts += [x, gap]
    path = tmp_path / "talk.wav"
    sf.write(path, np.concatenate([gap] + parts), 16000, subtype="PCM_16")
    return path


def _people_in(events):
    return [
        (e["speaker"], (e["person"] or {}).get("id"), (e["person"] or {}).get("name"))
        for e in events
        if e["topic"] == "utterance" and e["final"]
    ]


def test_replay_names_the_enrolled_voice_and_remembers_strangers(tmp_path):
    talk = _conversation(tmp_path)
    store = tmp_path / "people.db"
    assert (
        run_cli("people", "--store", str(store), "enroll", "Ada", "--from", str(LIBRI / "spk1_snt1.wav")).returncode
        == 0
    )
    overrides = [
        "asr.enabled=false",
        "faces.enabled=false",
        "emotion.enabled=false",
        'publish.endpoint="tcp://127.0.0.1:*"',
        "people.enabled=true",
        f'people.store="{store}"',
        "people.remember=true",
        "people.remember_after_s=3",
    ]
    cfg = load(None, overrides=overrides)[0]
    out = []
    node = replay(cfg, str(talk), sinks=[out.append])
    assert not node.errors, node.errors
    got = _people_in(out)
    assert len(got) == 4, got
    assert got[0][1:] == ("P1", "Ada") and got[2][1:] == ("P1", "Ada")
    assert got[1][1] != "P1" and got[3][1] != "P1"
    # spk2 spoke 1.7 + 1.9 s in two turns: remembered as an anonymous person by its second turn
    stored = PeopleStore(store).list()
    assert [(p.id, p.name, p.source) for p in stored] == [("P1", "Ada", "enrolled"), ("P2", None, "remembered")]
    assert got[3][1:] == ("P2", None)
    assert all(0 < (e["person"] or {"confidence": 1})["confidence"] <= 1 for e in out if e["topic"] == "utterance")
    # a restart: the same people, the same ids, from the first turn on
    out2 = []
    replay(cfg, str(talk), sinks=[out2.append])
    assert [g[1:] for g in _people_in(out2)] == [("P1", "Ada"), ("P2", None), ("P1", "Ada"), ("P2", None)]
    assert len(PeopleStore(store).list()) == 2  # nobody stored twice


def test_people_off_by_default_and_match_model_is_fit_on_dev():
    cfg = load(None)[0]
    assert cfg.people.enabled is False
    m = Matcher.load()
    assert 0 < m.threshold < 1 and m.meta["script"] == "benchmarks/people/fit.py"
    assert m.meta["dev"]["false_accept_never_enrolled"] <= 0.01
    # more cosine, more confidence; the same cosine over more speech, more confidence
    assert m.p(0.9, 3.0)[0] > m.p(0.6, 3.0)[0]
