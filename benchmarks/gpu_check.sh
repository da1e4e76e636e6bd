#!/usr/bin/env bash
# One prepared check of every CUDA path, small sizes, meant to finish in under 8 minutes on one GPU:
#
#   1. the CUDA tests (pytest -k cuda)             5. mcd distill --method mcd / --method baseline
#   2. mcd verify --device cuda --quick             6. mcd sample (teacher and student)
#   3. mcd train (bf16 autocast)                     7. mcd eval (exact source, paired rows, ELBO)
#   4. mcd train --compile (torch.compile + bf16)    8. benchmarks/bench_coupling.py on the device
#   9. the text path: mcd train on a byte-level text corpus (cpu-text size, L = 128), mcd sample of it, and
#      mcd bench-text --smoke (tiny teacher, AR model, student and random evaluator trained and measured on the device)
#   plus the cost of building a training batch on the CPU and copying it to the device.
#
# Each check prints one line "PASS|FAIL name (seconds)" and its throughput figures; the exit
# status is the number of failed checks (0 = all passed).  Logs and runs stay in $WORK.
#
#   bash benchmarks/gpu_check.sh                 # on a GPU machine (DEVICE=cuda)
#   DEVICE=cpu bash benchmarks/gpu_check.sh      # the same commands on the CPU (slower; pytest -k cuda skips)
#   bash benchmarks/gpu_check.sh --dry-run       # print the commands only
#
# Environment: DEVICE (cuda), WORK (a new temporary directory), PYTHON (python), STEPS (300 teacher
# steps), ROUND_STEPS (50 distillation steps per round, 3 rounds), TEXT_STEPS (200 text teacher steps).
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
DEVICE="${DEVICE:-cuda}"
PYTHON="${PYTHON:-python}"
STEPS="${STEPS:-300}"
ROUND_STEPS="${ROUND_STEPS:-50}"
TEXT_STEPS="${TEXT_STEPS:-200}"
DRY_RUN=0
if [ "${1:-}" = "--dry-run" ]; then DRY_RUN=1; fi
if [ "$DRY_RUN" = 1 ]; then WORK="${WORK:-/tmp/gpu_check}"; else WORK="${WORK:-$(mktemp -d /tmp/gpu_check.XXXXXX)}"; fi
[ "$DRY_RUN" = 1 ] || mkdir -p "$WORK"
CLI="$PYTHON -m sampler.cli"
FAILED=0
# A training command stopped by Ctrl-C or SIGTERM saves and exits 130 by itself; without this the script
# would go on to the next check.
trap 'echo "gpu_check: stopped by a signal (logs and runs in $WORK)"; exit 130' INT TERM

# check NAME COMMAND...: run COMMAND (logged to $WORK/NAME.log), print PASS/FAIL and the time.
check() {
    local name="$1"; shift
    if [ "$DRY_RUN" = 1 ]; then echo "$*"; return 0; fi
    local start end status
    start=$(date +%s%N)
    if "$@" > "$WORK/$name.log" 2>&1; then status=PASS; else status=FAIL; FAILED=$((FAILED + 1)); fi
    end=$(date +%s%N)
    printf '%s %-22s (%d.%d s)\n' "$status" "$name" $(((end - start) / 1000000000)) $((((end - start) / 100000000) % 10))
    if [ "$status" = FAIL ]; then tail -n 15 "$WORK/$name.log" | sed 's/^/    | /'; fi
}

# rate RUN: median steps/s and tokens/s of a run's metrics.jsonl, and its last loss (FAIL when not finite).
rate() {
    [ "$DRY_RUN" = 1 ] && return 0
    "$PYTHON" - "$1" <<'EOF' || { echo "FAIL metrics of $1"; FAILED=$((FAILED + 1)); }
import json, math, statistics, sys
records = [json.loads(line) for line in open(sys.argv[1] + "/metrics.jsonl")]
rows = [r for r in records if "loss" in r and "steps_per_s" in r]
loss = rows[-1]["loss"]
print(f"    {sys.argv[1]}: {statistics.median(r['steps_per_s'] for r in rows):.1f} steps/s, "
      f"{statistics.median(r['tokens_per_s'] for r in rows):.3g} tokens/s (median of {len(rows)} records), last loss {loss:.4f}")
sys.exit(0 if math.isfinite(loss) else 1)
EOF
}

# show NAME PATTERN: the lines of a check's log that carry its figures.
show() { [ "$DRY_RUN" = 1 ] || tr '\r' '\n' < "$WORK/$1.log" | grep -E "$2" | tail -n "${3:-3}" | sed 's/^/    /'; }

[ "$DRY_RUN" = 1 ] || echo "gpu_check: DEVICE=$DEVICE WORK=$WORK $("$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "no cuda", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")')"

check pytest-cuda "$PYTHON" -m pytest -q -p no:cacheprovider -k cuda tests
show pytest-cuda "passed|skipped|failed" 1
check verify-quick $CLI verify --device "$DEVICE" --quick --out "$WORK/verify" --no-progress
show verify-quick "claims pass" 1
check train $CLI train --device "$DEVICE" --out "$WORK/teacher" --max-steps "$STEPS" --batch-size 64 --no-progress
rate "$WORK/teacher"
check train-compile $CLI train --device "$DEVICE" --compile --out "$WORK/teacher-compiled" --max-steps "$STEPS" --batch-size 64 --no-progress
rate "$WORK/teacher-compiled"
check distill-mcd $CLI distill --device "$DEVICE" --teacher "$WORK/teacher" --out "$WORK/mcd" --start-steps 16 --target-steps 4 --steps-per-round "$ROUND_STEPS" --no-progress
rate "$WORK/mcd"
check distill-baseline $CLI distill --device "$DEVICE" --method baseline --teacher "$WORK/teacher" --out "$WORK/baseline" --start-steps 16 --target-steps 4 --steps-per-round "$ROUND_STEPS" --no-progress
rate "$WORK/baseline"
check sample-teacher $CLI sample --device "$DEVICE" --ckpt "$WORK/teacher" --steps 64 --num 256 --out "$WORK/teacher-samples.jsonl"
show sample-teacher "tokens/s" 1
check sample-student $CLI sample --device "$DEVICE" --ckpt "$WORK/mcd" --steps 4 --num 256 --out "$WORK/mcd-samples.jsonl"
show sample-student "tokens/s" 1
check eval $CLI eval --device "$DEVICE" --ckpt "$WORK/teacher" --steps 64 8 --num 128 --elbo-num 128 --out "$WORK/eval.json"
show eval "validation ELBO|^model" 4
check bench-coupling "$PYTHON" benchmarks/bench_coupling.py --device "$DEVICE" --repeats 10
show bench-coupling "^threshold|^uniform" 4
# The text path: a corpus written here (the machine may be offline), a byte-level teacher trained on it, samples
# decoded from the checkpoint alone, and the whole text benchmark at smoke size on the device.
TEXT_CORPUS="$WORK/text-corpus.txt"
check text-corpus "$PYTHON" -c "import sys; from pathlib import Path; from sampler.run.text_bench import smoke_corpus; smoke_corpus(Path(sys.argv[1]), num_lines=4000)" "$TEXT_CORPUS"
check train-text $CLI train --device "$DEVICE" --data "text:$TEXT_CORPUS?tokenizer=byte" --size cpu-text --seq-len 128 --out "$WORK/text-teacher" --max-steps "$TEXT_STEPS" --batch-size 64 --no-progress
rate "$WORK/text-teacher"
check sample-text $CLI sample --device "$DEVICE" --ckpt "$WORK/text-teacher" --steps 64 --num 64 --out "$WORK/text-samples.jsonl"
show sample-text "tokens/s" 1
check bench-text-smoke $CLI bench-text --smoke --device "$DEVICE" --out "$WORK/text-bench"
show bench-text-smoke "written:|steps " 8

check batch-cost "$PYTHON" - "$DEVICE" <<'EOF'
# What one teacher training batch costs to build on the CPU (the data and masking generators are CPU
# generators, so runs are reproducible across devices) and to copy to the device (sampler.train.teacher).
import sys, time, torch
from sampler.batches import teacher_batch
from sampler.checkpoint import make_schedule
from sampler.data import get_source
device = torch.device(sys.argv[1])
source, schedule, gen = get_source("exact"), make_schedule("loglinear"), torch.Generator().manual_seed(0)
def one():
    x0 = source.sample_batch(64, None, gen).to(device)
    return teacher_batch(x0, schedule, source.vocab_size, gen)
one()
start, n = time.perf_counter(), 200
for _ in range(n):
    z_t, t = one()
if device.type == "cuda":
    torch.cuda.synchronize()
print(f"teacher batch (64 x {source.default_seq_len}) built on the CPU and copied to {device}: "
      f"{1e3 * (time.perf_counter() - start) / n:.2f} ms per batch; z_t on {z_t.device}")
EOF
show batch-cost "per batch" 1

if [ "$DRY_RUN" = 0 ]; then
    echo "gpu_check: $FAILED failed (logs in $WORK)"
fi
exit "$FAILED"
