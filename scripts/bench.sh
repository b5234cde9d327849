#!/usr/bin/env bash
# Measures charlm against its peers on the three reference LSTMs, all in one run: 'charlm bench', oneDNN's
# LSTM primitives (bench/onednn_lstm.cpp) and PyTorch (scripts/bench_torch.py), at each thread count; where
# the CPU has AVX512_BF16, also charlm at --precision bf16 and PyTorch under bf16 autocast, against the bf16 GEMM.
# Prints markdown tables with charlm's ratio to each peer; --json FILE also keeps every measurement.
# --rounds N runs everything N times over, the programs taking turns, and reports each figure's best round
# with its spread over the rounds beside it, e.g. 208.0k (±3%), (best - worst) / best: on a shared machine, a
# neighbour's burst then slows one round of one program, not the comparison, and the spread says how far apart
# two programs must be for a ratio to mean anything.
# Usage: scripts/bench.sh [--threads "1 2"] [--seconds S] [--rounds N] [--json FILE]
set -euo pipefail
cd "$(dirname "$0")/.."

thread_counts="1 2"
seconds=3
rounds=1
json_file=""
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) thread_counts="$2"; shift ;;
    --seconds) seconds="$2"; shift ;;
    --rounds) rounds="$2"; shift ;;
    --json) json_file="$2"; shift ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench.sh: unknown option $1; see scripts/bench.sh --help" >&2; exit 2 ;;
  esac
  shift
done
case "$rounds" in
  ''|*[!0-9]*|0) echo "bench.sh: --rounds takes a positive whole number, not '$rounds'" >&2; exit 2 ;;
esac

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
# bf16 rows where the CPU multiplies bf16 (charlm would refuse --precision bf16 elsewhere)
precisions="fp32"
if grep -qw avx512_bf16 /proc/cpuinfo && [ "${CHARLM_BF16:-1}" != 0 ]; then precisions="fp32 bf16"; fi
vocab=$(/usr/bin/python3 -c 'import sys; print(len(set(open(sys.argv[1], encoding="utf-8").read())))' "$corpus")

results="$(mktemp)"
trap 'rm -f "$results"' EXIT
# Peers run one after another, never side by side: each gets every core it is given.
for round in $(seq "$rounds"); do
  for threads in $thread_counts; do
    # Each precision in a process of its own: peak RSS is a process's high-water mark.
    for precision in $precisions; do
      echo "bench: round $round/$rounds, $threads thread(s): charlm $precision" >&2
      build/charlm bench --threads "$threads" --seconds "$seconds" --corpus "$corpus" --precision "$precision" --json >> "$results"
    done
    echo "bench: round $round/$rounds, $threads thread(s): oneDNN" >&2
    build/bench/onednn_lstm_bench --gemm --threads "$threads" --seconds "$seconds" >> "$results"
    for shape in "2 128 50 50" "2 256 100 64" "3 512 100 50"; do
      read -r layers hidden seq batch <<< "$shape"
      build/bench/onednn_lstm_bench --layers "$layers" --hidden "$hidden" --embed 64 --seq "$seq" --batch "$batch" \
        --threads "$threads" --seconds "$seconds" >> "$results"
    done
    for precision in $precisions; do
      echo "bench: round $round/$rounds, $threads thread(s): PyTorch $precision" >&2
      for shape in "2 128 50 50" "2 256 100 64" "3 512 100 50"; do
        read -r layers hidden seq batch <<< "$shape"
        /usr/bin/python3 scripts/bench_torch.py --layers "$layers" --hidden "$hidden" --embed 64 --seq "$seq" \
          --batch "$batch" --vocab "$vocab" --threads "$threads" --seconds "$seconds" --autocast "$precision" >> "$results"
      done
    done
  done
done
[ -z "$json_file" ] || cp "$results" "$json_file"
/usr/bin/python3 scripts/bench_table.py "$results"
