#!/usr/bin/env bash
# The issue-23 purification sweeps in one run on a lent GPU (benchmarks/purify.py, rows appended to
# $OUT/results.jsonl as they finish, so a run cut short keeps what it measured). Prepared here beforehand:
#   build/gpu/minilm-bf16  the backbone saved in bf16 (45 MB, under the device tool's 64 MiB carry; loaded as fp32)
#   build/gpu/data/sst2    the SST-2 TSVs
# and run there with: OUT=... bash benchmarks/gpu_purify.sh   (python3 with torch, transformers, accelerate)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TROJANSCOPE_DATA_DIR=${DATA_DIR:-build/gpu/data}
OUT=${OUT:-runs/gpu-purify}
PY=${PY:-python3}
BACKBONE=${BACKBONE:-build/gpu/minilm-bf16}
mkdir -p "$OUT"
run() {  # one benchmarks/purify.py invocation on the OpenBackdoor-style victim
  echo "### $*"
  $PY benchmarks/purify.py --victim openbackdoor --backbone "$BACKBONE" --bench-dir "$OUT/bench" \
      --device "${DEVICE:-cuda}" --results "$OUT/results.jsonl" ${EXTRA:-} "$@" 2>>"$OUT/stderr.log"
}
nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || true
# 1. the calibration: CFT, TS-FT and MBTSAD at their defaults on the seed-regime victim
run --methods cft,tsft,mbtsad
# 2. the teacher (TS-FT with the teacher's settings, word embeddings trained as in MBTSAD): lr x epochs
run --methods tsft --set tsft=train_word_embeddings=true --grid tsft=lr=5e-5,1e-4,2e-4 --grid tsft=epochs=2,4
# 3. MBTSAD from stronger teachers, beta in {1, 10, 100}
run --methods mbtsad --grid mbtsad=teacher_lr=1e-4,2e-4 --grid mbtsad=beta=1,10,100
# 4. Table IV's ablations at the stronger teacher
run --methods mbtsad --set mbtsad=teacher_lr=2e-4 --grid mbtsad=ablation=no_att,no_hid,ce_only
# 5. how the CFT calibration moves with the victim: poisoned texts from all texts (OpenBackdoor's default),
#    a stronger schedule, a lower rate
run --methods cft --victim-source all
run --methods cft --victim-lr 2e-5 --victim-epochs 3
run --methods cft --victim-rate 0.05
echo "### done"
