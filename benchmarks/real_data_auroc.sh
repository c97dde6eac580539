#!/usr/bin/env bash
# Real-data figures (not CI gates): validation AUROC of a CPU run on each bundled MedMNIST archive.
# BreastMNIST 2D at input 64, AdrenalMNIST3D at 32^3, random initialisation (no ImageNet weights here),
# each scored on its own val split. Compare: MedMNIST v2 ResNet-50 (28) test AUROC, Breast 0.857,
# Adrenal3D (ResNet-50+3D) 0.828.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=${1:-$(mktemp -d /tmp/scanlens-real-XXXX)}
export SCANLENS_SECRET=real-data-figures
$BIN/scanlens import-medmnist data/demo/breastmnist.npz --out "$OUT/breast"
$BIN/scanlens ingest "$OUT/breast" --workdir "$OUT/w_breast" --labels "$OUT/breast/labels.csv"
$BIN/scanlens train --workdir "$OUT/w_breast" --dims 2d --input-size 64 --epochs ${BREAST_EPOCHS:-12} --batch-size 32 --lr 1e-3 --patience 5
$BIN/scanlens import-medmnist data/demo/adrenalmnist3d.npz --out "$OUT/adrenal" --format nifti
$BIN/scanlens ingest "$OUT/adrenal" --workdir "$OUT/w_adrenal" --labels "$OUT/adrenal/labels.csv"
$BIN/scanlens train --workdir "$OUT/w_adrenal" --dims 3d --input-size 32 --epochs ${ADRENAL_EPOCHS:-5} --batch-size 16 --lr 1e-3 --patience 3
