#!/usr/bin/env bash
# Download, on a machine with network, the wheels that benchmarks/gpu_check.sh needs on a GPU machine
# without network: the distributions in benchmarks/gpu_requirements.txt, at the versions constraints.txt
# pins, built for the GPU machine's Python (default 3.12) on manylinux x86_64, without their
# dependencies (the list holds those too). gpu_check.sh installs every wheel it finds in .whl/ (or
# $SCANLENS_WHEELS) with --no-index --no-deps into a temporary folder on that machine.
# .whl/ is git-ignored: name it explicitly where the working tree is copied to the GPU machine.
#
# Usage: bash benchmarks/gpu_wheels.sh [--python-version 3.12] [--dest .whl] [DIST ...]
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=3.12
DEST=.whl
DISTS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --python-version) PYVER="$2"; shift 2 ;;
    --dest) DEST="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) DISTS+=("$1"); shift ;;
  esac
done
if [ ${#DISTS[@]} -eq 0 ]; then
  mapfile -t DISTS < <(grep -v '^\s*#' benchmarks/gpu_requirements.txt | grep -v '^\s*$')
fi
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
norm() { tr 'A-Z_.' 'a-z--' <<<"$1"; }
SPECS=()
for dist in "${DISTS[@]}"; do
  pin=$(grep -v '+' constraints.txt | while IFS= read -r line; do
    [ "$(norm "${line%%==*}")" = "$(norm "$dist")" ] && echo "${line#*==}" && break; done || true)
  if [ -n "$pin" ]; then SPECS+=("$dist==$pin"); else echo "note: $dist is not pinned in constraints.txt: latest" >&2; SPECS+=("$dist"); fi
done
mkdir -p "$DEST"
PLATFORMS=()
for p in manylinux_2_34_x86_64 manylinux_2_31_x86_64 manylinux_2_28_x86_64 manylinux_2_27_x86_64 \
         manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done
# shellcheck disable=SC2068
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  ${PLATFORMS[@]} -d "$DEST" "${SPECS[@]}"
echo "wheels for Python $PYVER in $DEST ($(du -sh "$DEST" | cut -f1)):"
ls "$DEST"
