#!/usr/bin/env bash
# Set up what is missing, then run the embedded demo or the tests.
#   bash tools/dev.sh demo   # install if needed, run the whole pipeline on a generated dataset
#   bash tools/dev.sh test   # install if needed, run the test suite
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"

install_apt() {
    local missing=()
    command -v ffmpeg >/dev/null || missing+=(ffmpeg)
    [ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
    command -v chromium >/dev/null || missing+=(chromium)  # the HTML reports' browser test
    [ ${#missing[@]} -eq 0 ] && return
    echo "[setup] apt: ${missing[*]}"
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get -o Acquire::Retries=5 update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get -o Acquire::Retries=5 install -y -qq "${missing[@]}" >/dev/null
}

# pip install with retries: a dropped connection to the registry should not fail a fresh set-up.
pip_install() {
    local attempt
    for attempt in 1 2 3; do
        "$VENV/bin/pip" install -q --retries 10 "$@" && return 0
        echo "[setup] pip install failed (attempt $attempt of 3); retrying in $((attempt * 15)) s" >&2
        sleep $((attempt * 15))
    done
    return 1
}

install_python() {
    local stamp="$VENV/.e3outlier-$(cat pyproject.toml tools/dev.sh tools/constraints.txt | sha256sum | cut -c1-12)"
    [ -f "$stamp" ] && return
    echo "[setup] python environment in $VENV (first time: a few minutes)"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    pip_install --upgrade pip
    pip_install --resume-retries 20 -c tools/constraints.txt torch==2.14.1 torchvision==0.29.1
    # every dependency pyproject.toml names (and its detector and test extras), at the pinned versions
    pip_install --resume-retries 20 -c tools/constraints.txt -e ".[detector,test]"
    "$VENV/bin/python" -c "import torch, torchvision, cv2, h5py, ffmpeg, sklearn, scipy, yaml, ultralytics, onnx, onnxruntime, xdist"
    rm -f "$VENV"/.e3outlier-*
    touch "$stamp"
}

install_apt
install_python
export YOLO_OFFLINE=1 MPLBACKEND=Agg
case "${1:-}" in
    demo) shift; exec "$VENV/bin/vad" demo --out "${DEMO_OUT:-runs/demo}" "$@" ;;
    # the tests in TEST_WORKERS processes (default 2, one per core of the machine it targets; one torch thread each,
    # tests/conftest.py), a test file per process; -n 0 runs them in this process
    test) shift; exec "$VENV/bin/python" -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadfile "$@" ;;
    *) echo "usage: bash tools/dev.sh demo|test [args]" >&2; exit 2 ;;
esac
