#!/usr/bin/env bash
# GPU readiness check: the CUDA-only tests (tests/gpu, `pytest -m gpu`) and short CUDA training runs of
# tools/train_det.py on the toy data, each with a time limit, all of it within 5 minutes. See docs/gpu.md.
#
#     tools/gpu_check.sh
#
# Prints one verdict line per check (PASS, FAIL or SKIP) and a summary; exits 0 when no check failed, 1 otherwise,
# and 1 with a message when no CUDA GPU is visible. Everything it writes stays under output/gpu_check/ in the
# repository (toy data, training outputs, pytest's temporary files, one log per check in logs/). It runs the
# repository's .venv/bin/python when there is one, else python3.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 1
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi

BUDGET_S=260                   # every check's time limit comes out of it: under 5 minutes in all
WORK=output/gpu_check
LOGS=$WORK/logs
DATASETS=$WORK/datasets
# small and fast (as tests/tools/test_train_det.py): 2 images per step at 96 px, few proposals; the pipeline is real
FAST_DET=(DATALOADER.NUM_WORKERS 0 SOLVER.IMS_PER_BATCH 2 SEED 0 "INPUT.MIN_SIZE_TRAIN" "(96,)"
          INPUT.MIN_SIZE_TEST 96 MODEL.RPN.POST_NMS_TOPK_TRAIN 128 MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE 64
          SOLVER.WARMUP_ITERS 5 SOLVER.BASE_LR 0.005 SOLVER.MAX_ITER 20 SOLVER.CHECKPOINT_PERIOD 1000
          MODEL.ROI_HEADS.SCORE_THRESH_TEST 0.0)

gpus=$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)' 2>/dev/null)
if [ -z "$gpus" ]; then
    echo "gpu_check: cannot import torch with $PY; install the project first (make install)" >&2
    exit 1
fi
if [ "$gpus" -lt 1 ]; then
    echo "gpu_check: no CUDA GPU visible (torch.cuda.is_available() is False), so there is nothing to check here." >&2
    echo "gpu_check: run it on a machine with an NVIDIA GPU, its driver and a CUDA build of torch." >&2
    exit 1
fi

mkdir -p "$LOGS"
start=$SECONDS
failed=0
ran=0

left() { echo $((BUDGET_S - (SECONDS - start))); }

# run_check NAME LIMIT_S COMMAND...: COMMAND under `timeout`, limited to LIMIT_S and to what is left of the budget;
# its output goes to $LOGS/NAME.log. Sets check_status (124: out of time) and check_seconds.
run_check() {
    local name=$1 limit=$2
    shift 2
    local remaining
    remaining=$(left)
    [ "$remaining" -lt "$limit" ] && limit=$remaining
    local began=$SECONDS
    if [ "$limit" -lt 10 ]; then
        echo "no time left in the ${BUDGET_S} s budget" >"$LOGS/$name.log"
        check_status=124
    else
        timeout --kill-after=10 "$limit" "$@" >"$LOGS/$name.log" 2>&1
        check_status=$?
    fi
    check_seconds=$((SECONDS - began))
}

# verdict NAME OK(0/1) DETAIL: the check's one line
verdict() {
    local name=$1 ok=$2 detail=$3
    ran=$((ran + 1))
    if [ "$ok" -eq 0 ]; then
        printf 'PASS  %-22s %s\n' "$name" "$detail"
    else
        failed=$((failed + 1))
        printf 'FAIL  %-22s %s (log: %s)\n' "$name" "$detail" "$LOGS/$name.log"
    fi
}

describe_failure() {  # why a check's command failed, in a few words
    if [ "$check_status" -eq 124 ] || [ "$check_status" -eq 137 ]; then
        echo "timed out after ${check_seconds} s"
    else
        echo "exit status $check_status after ${check_seconds} s"
    fi
}

echo "gpu_check: $gpus CUDA GPU(s) visible; budget ${BUDGET_S} s; logs in $LOGS/"

# 1. toy data (the same bytes every time: made once, then reused)
if [ -f "$DATASETS/toy.complete" ]; then
    echo "reused $DATASETS/toy" >"$LOGS/toy-data.log"
    verdict toy-data 0 "reused $DATASETS/toy"
else
    rm -rf "$DATASETS"
    run_check toy-data 60 env RESDET_DATASETS="$DATASETS" "$PY" tools/make_toy_data.py --out "$DATASETS/toy"
    if [ "$check_status" -eq 0 ]; then
        touch "$DATASETS/toy.complete"
        verdict toy-data 0 "made in ${check_seconds} s"
    else
        verdict toy-data 1 "$(describe_failure)"
    fi
fi

# 2. the CUDA-only tests
rm -rf "$WORK/pytest"
run_check pytest-gpu 170 "$PY" -m pytest -m gpu tests/gpu -q -rfEs -p no:cacheprovider --basetemp="$WORK/pytest"
summary=$(grep -E '^=* ?[0-9]+ (passed|failed|skipped|error)|(passed|failed|skipped|errors?|deselected) in ' \
          "$LOGS/pytest-gpu.log" | tail -n 1 | sed -e 's/^=* *//' -e 's/ *=*$//')
if [ "$check_status" -eq 0 ]; then verdict pytest-gpu 0 "${summary:-passed}"
elif [ "$check_status" -eq 124 ] || [ "$check_status" -eq 137 ]; then verdict pytest-gpu 1 "$(describe_failure)"
else verdict pytest-gpu 1 "${summary:-$(describe_failure)}"; fi

# check_training OUTPUT_DIR PROCESSES: what a finished detection run must have left (its exit status 0 checked
# before): finite losses, the COCO AP, a final checkpoint holding the fp16 grad scaler and every process's CUDA
# generator, a log per process. Prints its finding last.
check_training() {
    timeout 20 "$PY" - "$1" "$2" 2>&1 <<'EOF'
import json, math, os, sys
import torch
out, processes = sys.argv[1], int(sys.argv[2])
rows = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
losses = [row["total_loss"] for row in rows if "total_loss" in row]
assert losses and all(math.isfinite(value) for value in losses), f"losses {losses}"
bbox = json.load(open(os.path.join(out, "eval", "results.json")))["bbox"]
assert math.isfinite(bbox["AP"]), f"bbox {bbox}"
checkpoint = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=True)
assert checkpoint["iteration"] == 20, checkpoint["iteration"]
assert "grad_scaler" in checkpoint, "no grad_scaler in the checkpoint: fp16 AMP with loss scaling did not run"
assert len(checkpoint["rng"]["per_rank"]) == processes and all("cuda" in s for s in checkpoint["rng"]["per_rank"])
for rank in range(1, processes):
    assert os.path.isfile(os.path.join(out, f"log.txt.rank{rank}")), f"no log of rank {rank}"
print(f"finite losses (last {losses[-1]:.3f}), bbox AP {bbox['AP']:.2f}, checkpoint with grad_scaler")
EOF
}

# DIST.TIMEOUT, where the config has it: a stuck collective then ends the run instead of outliving the time limit
dist_timeout=()
if "$PY" -c 'import resdet, sys; sys.exit(0 if "TIMEOUT" in resdet.get_cfg().get("DIST", {}) else 1)' 2>/dev/null; then
    dist_timeout=(DIST.TIMEOUT 60)
fi

# train_det NAME PROCESSES LIMIT_S EXTRA...: a short fp16 AMP training and COCO evaluation of the toy detector
train_det() {
    local name=$1 processes=$2 limit=$3
    shift 3
    local out=$WORK/$name
    rm -rf "$out"
    run_check "$name" "$limit" env RESDET_DATASETS="$DATASETS" OMP_NUM_THREADS=2 "$PY" tools/train_det.py \
        --config configs/toy_frcnn_r18_fpn.yaml --num-gpus "$processes" MODEL.DEVICE cuda SOLVER.AMP.ENABLED True \
        "${FAST_DET[@]}" ${dist_timeout[@]+"${dist_timeout[@]}"} "$@" OUTPUT_DIR "$out"
    if [ "$check_status" -ne 0 ]; then
        verdict "$name" 1 "$(describe_failure)"
        return
    fi
    local found status
    found=$(check_training "$out" "$processes")
    status=$?
    printf '%s\n' "$found" >>"$LOGS/$name.log"
    if [ "$status" -eq 0 ]; then
        verdict "$name" 0 "$(printf '%s\n' "$found" | tail -n 1), ${check_seconds} s"
    else
        verdict "$name" 1 "the run ended but left wrong results: $(printf '%s\n' "$found" | tail -n 1)"
    fi
}

# 3. one GPU, fp16 AMP with the grad scaler
train_det train-det-1gpu-amp 1 45

# 4. two GPUs: NCCL, DDP, SyncBN across the processes
if [ "$gpus" -ge 2 ]; then
    train_det train-det-2gpu-amp 2 60 MODEL.RESNETS.NORM SyncBN
else
    printf 'SKIP  %-22s %s\n' train-det-2gpu-amp "needs 2 GPUs; $gpus visible"
fi

elapsed=$((SECONDS - start))
if [ "$failed" -eq 0 ]; then
    echo "gpu_check: all $ran checks passed in ${elapsed} s"
    exit 0
fi
echo "gpu_check: $failed of $ran checks failed in ${elapsed} s; see docs/gpu.md, 'When a check fails'"
exit 1
