#!/usr/bin/env bash
# ScanLens GPU check: one short script for a machine with an NVIDIA GPU (docs/benchmarks.md).
#
#   1. the tests marked `cuda` (pytest -m cuda): AMP in bf16/fp16 with the GradScaler, channels_last,
#      pinned memory, scoring's autocast, DDP with NCCL on one GPU under torchrun;
#   2. benchmarks/train_throughput.py --size 224 --amp --trainer: the project's AMP/channels_last
#      training loop against bare fp32 and AMP loops, images/s and MFU against the GPU's peak;
#   3. benchmarks/inference_throughput.py --size 224: batched inference, images/s and MFU;
#   then a summary. Without a CUDA GPU (or with --dry-run) the same steps run on the CPU at tiny sizes
#   and the CUDA tests skip, each saying why: a check of the script and the code paths, not figures.
#
# Usage: bash benchmarks/gpu_check.sh [--dry-run] [--require-gpu] [--budget SECONDS] [--out DIR]
#   --budget   total seconds for all steps (default 480, $SCANLENS_GPU_CHECK_BUDGET); a step gets at
#              most what is left, and is reported TIMEOUT when it runs out
#   --out      also write the full log (gpu_check.log) and the summary (summary.txt) there
# Python: the first of $SCANLENS_PYTHON, .venv-gpu/bin/python, .venv/bin/python, python3, python whose
#   torch sees a GPU.
#   The project pins torch 2.13.0; on a GPU machine the checks run on the CUDA torch that is there.
#   Missing project dependencies (benchmarks/gpu_requirements.txt) are installed, without their own
#   dependencies, into a temporary folder: from the wheels in $SCANLENS_WHEELS (default .whl/,
#   git-ignored, made by benchmarks/gpu_wheels.sh on a machine with network), else from the network.
#   Where no Python has a CUDA torch but a GPU is there, and the network allows, .venv-gpu is made
#   with torch 2.13.0 from $SCANLENS_TORCH_INDEX (default https://download.pytorch.org/whl/cu126;
#   pick the CUDA build your driver supports) and the project (-e .[test]).
# Exit: 0 every step passed (a dry run too); 1 a step failed or timed out; 2 usage; 3 no usable Python
#   (GPU without a CUDA torch, or project dependencies missing and not installable); 4 --require-gpu
#   without a CUDA GPU.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
BUDGET=${SCANLENS_GPU_CHECK_BUDGET:-480}
DRY_RUN=0
REQUIRE_GPU=0
OUT_DIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --require-gpu) REQUIRE_GPU=1; shift ;;
    --budget) BUDGET="${2:-}"; shift $(($# > 1 ? 2 : 1)) ;;
    --out) OUT_DIR="${2:-}"; shift $(($# > 1 ? 2 : 1)) ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$BUDGET" =~ ^[0-9]+$ ]] || { echo "gpu_check: --budget takes whole seconds" >&2; exit 2; }
if [ "$OUT_DIR" = "" ] && [[ " $* " == *" --out "* ]]; then echo "gpu_check: --out takes a folder" >&2; exit 2; fi

START=$SECONDS
WORK=$(mktemp -d "${TMPDIR:-/tmp}/scanlens-gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
LOG="$WORK/gpu_check.log"
SUMMARY=()
FAILED=0
MODE_TEXT=""
TORCH_TEXT=""
PY=""
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg MPLCONFIGDIR="$WORK/mpl" SCANLENS_SECRET=gpu-check
if [ -n "$OUT_DIR" ]; then mkdir -p "$OUT_DIR"; fi

say() { echo "gpu_check: $*" | tee -a "$LOG"; }
left() { echo $((BUDGET - (SECONDS - START))); }

finish() {  # finish EXIT_CODE: print the summary (and copy it and the log to --out)
  local code=$1
  {
    echo
    echo "== ScanLens GPU check: summary =="
    echo "mode: $MODE_TEXT"
    echo "python: ${PY:-none}${TORCH_TEXT:+ ($TORCH_TEXT)}"
    if ((${#SUMMARY[@]} > 0)); then printf '%s\n' "${SUMMARY[@]}"; fi
    echo "total: $((SECONDS - START)) s of a $BUDGET s budget; exit $code"
  } | tee -a "$LOG" > "$WORK/summary.txt"
  cat "$WORK/summary.txt"
  if [ -n "$OUT_DIR" ]; then cp "$LOG" "$WORK/summary.txt" "$OUT_DIR"/; fi
  exit "$code"
}

# step NAME LIMIT KEEP CMD...: run CMD with min(LIMIT, budget left) seconds, log its output, and add a
# summary row plus the output lines matching the regex KEEP.
step() {
  local name=$1 limit=$2 keep=$3; shift 3
  local budget; budget=$(left)
  ((limit > budget)) && limit=$budget
  if ((limit < 20)); then
    SUMMARY+=("$(printf '%-38s %-8s %5s  %s' "$name" SKIPPED - "budget spent")"); FAILED=1; return
  fi
  say "== $name (at most ${limit} s) =="
  local t0=$SECONDS rc out="$WORK/step.out"
  set +e
  timeout --kill-after=15 "$limit" "$@" 2>&1 | tee "$out" | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  set -e
  local result=PASS
  if ((rc == 124 || rc == 137)); then result=TIMEOUT; FAILED=1; elif ((rc != 0)); then result="FAIL($rc)"; FAILED=1; fi
  SUMMARY+=("$(printf '%-38s %-8s %4ds' "$name" "$result" $((SECONDS - t0)))")
  while IFS= read -r line; do SUMMARY+=("    $line"); done < <(grep -E "$keep" "$out" | tail -n 12 || true)
}

probe() {  # probe PYTHON: "torch_version cuda_version gpu_count" (nothing when torch is missing)
  "$1" -c 'import torch; print(torch.__version__, torch.version.cuda or "none", torch.cuda.device_count() if torch.cuda.is_available() else 0)' 2>/dev/null || true
}

project_imports() {  # project_imports PYTHON: the modules the checks import, with PYTHONPATH as set
  "$1" -c 'import pipeline.cli, pipeline.train, pipeline.inference, pipeline.demo, pipeline.ingest, pytest' 2>&1
}

online() {  # online URL: whether pip could reach it
  "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=8)' "$1" >/dev/null 2>&1
}

GPU_SEEN=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then GPU_SEEN=1; fi

# --- 1. a Python whose torch sees the GPU --------------------------------------------------------------
MODE=cpu
candidates=()
[ -n "${SCANLENS_PYTHON:-}" ] && candidates+=("$SCANLENS_PYTHON")
[ -x "$REPO/.venv-gpu/bin/python" ] && candidates+=("$REPO/.venv-gpu/bin/python")
[ -x "$REPO/.venv/bin/python" ] && candidates+=("$REPO/.venv/bin/python")
for name in python3 python; do command -v "$name" >/dev/null 2>&1 && candidates+=("$(command -v "$name")"); done
if ((DRY_RUN == 0)); then
  for candidate in "${candidates[@]}"; do
    read -r version cuda count <<<"$(probe "$candidate")" || true
    say "python $candidate: torch ${version:-absent}, CUDA ${cuda:-none}, ${count:-0} GPU(s) visible"
    if [ "${count:-0}" -gt 0 ]; then PY=$candidate; MODE=gpu; break; fi
  done
fi
TORCH_INDEX=${SCANLENS_TORCH_INDEX:-https://download.pytorch.org/whl/cu126}
if [ "$MODE" = cpu ] && ((GPU_SEEN == 1 && DRY_RUN == 0)); then
  say "nvidia-smi sees a GPU but no Python's torch does: installing torch 2.13.0 with CUDA into .venv-gpu from $TORCH_INDEX"
  PY=$(command -v python3 || true)
  if [ -z "$PY" ] || ! online "$TORCH_INDEX/torch/"; then
    MODE_TEXT="no usable Python"
    say "no network to $TORCH_INDEX: bring a Python with a CUDA build of torch (SCANLENS_PYTHON=...)"
    PY=""; finish 3
  fi
  # a local-version pin (2.13.0+cu126): a CPU build offered by a pip configuration's find-links cannot win;
  # then the project, its torch==2.13.0 satisfied by that build (constraints.txt pins the CPU one: left out)
  grep -v '^torch==' constraints.txt > "$WORK/constraints.txt"
  if ! { "$PY" -m venv "$REPO/.venv-gpu" && timeout 900 "$REPO/.venv-gpu/bin/pip" install --quiet \
         --index-url "$TORCH_INDEX" "torch==2.13.0+${TORCH_INDEX##*/}" \
       && timeout 600 "$REPO/.venv-gpu/bin/pip" install --quiet -c "$WORK/constraints.txt" -e '.[test]'; } 2>&1 \
       | tee -a "$LOG"; then
    MODE_TEXT="no usable Python"; say "installing torch from $TORCH_INDEX or the project failed"; PY=""; finish 3
  fi
  PY="$REPO/.venv-gpu/bin/python"
  read -r version cuda count <<<"$(probe "$PY")" || true
  if [ "${count:-0}" -gt 0 ]; then MODE=gpu; else
    MODE_TEXT="no usable Python"; say "torch from $TORCH_INDEX does not see the GPU (torch ${version:-absent}, CUDA ${cuda:-none})"; finish 3
  fi
fi
if [ "$MODE" = cpu ]; then
  export CUDA_VISIBLE_DEVICES=""  # a dry run stays on the CPU even where a GPU is there
  if ((DRY_RUN == 1)); then REASON="--dry-run"; elif ((GPU_SEEN == 0)); then REASON="no NVIDIA GPU (nvidia-smi absent or lists none)"; else REASON="no CUDA torch"; fi
  MODE_TEXT="CPU DRY RUN ($REASON): CUDA tests skip, benchmarks run at tiny sizes; no GPU figures"
  if ((REQUIRE_GPU == 1)); then MODE_TEXT="no CUDA GPU ($REASON) and --require-gpu"; say "$MODE_TEXT"; PY=""; finish 4; fi
  for candidate in "${candidates[@]}"; do
    read -r version _ _ <<<"$(probe "$candidate")" || true
    if [ -n "${version:-}" ]; then PY=$candidate; break; fi
  done
  if [ -z "$PY" ]; then
    say "no Python with torch: running make install (CPU torch pinned in constraints.txt)"
    if ! make -s install 2>&1 | tee -a "$LOG"; then MODE_TEXT="$MODE_TEXT; make install failed"; finish 3; fi
    PY="$REPO/.venv/bin/python"
  fi
else
  MODE_TEXT="GPU ($(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n 1 || echo "nvidia-smi unavailable"))"
fi
read -r version cuda count <<<"$(probe "$PY")" || true
TORCH_TEXT="torch $version, CUDA $cuda, $count GPU(s) visible"
say "mode: $MODE_TEXT"
say "python: $PY ($TORCH_TEXT; the project pins torch 2.13.0)"

# --- 2. the project importable by that Python ------------------------------------------------------------
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if ! missing=$(project_imports "$PY"); then
  say "the project does not import with $PY: $(tail -n 1 <<<"$missing")"
  WHEELS=${SCANLENS_WHEELS:-$REPO/.whl}
  if compgen -G "$WHEELS/*.whl" >/dev/null; then
    say "installing the wheels in $WHEELS (--no-index --no-deps) into a temporary folder"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
      "$WHEELS"/*.whl 2>&1 | tee -a "$LOG" || say "installing the wheels failed"
    export PYTHONPATH="$WORK/site:$PYTHONPATH"
  elif online https://pypi.org/simple/; then
    say "installing benchmarks/gpu_requirements.txt from the network (--no-deps) into a temporary folder"
    grep -v '^torch==' constraints.txt > "$WORK/constraints.txt"  # the machine's CUDA torch stays
    mapfile -t needed < <(grep -v '^\s*#' benchmarks/gpu_requirements.txt | grep -v '^\s*$')
    timeout 600 "$PY" -m pip install -q --no-deps --no-compile --target "$WORK/site" -c "$WORK/constraints.txt" \
      "${needed[@]}" 2>&1 | tee -a "$LOG" || say "installing from the network failed"
    export PYTHONPATH="$WORK/site:$PYTHONPATH"
  fi
  if ! missing=$(project_imports "$PY"); then
    MODE_TEXT="$MODE_TEXT; the project does not import"
    say "still missing: $(tail -n 1 <<<"$missing"). Make wheels on a machine with network (bash benchmarks/gpu_wheels.sh --python-version $("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')) and bring .whl/ along"
    finish 3
  fi
fi
if [ "$MODE" = gpu ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv 2>&1 | tee -a "$LOG" || true
fi

# --- 3. the checks -------------------------------------------------------------------------------------
TESTS=(tests/pipeline/train/test_cuda.py tests/pipeline/scoring/test_cuda_scoring.py)
step "cuda tests (pytest -m cuda)" 300 '(passed|failed|skipped|error|^FAILED|^ERROR)' \
  "$PY" -m pytest -m cuda -ra -q -p no:cacheprovider --basetemp "$WORK/pytest" "${TESTS[@]}"
KEEP='^(device|project device|input|peak|no CUDA|bare|scanlens|ratio)'
if [ "$MODE" = gpu ]; then
  WORKERS=$(( $(nproc) > 8 ? 8 : $(nproc) ))
  step "train throughput 224^2, AMP" 240 "$KEEP" \
    "$PY" benchmarks/train_throughput.py --size 224 --amp --batch-size 128 --steps 30 --workers "$WORKERS" --trainer --images 320
  step "inference throughput 224^2" 150 "$KEEP" \
    "$PY" benchmarks/inference_throughput.py --size 224 --batch-size 64 --images 2048 --repeats 3
else
  step "train throughput (dry run, 32^2)" 240 "$KEEP" \
    "$PY" benchmarks/train_throughput.py --size 32 --amp --batch-size 8 --steps 3 --trainer --images 16
  step "inference throughput (dry run, 32^2)" 150 "$KEEP" \
    "$PY" benchmarks/inference_throughput.py --size 32 --batch-size 8 --images 32 --repeats 2
fi
finish "$FAILED"
