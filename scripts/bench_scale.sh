#!/usr/bin/env bash
# Data-parallel ranks against threads on one machine, for the three reference LSTMs, in one run: the training
# throughput of 'mpirun -np N charlm train --threads 1' (N ranks summing gradients with MPI_Allreduce) against
# 'charlm train --threads N' (one process), with the same options. Prints a markdown table of each one's
# characters per second and their ratio (above 1: the ranks are faster). The figures come from each run
# directory's metrics.jsonl, its last progress record: time in training steps only, validation and
# checkpoints left out. --rounds R runs every pair R times, the two taking turns, and reports each figure's
# best round with its spread, (best - worst) / best, as scripts/bench.sh does. --seconds S sizes each run:
# its --steps come from a short 'charlm bench' of the same shapes at N threads.
# Usage: scripts/bench_scale.sh [--ranks N] [--rounds R] [--seconds S]
set -euo pipefail
cd "$(dirname "$0")/.."

ranks=2
rounds=1
seconds=25
while [ $# -gt 0 ]; do
  case "$1" in
    --ranks) ranks="$2"; shift ;;
    --rounds) rounds="$2"; shift ;;
    --seconds) seconds="$2"; shift ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench_scale.sh: unknown option $1; see scripts/bench_scale.sh --help" >&2; exit 2 ;;
  esac
  shift
done
for value in "$ranks" "$rounds"; do
  case "$value" in
    ''|*[!0-9]*|0) echo "bench_scale.sh: --ranks and --rounds take a positive whole number, not '$value'" >&2; exit 2 ;;
  esac
done

if [ ! -x build/charlm ]; then
  echo "bench_scale.sh: build/charlm is missing; build first: cmake -S . -B build && cmake --build build -j2" >&2
  exit 1
fi
if ! command -v mpirun >/dev/null; then
  echo "bench_scale.sh: mpirun is missing; apt-get install openmpi-bin libopenmpi-dev" >&2
  exit 1
fi
corpus=../shared/data/tinyshakespeare.txt
if [ ! -f "$corpus" ]; then
  scripts/get-corpus.sh >&2
  corpus=data/kjv.txt
fi

# Open MPI refuses to start as root unless told twice.
mpi_environment=()
[ "$(id -u)" != 0 ] || mpi_environment=(env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1)
# Binding: Open MPI 4.1 binds each rank to a core by default at -np 2 or fewer, to a socket above that.
# Each rank here runs one thread, so a core of its own is what it should have at any count: it never shares
# a core with its partner and keeps its caches; asked for explicitly, so that the run is the same at every
# --ranks. The one-process run stays unbound, as 'charlm train' runs for a user. More ranks than cores
# cannot each have a core: Open MPI then needs --oversubscribe, and binding would stack ranks, so none.
mpirun_options=(-np "$ranks" --bind-to core)
if [ "$ranks" -gt "$(nproc)" ]; then
  mpirun_options=(-np "$ranks" --oversubscribe --bind-to none)
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
shapes=("2 128 50 50" "2 256 100 64" "3 512 100 50")

# --steps for about --seconds of training each, from the single process's speed at these shapes.
echo "bench_scale: timing the shapes with charlm bench --threads $ranks to size the runs" >&2
build/charlm bench --threads "$ranks" --seconds 1 --corpus "$corpus" --json > "$work/calibration.json"
steps_for() {  # layers hidden seq batch
  /usr/bin/python3 -c '
import json, math, sys
layers, hidden, seq, batch, seconds = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
for row in json.load(open(sys.argv[1]))["models"]:
    if (row["layers"], row["hidden"]) == (layers, hidden):
        print(max(20, math.ceil(seconds * row["train_chars_per_second"] / (seq * batch)))); break
' "$work/calibration.json" "$@" "$seconds"
}

# Prints a run's characters per second, from the last progress record of its metrics.jsonl. Its rate
# counts --seq x --batch characters a step; should the MPI path count one rank's share instead, the rate
# falls short of the steps over the time of a record before the final validation, and a warning says so.
chars_per_second() {  # run_directory seq batch
  /usr/bin/python3 -c '
import json, sys
run, seq, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
records = [json.loads(line) for line in open(run + "/metrics.jsonl") if line.strip()]
rate = records[-1]["chars_per_second"]
unvalidated = [r for r in records if "validation_loss" not in r and r["elapsed_seconds"] > 0]
if unvalidated and rate < 0.6 * unvalidated[-1]["step"] * seq * batch / unvalidated[-1]["elapsed_seconds"]:
    print(f"bench_scale: {run}: {rate:.0f} chars/s is well under {seq} x {batch} characters a step over "
          "the elapsed time: the share of one rank, not the whole batch?", file=sys.stderr)
print(rate)
' "$1" "$2" "$3"
}

results="$work/results.tsv"
: > "$results"
for round in $(seq "$rounds"); do
  for shape in "${shapes[@]}"; do
    read -r layers hidden seq batch <<< "$shape"
    model="${layers}x${hidden}"
    steps=$(steps_for "$layers" "$hidden" "$seq" "$batch")
    options=(--layers "$layers" --hidden "$hidden" --embed 64 --dropout 0 --ema 0 --seq "$seq" --batch "$batch" --steps "$steps"
             --eval-every 1000000000 --force)
    # Taking turns: a neighbour's burst on this shared machine then slows one run, not one side.
    echo "bench_scale: round $round/$rounds, lstm $model, $steps steps: charlm train --threads $ranks" >&2
    log="$work/threads-$model.log"
    if build/charlm train "$corpus" "${options[@]}" --threads "$ranks" --out "$work/threads-$model" > "$log" 2>&1; then
      printf '%s\tthreads\t%s\t%s\n' "$model" "$steps" "$(chars_per_second "$work/threads-$model" "$seq" "$batch")" >> "$results"
    else
      echo "bench_scale: charlm train --threads $ranks failed on lstm $model:" >&2
      grep -m 3 'charlm: error' "$log" >&2 || tail -n 5 "$log" >&2
    fi
    echo "bench_scale: round $round/$rounds, lstm $model, $steps steps: mpirun ${mpirun_options[*]} charlm train --threads 1" >&2
    log="$work/ranks-$model.log"
    if "${mpi_environment[@]}" mpirun "${mpirun_options[@]}" build/charlm train "$corpus" "${options[@]}" --threads 1 \
        --out "$work/ranks-$model" > "$log" 2>&1; then
      printf '%s\tranks\t%s\t%s\n' "$model" "$steps" "$(chars_per_second "$work/ranks-$model" "$seq" "$batch")" >> "$results"
    else
      # Today's charlm (before its MPI path) runs N independent trainings, and all but one meet the run lock.
      echo "bench_scale: mpirun -np $ranks charlm train failed on lstm $model:" >&2
      grep -m 3 'charlm: error' "$log" >&2 || tail -n 5 "$log" >&2
    fi
  done
done

/usr/bin/python3 - "$results" "$ranks" "$rounds" <<'EOF'
import sys

path, ranks, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
speeds, steps = {}, {}
for line in open(path):
    model, kind, step_count, chars_per_second = line.split("\t")
    speeds.setdefault((model, kind), []).append(float(chars_per_second))
    steps[model] = step_count


def figure(model, kind):
    """The best round, with its spread (best - worst) / best where there were several."""
    values = speeds.get((model, kind))
    if not values:
        return "failed"
    best = max(values)
    text = f"{best / 1000:.1f}k"
    if len(values) > 1:
        percent = 100 * (best - min(values)) / best
        text += f" (±{percent:.1f}%)" if percent < 1 else f" (±{percent:.0f}%)"
    return text


print(f"Training chars/s, best of {rounds} round(s): 'charlm train --threads {ranks}' against "
      f"'mpirun -np {ranks} charlm train --threads 1'\n")
print(f"| model | seq x batch | steps | --threads {ranks} | -np {ranks} x --threads 1 | ranks / threads |")
print("|---|---|---:|---:|---:|---:|")
for model, shape in (("2x128", "50 x 50"), ("2x256", "100 x 64"), ("3x512", "100 x 50")):
    threads, ranked = speeds.get((model, "threads")), speeds.get((model, "ranks"))
    ratio = f"{max(ranked) / max(threads):.2f}" if threads and ranked else "-"
    print(f"| lstm {model} | {shape} | {steps.get(model, '-')} | {figure(model, 'threads')} | {figure(model, 'ranks')} | {ratio} |")
EOF
