#!/usr/bin/env bash
# Measures charlm against its peers on the three reference LSTMs, all in one run: 'charlm bench', oneDNN's
# LSTM primitives (bench/onednn_lstm.cpp) and PyTorch (scripts/bench_torch.py), at each thread count.
# Prints markdown tables with charlm's ratio to each peer; --json FILE also keeps every measurement.
# Usage: scripts/bench.sh [--threads "1 2"] [--seconds S] [--json FILE]
set -euo pipefail
cd "$(dirname "$0")/.."

thread_counts="1 2"
seconds=3
json_file=""
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) thread_counts="$2"; shift ;;
    --seconds) seconds="$2"; shift ;;
    --json) json_file="$2"; shift ;;
    -h|--help) sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench.sh: unknown option $1; see scripts/bench.sh --help" >&2; exit 2 ;;
  esac
  shift
done

scripts/setup.sh --bench >&2
if [ ! -x build/bench/onednn_lstm_bench ]; then
  echo "bench.sh: the oneDNN peer was not built (is libdnnl-dev installed?)" >&2
  exit 1
fi
corpus=../shared/data/tinyshakespeare.txt
if [ ! -f "$corpus" ]; then
  scripts/get-corpus.sh >&2
  corpus=data/kjv.txt
fi
vocab=$(/usr/bin/python3 -c 'import sys; print(len(set(open(sys.argv[1], encoding="utf-8").read())))' "$corpus")

results="$(mktemp)"
trap 'rm -f "$results"' EXIT
# Peers run one after another, never side by side: each gets every core it is given.
for threads in $thread_counts; do
  echo "bench: $threads thread(s): charlm" >&2
  build/charlm bench --threads "$threads" --seconds "$seconds" --corpus "$corpus" --json >> "$results"
  echo "bench: $threads thread(s): oneDNN" >&2
  build/bench/onednn_lstm_bench --gemm --threads "$threads" --seconds "$seconds" >> "$results"
  for shape in "2 128 50 50" "2 256 100 64" "3 512 100 50"; do
    read -r layers hidden seq batch <<< "$shape"
    build/bench/onednn_lstm_bench --layers "$layers" --hidden "$hidden" --embed 64 --seq "$seq" --batch "$batch" \
      --threads "$threads" --seconds "$seconds" >> "$results"
  done
  echo "bench: $threads thread(s): PyTorch" >&2
  for shape in "2 128 50 50" "2 256 100 64" "3 512 100 50"; do
    read -r layers hidden seq batch <<< "$shape"
    /usr/bin/python3 scripts/bench_torch.py --layers "$layers" --hidden "$hidden" --embed 64 --seq "$seq" \
      --batch "$batch" --vocab "$vocab" --threads "$threads" --seconds "$seconds" >> "$results"
  done
done
[ -z "$json_file" ] || cp "$results" "$json_file"
/usr/bin/python3 scripts/bench_table.py "$results"
