#!/usr/bin/env bash
# Training speed of the three reference LSTMs at the batches one machine gets under strong scaling:
# ceil(batch / N) streams for N = 1, 2, 4, ..., 64, as 'charlm train --threads T' measures it (the last
# progress record of metrics.jsonl: time in training steps only). Small batches make small matrix
# products, slower per character; scripts/scale_model.py --batch-rates reads these JSON lines so that its
# strong-scaling figures do not assume the full batch's speed. The batches of one model take turns over
# --rounds R, and each is its own line; the model keeps each batch's best round.
# Usage: scripts/bench_batches.sh [--threads T] [--seconds S] [--rounds R] > batches.json
set -euo pipefail
cd "$(dirname "$0")/.."

threads=2
seconds=10
rounds=1
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift ;;
    --seconds) seconds="$2"; shift ;;
    --rounds) rounds="$2"; shift ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench_batches.sh: unknown option $1; see scripts/bench_batches.sh --help" >&2; exit 2 ;;
  esac
  shift
done
corpus=../shared/data/tinyshakespeare.txt
if [ ! -f "$corpus" ]; then
  scripts/get-corpus.sh >&2
  corpus=data/kjv.txt
fi

# Runs bounded by time, not steps: one process, so nothing has to agree on where to stop, and a batch of 1
# takes as long as a batch of 50.
minutes=$(/usr/bin/python3 -c 'import sys; print(float(sys.argv[1]) / 60)' "$seconds")
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for round in $(seq "$rounds"); do
  for shape in "2 128 50 50" "2 256 100 64" "3 512 100 50"; do
    read -r layers hidden seq batch <<< "$shape"
    for machines in 1 2 4 8 16 32 64; do
      streams=$(( (batch + machines - 1) / machines ))
      echo "bench_batches: round $round/$rounds, lstm ${layers}x${hidden}, batch $streams" >&2
      build/charlm train "$corpus" --layers "$layers" --hidden "$hidden" --embed 64 --dropout 0 --ema 0 --seq "$seq" --batch "$streams" \
        --minutes "$minutes" --eval-every 1000000000 --val-fraction 0.002 --threads "$threads" --out "$work/run" --force > "$work/log" 2>&1 ||
        { grep -m 3 'charlm: error' "$work/log" >&2 || tail -n 5 "$work/log" >&2; exit 1; }
      /usr/bin/python3 -c '
import json, sys
records = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
layers, hidden, seq, batch, threads = (int(value) for value in sys.argv[2:7])
print(json.dumps({"layers": layers, "hidden": hidden, "seq": seq, "batch": batch, "threads": threads,
                  "train_chars_per_second": records[-1]["chars_per_second"]}))
' "$work/run/metrics.jsonl" "$layers" "$hidden" "$seq" "$streams" "$threads"
    done
  done
done
