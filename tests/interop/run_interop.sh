#!/usr/bin/env bash
# Trains a tiny model with the charlm binary, then checks it against PyTorch: logits and loss (torch_interop.py)
# and, given DUMP_SAMPLE_BINARY, sampling step by step (torch_sample.py).
# Usage: run_interop.sh CHARLM_BINARY DUMP_LOGITS_BINARY [lstm|gru|rnn] [DUMP_SAMPLE_BINARY]   (exit 77: PyTorch missing)
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CHARLM_BINARY DUMP_LOGITS_BINARY [lstm|gru|rnn] [DUMP_SAMPLE_BINARY]" >&2
  exit 2
fi
charlm="$1" dump_logits="$2" cell="${3:-lstm}" dump_sample="${4:-}"
here="$(cd "$(dirname "$0")" && pwd)"
# Debian's PyTorch is for the system interpreter, which need not be the first python3 on PATH.
python="${CHARLM_PYTHON:-/usr/bin/python3}"
[ -x "$python" ] || python=python3

directory="$(mktemp -d)"
trap 'rm -rf "$directory"' EXIT
# Multi-byte characters throughout, so that the vocabulary's code-point order is exercised too.
for i in $(seq 1 30); do
  printf 'Line %d: the naïve café serves crème brûlée — κόσμε, 日本語 and 🙂 emoji.\n' "$i"
done > "$directory/train.txt"
head -n 12 "$directory/train.txt" > "$directory/eval.txt"  # about 800 characters: charlm eval reads it as one stream

# Non-square sizes everywhere, so that a transposed matrix cannot go unnoticed.
"$charlm" train "$directory/train.txt" --out "$directory/run" --cell "$cell" --layers 2 --hidden 24 --embed 10 \
  --seq 20 --batch 4 --lr 1e-2 --steps 40 --eval-every 20 --threads 1 --seed 3 > /dev/null 2> "$directory/train.log" \
  || { cat "$directory/train.log" >&2; exit 1; }
for checkpoint in best last; do
  "$python" "$here/torch_interop.py" "$charlm" "$dump_logits" "$directory/run/$checkpoint.safetensors" "$directory/eval.txt"
  [ -z "$dump_sample" ] || "$python" "$here/torch_sample.py" "$charlm" "$dump_sample" "$directory/run/$checkpoint.safetensors"
done
