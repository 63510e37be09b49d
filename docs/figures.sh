#!/usr/bin/env bash
# Regenerates every figure that README.md and the docs quote, from the shipped checkpoint:
# each command's JSON into docs/figures/<name>.json with the command, the date and the machine
# (docs/figures.py record), the reports beside them, the demo overlay, and then the quoted
# blocks of README.md and docs/ from those files (docs/figures.py quote; tests/test_figures.py
# checks that they agree).
#
#   bash docs/figures.sh [--real EVAL_REAL_DIR] [--study PRIOR_STUDY_DIR] [--ros] [--distros] [--soak] [--ablate] [--prior-study]
#
# --real: real frames with ground truth (hmdiff eval-real); --study: the prior study (hmdiff data
# prior-study); the protocol's real and study sets are left out without them. --ros: the node under
# a 30 FPS stream (hmdiff bench-node; needs a sourced ROS 2 and --real for its video; 4 minutes).
# --distros: the node on the video on each ROS 2 core .ci/ros_workspace.sh builds (Humble, then
# Jazzy, each sourced in turn; needs --real; 3 minutes).
# --soak: also the hour of hmdiff bench-node --faults (needs a sourced ROS 2; 61 minutes).
# --ablate: the ablation table and plot, docs/ablation/ (about 20 minutes). --prior-study: the
# prior study's report, docs/prior_study.md, from the whole study given by --study.
# Timings: run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
real='' study='' soak='' ros='' distros='' ablate='' prior_study=''
while [ $# -gt 0 ]; do
  case "$1" in
    --real) real=$2; shift 2 ;;
    --study) study=$2; shift 2 ;;
    --soak) soak=1; shift ;;
    --ros) ros=1; shift ;;
    --distros) distros=1; shift ;;
    --ablate) ablate=1; shift ;;
    --prior-study) prior_study=1; shift ;;
    *) echo "usage: bash docs/figures.sh [--real DIR] [--study DIR] [--ros] [--distros] [--soak] [--ablate] [--prior-study]" >&2; exit 2 ;;
  esac
done
record() { python docs/figures.py record "$@" > /dev/null; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

hmdiff demo --out "$tmp/demo" > /dev/null
cp "$tmp/demo/astronaut_eileen_collins_overlay.jpg" docs/images/demo_overlay.jpg

# timings: both backends of a comparison in one run (ONNX Runtime from the export cache, made on first use)
record bench_steps2 -- hmdiff bench --backend torch,onnxruntime --repeats 100 --json --report docs/bench --force
record bench_torch_steps2_full -- hmdiff bench --backend torch --dat full --json
record bench_pipeline -- hmdiff bench-pipeline --people 1 3 --json --report docs/bench/pipeline --force

# the protocol (docs/model_card.md): selection sets (every choice) and test sets (none), 3 sampling
# seeds, 95 % intervals; the JSON and the markdown tables the model card quotes
record protocol_selection -- hmdiff eval-protocol --sets selection ${study:+--study "$study"} \
  --json --report docs/figures/protocol_selection.md --force
record protocol_test -- hmdiff eval-protocol --sets test ${study:+--study "$study"} ${real:+--real "$real"} \
  --json --report docs/figures/protocol_test.md --force
if [ -n "$real" ]; then
  record eval_real -- hmdiff eval-real --data "$real" --json
fi
if [ -n "$ros" ]; then
  video="$real/videos/mmhuman3d/single_person_demo.mp4"
  record bench_node_demo -- hmdiff bench-node --source demo --fps 30 --seconds 60 --json
  record bench_node_video -- hmdiff bench-node --source "$video" --fps 30 --seconds 60 --json
  record bench_node_video_torch -- hmdiff bench-node --source "$video" --fps 30 --seconds 60 --param backend:=torch --json
fi
if [ -n "$distros" ]; then
  video="$real/videos/mmhuman3d/single_person_demo.mp4"
  for distro in humble jazzy; do
    (
      set +u
      # shellcheck disable=SC1090
      source "$(bash .ci/ros_workspace.sh "$distro")"
      set -u
      record "bench_node_$distro" -- hmdiff bench-node --source "$video" --fps 30 --seconds 60 --json
    )
  done
fi
if [ -n "$ablate" ]; then
  hmdiff ablate --limit 256 --out docs/ablation --force ${study:+--study "$study"} > /dev/null
fi
if [ -n "$prior_study" ]; then
  hmdiff data prior-study-report --study "$study" --out docs/prior_study.md --sheet docs/images/prior_study_renders.png --force > /dev/null
fi
if [ -n "$soak" ]; then
  record soak_humble -- hmdiff bench-node --faults --minutes 60 --json --save docs/bench/soak_humble.json
fi

python docs/figures.py quote
echo "figures written to docs/figures/, docs/bench/ and docs/images/demo_overlay.jpg; README.md and docs/ quote them"
