#!/usr/bin/env bash
# Regenerates the figures that README.md and docs/model_card.md quote, from the shipped
# checkpoint, into docs/figures/ (JSON, one file per command) and docs/images/demo_overlay.jpg.
#
#   bash docs/figures.sh [EVAL_REAL_DIR] [PRIOR_STUDY_DIR]
#
# EVAL_REAL_DIR: real frames with ground truth (hmdiff eval-real; skipped when not given).
# PRIOR_STUDY_DIR: the prior study (hmdiff data prior-study; skipped when not given).
# The ablation table and plot are regenerated apart (about 20 minutes on 2 CPU cores):
#   hmdiff ablate --limit 256 --out docs/ablation --force [--study PRIOR_STUDY_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
real=${1:-}
study=${2:-}
out=docs/figures
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

hmdiff demo --out "$tmp/demo" > /dev/null
cp "$tmp/demo/astronaut_eileen_collins_overlay.jpg" docs/images/demo_overlay.jpg

# timings: run on an otherwise idle machine
hmdiff export --out "$tmp/engines" --steps 2 > /dev/null
hmdiff bench --backend torch,onnxruntime --engines "$tmp/engines" --steps 2 --json > "$out/bench_steps2.json"
hmdiff bench --backend torch --steps 2 --dat full --json > "$out/bench_torch_steps2_full.json"
hmdiff bench-pipeline --json > "$out/bench_pipeline.json"
if [ -n "$real" ]; then
  hmdiff eval-real --data "$real" --json > "$out/eval_real.json"
fi
# the protocol (docs/model_card.md): selection sets (every choice) and test sets (none), 3 sampling
# seeds, 95 % intervals; JSON and the markdown tables the model card and README quote
protocol=(${study:+--study "$study"})
hmdiff eval-protocol --sets selection "${protocol[@]}" --json --report "$out/protocol_selection.md" --force \
  > "$out/protocol_selection.json"
hmdiff eval-protocol --sets test "${protocol[@]}" ${real:+--real "$real"} --json --report "$out/protocol_test.md" --force \
  > "$out/protocol_test.json"
echo "figures written to $out/ and docs/images/demo_overlay.jpg"
