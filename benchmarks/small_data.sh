#!/usr/bin/env bash
# Small-data check (not a CI gate): does the recipe beat the pixel baseline when data are scarce?
# BreastMNIST with 200 images per split (2D) and AdrenalMNIST3D with 80 volumes per split (3D),
# imported as a new user would (`scanlens import-medmnist --limit`), ingested, and cross-validated
# with 3 folds and `scanlens evaluate`'s defaults (the recipe in docs/recipe.md). MedMNIST's test
# split (limited likewise) is held out. Prints each evaluation's model-vs-baseline lines
# (benchmarks/cv_summary.py) and the wall time of the evaluation (training included).
#
#   bash benchmarks/small_data.sh [OUT] [extra `scanlens evaluate` flags...]
#   DATASETS="breast" bash benchmarks/small_data.sh /tmp/sd --epochs 12     # one dataset, one lever
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=${1:-$(mktemp -d /tmp/scanlens-small-XXXX)}
shift || true
EXTRA=("$@")  # extra `scanlens evaluate` flags
export SCANLENS_SECRET=small-data-figures
run() {  # name npz limit dims
  local name=$1 npz=$2 limit=$3 dims=$4
  if [ ! -f "$OUT/$name/w/catalog.parquet" ] && [ ! -d "$OUT/$name/w/catalog" ]; then
    $BIN/scanlens import-medmnist "$npz" --out "$OUT/$name/source" --limit "$limit" --seed 0 >/dev/null
    $BIN/scanlens ingest "$OUT/$name/source" --workdir "$OUT/$name/w" --labels "$OUT/$name/source/labels.csv" >/dev/null
  fi
  local start
  start=$(date +%s)
  $BIN/scanlens evaluate --workdir "$OUT/$name/w" --dims "$dims" --folds 3 "${EXTRA[@]}" >/dev/null
  $BIN/python benchmarks/cv_summary.py "$OUT/$name/w" --label "$name ($limit per split, $dims, 3 folds)"
  echo "$name evaluation wall time: $(( $(date +%s) - start )) s"
}
for dataset in ${DATASETS:-breast adrenal}; do
  case $dataset in
    breast) run breast data/demo/breastmnist.npz 200 2d ;;
    adrenal) run adrenal data/demo/adrenalmnist3d.npz 80 3d ;;
    *) echo "unknown dataset $dataset (breast, adrenal)" >&2; exit 2 ;;
  esac
done
echo "outputs: $OUT"
