#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, in one run that fits a short lease of a GPU machine (about
# 10 minutes): each bench's output goes to its own file in DIR (default: runs/gpu-checks).
#
#   bench/gpu_checks.sh [DIR] [SECONDS]
#
# 1. training_speed.py --device cuda: the child and supernet steps on the GPU, eager, fast, AMP
#    (bf16), then again with torch.compile (inductor, and CUDA graphs), compile time apart;
# 2. cuda_paths.py: the agent measuring on the GPU against CUDA events, its lookup table there,
#    and a short search and retraining with --train-device cuda;
# 3. search_quality.py --quick --train-device cuda: the bench's GPU path end to end (a smoke run);
# 4. reference_ranking.py --train-device cuda: standalone training ranking itself, 20 and 60
#    epochs, as many seeds as fit before SECONDS (default 570) since the start.
# Runs with the machine's own python3 (PYTHON=...), the repository on PYTHONPATH. DEVICE=cpu and
# ROUNDS=2 try the script itself on a machine without a GPU.
set -u
cd "$(dirname "$0")/.."
DIR=${1:-runs/gpu-checks}
BUDGET=${2:-570}
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
ROUNDS=${ROUNDS:-30}
mkdir -p "$DIR"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
START=$SECONDS

LOG=$DIR/steps.txt
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >> "$LOG" 2>&1
$PYTHON -c "import sys, torch; print(sys.version.split()[0], torch.__version__,
torch.cuda.is_available() and torch.cuda.get_device_name())" >> "$LOG" 2>&1
# the shapes dataset and its held-out test set are generated once (CPU), while the GPU times steps
$PYTHON -c "from search_core import shapes; shapes.load(); shapes.held_out(1000)" >> "$LOG" 2>&1 &
SHAPES=$!

step() {  # step NAME LIMIT_S COMMAND...: run one bench, its output in DIR/NAME.txt
    local name=$1 limit=$2
    shift 2
    local began=$SECONDS
    timeout "$limit" "$@" > "$DIR/$name.txt" 2>&1
    echo "$name: exit $? after $((SECONDS - began)) s" | tee -a "$LOG"
}

step training_speed 90 $PYTHON bench/training_speed.py --device "$DEVICE" --rounds "$ROUNDS"
step training_speed_compiled 170 $PYTHON bench/training_speed.py --device "$DEVICE" \
    --rounds "$ROUNDS" --compile
step cuda_paths 150 $PYTHON bench/cuda_paths.py --device "$DEVICE"
wait $SHAPES
step search_quality_quick 90 $PYTHON bench/search_quality.py --quick --seeds 0 1 --jobs 2 \
    --train-device "$DEVICE" --out "$DIR/bench-quality"
LEFT=$((BUDGET - (SECONDS - START) - 15))
if [ "$LEFT" -gt 60 ]; then
    step reference_ranking $((LEFT + 10)) $PYTHON bench/reference_ranking.py --train-device "$DEVICE" \
        --jobs 14 --epochs 20 60 --seeds 4 --deadline-s "$LEFT"
fi
rm -rf "$DIR/bench-quality"
