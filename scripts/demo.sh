#!/usr/bin/env bash
# The main job on the default corpus: set up, build, make data/kjv.txt, train a small LSTM for a few minutes,
# then print a sample and the validation perplexity.
# Usage: scripts/demo.sh   (CHARLM_DEMO_MINUTES=M trains for M minutes instead of 2.5)
set -euo pipefail
case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "demo.sh: takes no arguments (CHARLM_DEMO_MINUTES=M sets the minutes); see scripts/demo.sh --help" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
# Only the binary, and the man page and completions it writes (so that `cmake --install build` works after it): the
# tests and benchmarks (about half the files) are scripts/test.sh's to build, in the same build/.
scripts/setup.sh --demo --target charlm_manual -- -DCHARLM_TESTS=OFF -DCHARLM_BENCH=OFF
[ -s data/kjv.txt ] || scripts/get-corpus.sh
minutes="${CHARLM_DEMO_MINUTES:-2.5}"
echo "demo: training a 2x256 LSTM on data/kjv.txt for $minutes minutes (Ctrl-C stops early and keeps the checkpoint)" >&2
./build/charlm train data/kjv.txt --out runs/kjv --force --layers 2 --hidden 256 --seq 100 --batch 32 \
  --lr 3e-3 --minutes "$minutes" --eval-every 100
echo
echo "demo: a sample from the best checkpoint:" >&2
./build/charlm sample runs/kjv/best.safetensors --prompt "And God said" --length 400 --temperature 0.7 --seed 1
