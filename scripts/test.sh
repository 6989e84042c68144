#!/usr/bin/env bash
# Set up (with the dev extras) and run the whole test suite under a virtual X server.
#   bash scripts/test.sh [PYTEST ARGS...]
set -euo pipefail

# The shared libraries an `ldd` listing marks "not found", one a line.
missing_libraries() {
    awk '$2 == "=>" && $3 == "not" && $4 == "found" { print $1 }'
}

# Fails, with one line naming what is missing, when Qt's xcb platform plugin (the one napari's viewer loads
# under Xvfb) cannot load: Qt would otherwise abort the test run midway with "Fatal Python error: Aborted".
qt_preflight() {
    local python=$1 plugin missing
    plugin=$("$python" -c 'import importlib.util as u, pathlib as p; s = u.find_spec("PyQt6")
print(p.Path(s.submodule_search_locations[0], "Qt6", "plugins", "platforms", "libqxcb.so") if s else "")')
    if [[ -z $plugin ]]; then
        echo "test.sh: PyQt6 is not installed (bash scripts/setup.sh --dev installs it)" >&2
        return 1
    fi
    if [[ ! -f $plugin ]]; then
        echo "test.sh: PyQt6 has no xcb platform plugin at $plugin" >&2
        return 1
    fi
    missing=$(ldd "$plugin" | missing_libraries | paste -sd ' ')
    if [[ -n $missing ]]; then
        echo "test.sh: Qt cannot load its xcb platform plugin: missing $missing (install the system packages" \
            "that provide them; bash scripts/setup.sh --dev checks each one)" >&2
        return 1
    fi
}

main() {
    cd "$(dirname "${BASH_SOURCE[0]}")/.."
    bash scripts/setup.sh --dev
    qt_preflight .venv/bin/python
    exec xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python -m pytest "$@"
}

# Sourced (by the tests), it only defines the functions.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
