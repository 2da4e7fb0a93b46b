#!/usr/bin/env bash
# One accelerator window: a profile of Table 2's full-size step, then the
# paper campaign (launch/paper.py) for the rest of the window.
#
#   OUT=/tmp/window WINDOW_SECONDS=540 bash launch/gpu_window.sh
#
# Everything that must outlive the machine is written under $OUT, in at most
# 8 files: window.log, profile.json, trace.tar.gz (jax.profiler's trace of 20
# steps) and the campaign's packed files (at most 5), which go into
# results/paper/ for the next window to carry on from. PROFILE_SECONDS=0
# gives the whole window to the campaign.
#
# The machine needs no TensorFlow: CIFAR-10 is read from $DATA_FILE (the JPEG
# bundle, packed by `beta_lasso.data.cache --jpeg_bundle`), and
# ml-collections, the one package such a machine may lack, is installed from
# wheels in $WHEELS if there are any. The campaign resumes from $RESUME_FROM
# (results/paper) when it holds an earlier window's files. PROFILE_ARGS and
# PAPER_ARGS shrink both for a CPU test (tests/gpu_window_test.py), e.g.
#   PROFILE_ARGS='--alpha=1 --profile_steps=2' \
#   PAPER_ARGS='--alpha=1 --epochs=1 --only=table2_beta50'
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder whose files come back}"
WINDOW_SECONDS=${WINDOW_SECONDS:-540}
PROFILE_SECONDS=${PROFILE_SECONDS:-150}
DATA_FILE=${DATA_FILE:-.carry/cifar10_jpeg.npz}
WHEELS=${WHEELS:-.carry}
PROFILE_ARGS=${PROFILE_ARGS:-}
PAPER_ARGS=${PAPER_ARGS:-}
RESUME_FROM=${RESUME_FROM:-results/paper}
WORKDIR_ROOT=${WORKDIR_ROOT:-/tmp/paper}
start=$(date +%s)
mkdir -p "$OUT"
log="$OUT/window.log"
export PYTHONUNBUFFERED=1
# One compilation cache for the window: the campaign's Table 2 run compiles
# the very programs the profile compiled (same config, shapes and seed).
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$WORKDIR_ROOT/jax_cache}

if compgen -G "$WHEELS/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --target /tmp/site "$WHEELS"/*.whl >> "$log" 2>&1 || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
command -v nvidia-smi > /dev/null &&
  nvidia-smi --query-gpu=name,memory.total --format=csv >> "$log" 2>&1

# 1. The profile (its own process: the campaign's runs need the memory).
# PROFILE_SECONDS=0 skips it: a later window of the same code spends all of
# its time on the campaign.
if [ "$PROFILE_SECONDS" -gt 0 ]; then
  profile="$(mktemp -d)"
  echo "== profile ($(date -u +%T))" >> "$log"
  timeout "$PROFILE_SECONDS" python3 -m benchmarks.profile_step \
      --out="$profile" --data_file="$DATA_FILE" $PROFILE_ARGS >> "$log" 2>&1
  echo "profile rc=$?" >> "$log"
  [ -f "$profile/profile.json" ] && cp "$profile/profile.json" "$OUT/"
  [ -d "$profile/trace" ] && tar -czf "$OUT/trace.tar.gz" -C "$profile" trace
fi

# 2. The campaign, in what is left of the window.
left=$(( WINDOW_SECONDS - ($(date +%s) - start) ))
resume=()
[ -f "$RESUME_FROM/campaign.json" ] && resume=(--resume_from="$RESUME_FROM")
echo "== campaign, ${left} s ($(date -u +%T))" >> "$log"
python3 -m launch.paper --workdir_root="$WORKDIR_ROOT" --out="$OUT/paper" \
    --budget="$left" --max_files=5 "${resume[@]}" $PAPER_ARGS \
    -- --config.data_file="$DATA_FILE" >> "$log" 2>&1
rc=$?
echo "campaign rc=$rc, window $(( $(date +%s) - start )) s" >> "$log"
tail -n 30 "$log"
exit $rc
