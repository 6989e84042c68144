#!/usr/bin/env bash
# Set up SLER-IR in ./.venv on a fresh Debian machine. Idempotent: a second run only checks.
#   bash scripts/setup.sh         runtime (CLI, library)
#   bash scripts/setup.sh --dev   plus napari, Triton and the test tools, and the X server for GUI tests
set -euo pipefail

# napari renders through vispy/OpenGL: a real X server (Xvfb) with Mesa, and the libraries Qt 6 loads.
GUI_PACKAGES=(xvfb xauth libgl1-mesa-dri libgl1 libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0
    libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0
    libdbus-1-3 libfontconfig1 libglib2.0-0)

# The named Debian packages that are not installed, one a line. Each is asked for on its own: a machine can
# have Xvfb and still lack a library Qt loads, and then Qt aborts the whole test run.
missing_packages() {
    local package
    for package in "$@"; do
        [[ $(dpkg-query -W -f='${Status}' "$package" 2>/dev/null) == "install ok installed" ]] || echo "$package"
    done
}

install_system_packages() {
    if ! command -v dpkg-query >/dev/null; then
        echo "setup.sh: not a Debian system: install by hand the equivalents of ${*}" >&2
        return
    fi
    local missing sudo_cmd=()
    mapfile -t missing < <(missing_packages "$@")
    ((${#missing[@]})) || return 0
    echo "setup.sh: installing ${missing[*]}"
    [[ $(id -u) == 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -q
    "${sudo_cmd[@]}" apt-get install -y -q "${missing[@]}"
}

main() {
    cd "$(dirname "${BASH_SOURCE[0]}")/.."
    local dev=0
    [[ ${1:-} == "--dev" ]] && dev=1
    ((dev)) && install_system_packages "${GUI_PACKAGES[@]}"

    [[ -x .venv/bin/python ]] || python3 -m venv .venv
    local pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
    # Pinned here, loose in pyproject.toml: these two must match or open_clip fails to import.
    "${pip[@]}" torch==2.14.1 torchvision==0.29.1
    if ((dev)); then
        "${pip[@]}" -e ".[gui,kernels,train,dev]"
    else
        "${pip[@]}" -e .
    fi
}

# Sourced (by the tests), it only defines the functions.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
