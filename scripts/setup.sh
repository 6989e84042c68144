#!/usr/bin/env bash
# Set up SLER-IR in ./.venv on a fresh Debian machine. Idempotent: a second run only checks.
#   bash scripts/setup.sh         runtime (CLI, library)
#   bash scripts/setup.sh --dev   plus napari, Triton and the test tools, and the X server for GUI tests
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0; [[ "${1:-}" == "--dev" ]] && dev=1

if [[ $dev == 1 ]] && ! command -v xvfb-run >/dev/null; then
    # napari renders through vispy/OpenGL: a real X server (Xvfb) with Mesa, and the libraries Qt 6 loads.
    sudo_cmd=""; [[ $(id -u) == 0 ]] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -q
    $sudo_cmd apt-get install -y -q xvfb xauth libgl1-mesa-dri libgl1 libegl1 libxkbcommon-x11-0 \
        libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 \
        libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libdbus-1-3 libfontconfig1 libglib2.0-0
fi

[[ -x .venv/bin/python ]] || python3 -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# Pinned here, loose in pyproject.toml: these two must match or open_clip fails to import.
"${pip[@]}" torch==2.14.1 torchvision==0.29.1
if [[ $dev == 1 ]]; then
    "${pip[@]}" -e ".[gui,kernels,train,dev]"
else
    "${pip[@]}" -e .
fi
