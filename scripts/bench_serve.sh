#!/usr/bin/env bash
# Serving throughput of 'charlm serve' against what the same model does without a server, in one run on one
# machine: 'charlm eval' (teacher-forced scoring of up to 32 streams a batch, the ceiling for batched decoding),
# 'charlm sample' (one stream: a single user without a server) and 'charlm serve' under 1, 2, 4, ... clients
# streaming completions at once (bench/serve_load.cpp), each point after a warm-up. Prints a markdown table:
# aggregate and per-client characters per second, the aggregate's ratio to eval and to sample, time to first
# character, and the CPU cores the server and the load client used (the client runs on the same machine, and
# what it takes the server does not get). A second table compares streaming with "stream": false at 1 client
# and at the most clients: the cost of an HTTP chunk and a JSON event per character.
# Then what idle connections cost the others: a 100-character completion (1 client, requests one after the other)
# on its own and with 1,000 connections held open meanwhile (half silent, half with half a request sent, each opened
# again when the server drops it: bench/serve_load --idle-connections), and 64 streaming clients beside those 1,000
# for --long-seconds (60): errors and the server's memory at the start and the end.
# --compare-build DIR measures DIR/charlm's server too at the client counts (streaming), in the same run: the figures
# of another build (main's, before a change) beside this one's.
# Last, two models served by one 'charlm serve' (the checkpoint twice, as a= and b=), --pair-clients clients on each
# at once, against the same number of clients on the model served alone (the issue's target: each at least 0.45x).
# The model is a 2x256 LSTM (embed 64) on tinyshakespeare after one training step (speed does not depend on
# training); --checkpoint FILE measures another. --threads N goes to eval, sample and serve alike.
# Usage: scripts/bench_serve.sh [--threads N] [--seconds S] [--clients "1 2 4 8 16 32"] [--max-tokens N]
#        [--pair-clients 8] [--checkpoint FILE] [--json FILE] [--long-seconds 60] [--no-idle] [--compare-build DIR]
set -euo pipefail
invoked_from="$PWD"
cd "$(dirname "$0")/.."

threads=1
seconds=5
client_counts="1 2 4 8 16 32"
max_tokens=400
pair_clients=8
checkpoint=""
json_file=""
long_seconds=60
idle_rows=1
compare_build=""
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift ;;
    --seconds) seconds="$2"; shift ;;
    --clients) client_counts="$2"; shift ;;
    --max-tokens) max_tokens="$2"; shift ;;
    --checkpoint) checkpoint="$2"; shift ;;
    --json) json_file="$2"; shift ;;
    --pair-clients) pair_clients="$2"; shift ;;
    --long-seconds) long_seconds="$2"; shift ;;
    --no-idle) idle_rows=0 ;;
    --compare-build) compare_build="$2"; shift ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench_serve.sh: unknown option $1; see scripts/bench_serve.sh --help" >&2; exit 2 ;;
  esac
  shift
done
for value in "$threads" "$max_tokens" "$pair_clients" "$long_seconds" $client_counts; do
  case "$value" in
    ''|*[!0-9]*|0) echo "bench_serve.sh: --threads, --max-tokens, --pair-clients, --long-seconds and --clients take positive whole numbers, not '$value'" >&2; exit 2 ;;
  esac
done
case "$seconds" in
  ''|*[!0-9.]*|*.*.*|.) echo "bench_serve.sh: --seconds takes a positive number, not '$seconds'" >&2; exit 2 ;;
esac
[ -n "$client_counts" ] || { echo "bench_serve.sh: --clients needs at least one count" >&2; exit 2; }
# Paths given on the command line are the caller's, from where the script was started.
case "$checkpoint" in ''|/*) ;; *) checkpoint="$invoked_from/$checkpoint" ;; esac
case "$json_file" in ''|/*) ;; *) json_file="$invoked_from/$json_file" ;; esac
case "$compare_build" in ''|/*) ;; *) compare_build="$invoked_from/$compare_build" ;; esac
[ -z "$compare_build" ] || [ -x "$compare_build/charlm" ] || { echo "bench_serve.sh: --compare-build $compare_build: no charlm there" >&2; exit 2; }
[ -z "$checkpoint" ] || [ -f "$checkpoint" ] || { echo "bench_serve.sh: --checkpoint $checkpoint: no such file" >&2; exit 2; }

load=build/bench/charlm_serve_load
if [ ! -x build/charlm ] || [ ! -x "$load" ]; then
  echo "bench_serve.sh: build/charlm or $load is missing; build first: cmake -S . -B build && cmake --build build -j2" \
       "(charlm_serve_load needs libcpp-httplib-dev)" >&2
  exit 1
fi
corpus=../shared/data/tinyshakespeare.txt
if [ ! -f "$corpus" ]; then
  scripts/get-corpus.sh >&2
  corpus=data/kjv.txt
fi

work="$(mktemp -d)"
server_pid=""
cleanup() {
  [ -z "$server_pid" ] || kill -KILL "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

if [ -z "$checkpoint" ]; then
  echo "bench_serve: a 2x256 LSTM checkpoint: one training step on $corpus" >&2
  build/charlm train "$corpus" --out "$work/run" --steps 1 --layers 2 --hidden 256 --embed 64 --threads "$threads" \
    --quiet > "$work/train.log" 2>&1 || { cat "$work/train.log" >&2; exit 1; }
  checkpoint="$work/run/best.safetensors"
fi

seconds_now() { date +%s.%N; }
seconds_since() { awk -v start="$1" -v end="$(seconds_now)" 'BEGIN { printf "%.6f", end - start }'; }

# eval: the first 200,000 characters, and the first 2,000 to take off what loading the model and the text
# costs, so that the rate is the scoring's alone.
/usr/bin/python3 -c '
import sys
text = open(sys.argv[1], encoding="utf-8").read()
open(sys.argv[2], "w", encoding="utf-8").write(text[:200000])
open(sys.argv[3], "w", encoding="utf-8").write(text[:2000])
' "$corpus" "$work/eval_large.txt" "$work/eval_small.txt"
echo "bench_serve: charlm eval --threads $threads, 200,000 characters" >&2
start=$(seconds_now); build/charlm eval "$checkpoint" "$work/eval_small.txt" --threads "$threads" --json > "$work/eval_small.json"
eval_small_seconds=$(seconds_since "$start")
start=$(seconds_now); build/charlm eval "$checkpoint" "$work/eval_large.txt" --threads "$threads" --json > "$work/eval_large.json"
eval_large_seconds=$(seconds_since "$start")
eval_rate=$(/usr/bin/python3 -c '
import json, sys
small, large = (json.load(open(path))["characters_scored"] for path in sys.argv[1:3])
print((large - small) / max(float(sys.argv[4]) - float(sys.argv[3]), 1e-9))
' "$work/eval_small.json" "$work/eval_large.json" "$eval_small_seconds" "$eval_large_seconds")

# sample: 20,000 characters at batch 1, less a 1-character run for the start.
echo "bench_serve: charlm sample --threads $threads, 20,000 characters" >&2
start=$(seconds_now); build/charlm sample "$checkpoint" --length 1 --seed 1 --threads "$threads" > /dev/null
sample_short_seconds=$(seconds_since "$start")
start=$(seconds_now); build/charlm sample "$checkpoint" --length 20000 --seed 1 --threads "$threads" > /dev/null
sample_long_seconds=$(seconds_since "$start")
sample_rate=$(awk -v short="$sample_short_seconds" -v long="$sample_long_seconds" \
  'BEGIN { d = long - short; if (d < 1e-9) d = 1e-9; printf "%.1f", 19999 / d }')

# serve: a slot for every client, so that the figures measure batching and not the queue. Job control on
# while it starts, so that it does not inherit an ignored SIGINT and the Ctrl-C at the end reaches it.
most_clients=$(printf '%s\n' $client_counts | sort -n | tail -n 1)
slots=$(( most_clients > 32 ? most_clients : 32 ))
start_server() {  # the charlm binary, then what to serve (the checkpoint where nothing is given)
  local binary="$1"
  shift
  [ $# -gt 0 ] || set -- "$checkpoint"
  : > "$work/server.out"
  set -m
  "$binary" serve "$@" --port 0 --threads "$threads" --parallel "$slots" > "$work/server.out" 2> "$work/server.log" &
  server_pid=$!
  set +m
  url=""
  for _ in $(seq 600); do
    url="$(grep -m 1 -o 'http://[^[:space:]]*' "$work/server.out" || true)"
    [ -n "$url" ] && break
    kill -0 "$server_pid" 2>/dev/null || { echo "bench_serve.sh: charlm serve exited:" >&2; tail -n 5 "$work/server.log" >&2; exit 1; }
    sleep 0.1
  done
  [ -n "$url" ] || { echo "bench_serve.sh: charlm serve printed no URL within 60 s" >&2; exit 1; }
}
stop_server() {
  kill -INT "$server_pid"
  for _ in $(seq 100); do
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$server_pid" 2>/dev/null; then
    echo "bench_serve.sh: charlm serve was still running 10 s after SIGINT" >&2
    kill -KILL "$server_pid" 2>/dev/null || true
  else
    status=0
    wait "$server_pid" || status=$?
    [ "$status" -eq 0 ] || echo "bench_serve.sh: charlm serve exited with status $status after SIGINT, not 0" >&2
  fi
  server_pid=""
}
start_server build/charlm

results="$work/serve.jsonl"
: > "$results"
measure() {  # clients, then charlm_serve_load's options
  local clients="$1"
  shift
  if ! "$load" --url "$url" --clients "$clients" --seconds "$seconds" --warmup-seconds 1 --max-tokens "$max_tokens" \
       --rss-pid "$server_pid" --json "$@" >> "$results" 2> "$work/load.err"; then
    echo "bench_serve: $clients client(s) $*: errors:" >&2
    head -n 3 "$work/load.err" >&2
  fi
}
echo "bench_serve: charlm serve --threads $threads --parallel $slots at $url; warming up with $most_clients clients" >&2
"$load" --url "$url" --clients "$most_clients" --seconds 1 --warmup-seconds 1 --max-tokens "$max_tokens" > /dev/null 2>&1 || true
for clients in $(printf '%s\n' $client_counts "$pair_clients" | sort -nu); do
  echo "bench_serve: $clients client(s), streaming, $seconds s" >&2
  measure "$clients"
done
least_clients=$(printf '%s\n' $client_counts | sort -n | head -n 1)
for clients in $(printf '%s\n' "$least_clients" "$most_clients" | sort -nu); do
  echo "bench_serve: $clients client(s), streaming and not, requests finished, $seconds s each" >&2
  measure "$clients" --finish
  measure "$clients" --finish --non-streaming
done

# What idle connections cost: a 100-character completion alone and beside 1,000 of them; then 64 streams beside them.
idle_results="$work/idle.jsonl"
: > "$idle_results"
if [ "$idle_rows" -eq 1 ]; then
  for idle in 0 1000; do
    echo "bench_serve: 1 client, 100-character completions, $idle idle connections, $seconds s" >&2
    "$load" --url "$url" --clients 1 --seconds "$seconds" --warmup-seconds 1 --max-tokens 100 --finish --rss-pid "$server_pid" \
      --idle-connections "$idle" --json >> "$idle_results" 2> "$work/load.err" || { echo "bench_serve: errors:" >&2; head -n 3 "$work/load.err" >&2; }
  done
  echo "bench_serve: 64 streaming clients and 1,000 idle connections, $long_seconds s" >&2
  "$load" --url "$url" --clients 64 --seconds "$long_seconds" --warmup-seconds 1 --max-tokens "$max_tokens" --rss-pid "$server_pid" \
    --idle-connections 1000 --json >> "$idle_results" 2> "$work/load.err" || { echo "bench_serve: errors:" >&2; head -n 3 "$work/load.err" >&2; }
fi
stop_server

compare_results="$work/compare.jsonl"
: > "$compare_results"
if [ -n "$compare_build" ]; then
  start_server "$compare_build/charlm"
  echo "bench_serve: $compare_build/charlm serve at $url; warming up with $most_clients clients" >&2
  "$load" --url "$url" --clients "$most_clients" --seconds 1 --warmup-seconds 1 --max-tokens "$max_tokens" > /dev/null 2>&1 || true
  for clients in $client_counts; do
    echo "bench_serve: $compare_build: $clients client(s), streaming, $seconds s" >&2
    "$load" --url "$url" --clients "$clients" --seconds "$seconds" --warmup-seconds 1 --max-tokens "$max_tokens" --rss-pid "$server_pid" \
      --json >> "$compare_results" 2> "$work/load.err" || { echo "bench_serve: errors:" >&2; head -n 3 "$work/load.err" >&2; }
  done
  stop_server
fi

# Two models in one server, each with half the threads: --pair-clients on each at once.
pairs="$work/pairs.jsonl"
: > "$pairs"
start_server build/charlm "a=$checkpoint" "b=$checkpoint"
echo "bench_serve: two models, $pair_clients client(s) on each at once, $seconds s" >&2
load_pids=()
for model in a b; do
  "$load" --url "$url" --clients "$pair_clients" --seconds "$seconds" --warmup-seconds 1 --max-tokens "$max_tokens" --model "$model" \
    --json > "$work/pair-$model.json" 2> "$work/pair-$model.err" &
  load_pids+=($!)
done
wait "${load_pids[@]}" || true
for model in a b; do
  if [ -s "$work/pair-$model.json" ]; then
    /usr/bin/python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); r["model"] = sys.argv[2]; print(json.dumps(r))' \
      "$work/pair-$model.json" "$model" >> "$pairs"
  else
    echo "bench_serve: two models, model $model: errors:" >&2
    head -n 3 "$work/pair-$model.err" >&2
  fi
done
stop_server

/usr/bin/python3 - "$results" "$eval_rate" "$sample_rate" "$threads" "$seconds" "$max_tokens" "$checkpoint" "${json_file:-}" \
  "$idle_results" "$compare_results" "$compare_build" "$pairs" "$pair_clients" <<'EOF'
import json, math, os, sys

(path, eval_rate, sample_rate, threads, seconds, max_tokens, checkpoint, json_file, idle_path, compare_path, compare_build, pairs_path,
 pair_clients) = sys.argv[1:14]
idle_runs = [json.loads(line) for line in open(idle_path) if line.strip()]
compare_runs = [json.loads(line) for line in open(compare_path) if line.strip()]
pairs = [json.loads(line) for line in open(pairs_path) if line.strip()]
eval_rate, sample_rate = float(eval_rate), float(sample_rate)
runs = [json.loads(line) for line in open(path) if line.strip()]


def rate(value):
    return f"{value / 1000:.1f}k" if value >= 10000 else f"{value:.0f}"


def milliseconds(value):
    return "-" if value is None else f"{value * 1000:.1f} ms"


def cores(value):
    return "-" if value is None else f"{value:.2f}"


cpu = "?"
try:
    cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
except (OSError, StopIteration):
    pass
print(f"Serving a 2x256 LSTM ({os.path.basename(checkpoint)}), --threads {threads} for eval, sample and serve, "
      f"{os.cpu_count()} cores ({cpu}); each point {seconds} s after 1 s of warm-up, max_tokens {max_tokens}.\n")
print(f"charlm eval: {rate(eval_rate)} chars/s (teacher-forced, up to 32 streams a batch); "
      f"charlm sample: {rate(sample_rate)} chars/s (one stream). Ratios are of the aggregate.\n")
print("| clients | aggregate chars/s | per-client chars/s (mean / min) | ratio to eval | ratio to sample "
      "| first char (median / p95) | server CPU cores | client CPU cores | errors |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for run in runs:
    if not run["streaming"] or run["in_flight_at_end"] != "cut":
        continue
    aggregate = run["chars_per_second"]
    print(f"| {run['clients']} | {rate(aggregate)} | {rate(run['chars_per_second_per_client_mean'])} / "
          f"{rate(run['chars_per_second_per_client_min'])} | {aggregate / eval_rate:.2f} | {aggregate / sample_rate:.2f} | "
          f"{milliseconds(run['first_character_seconds_median'])} / {milliseconds(run['first_character_seconds_p95'])} | "
          f"{cores(run.get('server_cpu_cores'))} | {cores(run.get('client_cpu_cores'))} | {run['errors']} |")

finished = {(run["clients"], run["streaming"]): run for run in runs if run["in_flight_at_end"] == "finished"}
if finished:
    print("\nWhat an event per character costs: whole requests only (--finish), streamed or not.\n")
    print("| clients | streaming chars/s | \"stream\": false chars/s | streaming / not | server CPU cores (streaming / not) | errors |")
    print("|---:|---:|---:|---:|---:|---:|")
    for clients in sorted({clients for clients, _ in finished}):
        streamed, whole = finished.get((clients, True)), finished.get((clients, False))
        if not streamed or not whole:
            continue
        ratio = streamed["chars_per_second"] / whole["chars_per_second"] if whole["chars_per_second"] else math.nan
        print(f"| {clients} | {rate(streamed['chars_per_second'])} | {rate(whole['chars_per_second'])} | {ratio:.2f} | "
              f"{cores(streamed.get('server_cpu_cores'))} / {cores(whole.get('server_cpu_cores'))} | "
              f"{streamed['errors'] + whole['errors']} |")

def mebibytes(value):
    return "-" if value is None else f"{value / 2**20:.1f} MiB"


single = [run for run in idle_runs if run["clients"] == 1]
if len(single) == 2:
    alone, beside = sorted(single, key=lambda run: run.get("idle_connections", 0))
    print("\nWhat idle connections cost the others: 100-character completions, one client, alone and beside 1,000 connections "
          "held open (half silent, half with half a request sent).\n")
    print("| idle connections | completion (median) | ratio to alone | requests | errors | server VmRSS (start / end) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for run in (alone, beside):
        ratio = run["request_seconds_median"] / alone["request_seconds_median"] if run["request_seconds_median"] and alone["request_seconds_median"] else math.nan
        print(f"| {run.get('idle_connections', 0)} | {milliseconds(run['request_seconds_median'])} | {ratio:.2f} | {run['requests_completed']} | "
              f"{run['errors']} | {mebibytes(run.get('rss_bytes_after_warmup'))} / {mebibytes(run.get('rss_bytes_last'))} |")
for run in idle_runs:
    if run["clients"] == 1:
        continue
    print(f"\n{run['clients']} streaming clients beside {run.get('idle_connections', 0)} idle connections for {run['seconds']:g} s: "
          f"{rate(run['chars_per_second'])} chars/s, {run['requests_completed']} requests completed, {run['errors']} errors, "
          f"{run.get('idle_connections_reopened', 0)} idle connections opened again after the server's --timeout; "
          f"server VmRSS {mebibytes(run.get('rss_bytes_after_warmup'))} after warm-up, {mebibytes(run.get('rss_bytes_last'))} at the end, "
          f"{mebibytes(run.get('rss_bytes_max'))} at most.")
if compare_runs:
    ours = {run["clients"]: run for run in runs if run["streaming"] and run["in_flight_at_end"] == "cut"}
    print(f"\nThis build against {compare_build}/charlm, streaming, in the same run:\n")
    print("| clients | this build chars/s | other build chars/s | this / other | first char (median, this / other) | errors (this / other) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for other in compare_runs:
        mine = ours.get(other["clients"])
        if not mine:
            continue
        ratio = mine["chars_per_second"] / other["chars_per_second"] if other["chars_per_second"] else math.nan
        print(f"| {other['clients']} | {rate(mine['chars_per_second'])} | {rate(other['chars_per_second'])} | {ratio:.2f} | "
              f"{milliseconds(mine['first_character_seconds_median'])} / {milliseconds(other['first_character_seconds_median'])} | "
              f"{mine['errors']} / {other['errors']} |")
alone = next((run for run in runs if run["streaming"] and run["in_flight_at_end"] == "cut" and run["clients"] == int(pair_clients)), None)
if pairs and alone:
    print(f"\nTwo models served together (the checkpoint twice, --threads {threads} split between them), {pair_clients} "
          f"streaming clients on each at once, against {pair_clients} on the model served alone ({rate(alone['chars_per_second'])} chars/s).\n")
    print("| model | chars/s together | ratio to alone | first char (median) | errors |")
    print("|---|---:|---:|---:|---:|")
    for run in pairs:
        print(f"| {run['model']} | {rate(run['chars_per_second'])} | {run['chars_per_second'] / alone['chars_per_second']:.2f} | "
              f"{milliseconds(run['first_character_seconds_median'])} | {run['errors']} |")

if json_file:
    with open(json_file, "w") as out:
        json.dump({"threads": int(threads), "eval_chars_per_second": eval_rate, "sample_chars_per_second": sample_rate,
                   "serve": runs, "idle": idle_runs, "compare_build": compare_build or None, "compare": compare_runs, "two_models": pairs},
                  out, indent=1)
EOF
