#!/bin/bash
# The one GPU check: run on a machine with an NVIDIA GPU, from the repository root, in one go (< 8 min).
#
#   bash bench/gpu_check.sh                 # results in gpu_check/ (summary.json last)
#   WHEELS=wheels bash bench/gpu_check.sh   # install missing pure-Python dependencies from a wheel folder
#
# 1. the loss kernels' tests on CUDA, against the PyTorch reference (tests/distill/kernels, losses);
# 2. bench/kl_loss.py at the GPU shapes (Triton vs PyTorch, memory and time ratios);
# 3. 20 distillation steps of gemma2-0.1b (random weights, char tokenizer, vocab padded to 256,000),
#    ZeRO-3 on one GPU, from a top-64 cache, through the fused-linear head: tokens/s and peak memory.
# Needs PyTorch with CUDA and Triton on the machine; the project's pure-Python dependencies are
# installed from $WHEELS when given (no internet needed), else taken as installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
OUT=${OUT:-gpu_check}
PRESET=${PRESET:-gemma2-0.1b}
SECTIONS=${SECTIONS:-123}
# Section 3's size. A rehearsal on a CPU machine (the default preset, fewer rows and steps):
#   SECTIONS=3 DS_ACCELERATOR=cpu ROWS=32 STEPS=8 MICRO=2 bash bench/gpu_check.sh
ROWS=${ROWS:-1024} STEPS=${STEPS:-20} MICRO=${MICRO:-16}
mkdir -p "$OUT"
export DS_ACCELERATOR=${DS_ACCELERATOR:-cuda} PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ -n "${WHEELS:-}" ]; then
  $PY -m pip install --no-index --find-links "$WHEELS" deepspeed transformers tokenizers safetensors \
      zstandard accelerate tqdm numpy pytest >/dev/null
fi
if [ "$DS_ACCELERATOR" = cuda ]; then
  $PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device: this check needs a GPU'"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
else
  echo "rehearsal on $DS_ACCELERATOR (no GPU)" | tee "$OUT/gpu.txt"
fi

touch "$OUT/tests.txt" "$OUT/kl_loss.txt"
if [[ $SECTIONS == *1* ]]; then
  echo "== 1. kernel and loss tests on CUDA"
  t0=$SECONDS
  $PY -m pytest -q -x tests/distill/kernels tests/distill/losses -k "not zero3" 2>&1 | tee "$OUT/tests.txt" | tail -3
  echo "tests_s=$((SECONDS - t0))"
fi
if [[ $SECTIONS == *2* ]]; then
  echo "== 2. bench/kl_loss.py at the GPU shapes"
  t0=$SECONDS
  $PY bench/kl_loss.py --skip-cpu 2>&1 | tee "$OUT/kl_loss.txt" | tail -12
  echo "kl_bench_s=$((SECONDS - t0))"
fi
[[ $SECTIONS == *3* ]] || exit 0

echo "== 3. $STEPS distillation steps of $PRESET, ZeRO-3, one device, from a cache of $ROWS rows"
t0=$SECONDS
$PY - "$OUT/teacher" "$PRESET" <<'PYEOF'
import sys, torch
from distill.models import build_model
from unlearn.tasks.tokenizer import build_char_tokenizer
tok = build_char_tokenizer()
torch.manual_seed(0)
build_model(sys.argv[2], tok).save_pretrained(sys.argv[1])
tok.save_pretrained(sys.argv[1])
PYEOF
rm -rf "$OUT/cache" "$OUT/student"
deepspeed --num_gpus 1 launch/precompute.py --ds_config ds_configs/zero3.json --teacher "$OUT/teacher" \
    --out "$OUT/cache" --rows "$ROWS" --seq-len 512 --top-k 64 --micro-batch "$MICRO" 2>&1 | tail -2
deepspeed --num_gpus 1 launch/distill.py --ds_config ds_configs/zero3.json --teacher "$OUT/teacher" \
    --cache "$OUT/cache" --out "$OUT/student" --alpha 0.6 --steps "$STEPS" --global-batch "$MICRO" --micro-batch "$MICRO" \
    --seq-len 512 --eval-every 0 --eval-per-format 5 --save-every 0 --final-eval-per-format 5 --retain-gap -2 2>&1 | tail -2
echo "distill_s=$((SECONDS - t0))"

$PY - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = [json.loads(l) for l in (out / "student/metrics.jsonl").read_text().splitlines() if '"loss/kd"' in l]
steady = rows[5:]  # the first steps include compilation and allocator warm-up
tok_s = sum(r["tokens/kd"] for r in steady[1:]) / (steady[-1]["elapsed_s"] - steady[0]["elapsed_s"])
manifest = json.loads((out / "cache/manifest.json").read_text())
summary = {"gpu": (out / "gpu.txt").read_text().strip(), "distill_tokens_per_s": round(tok_s, 1),
           "device_peak_gib": max(r.get("mem/device_peak_gib", 0) for r in rows),
           "host_peak_gib": max(r.get("mem/host_peak_gib", 0) for r in rows),
           "loss_first": rows[0]["loss/kd"], "loss_last": rows[-1]["loss/kd"],
           "kernel_tests": ((out / "tests.txt").read_text().strip().splitlines() or ["not run"])[-1],
           "kl_bench_last_line": ((out / "kl_loss.txt").read_text().strip().splitlines() or ["not run"])[-1]}
summary["cache_bytes"] = sum(s.get("bytes", 0) for s in manifest.get("shards", []))
(out / "summary.json").write_text(json.dumps(summary, indent=2))
print(json.dumps(summary))
PYEOF
