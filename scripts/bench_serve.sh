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
# --compare-build DIR measures DIR/charlm's server against this build's at the client counts (streaming), in the
# same run; --compare-precision measures this build's server at --precision fp32 against bf16 (issue 26: >= 1.5x at
# 16 clients). A comparison is fair to both sides: the two servers run at once (each idle while the other is
# measured), and --rounds rounds a client count alternate which goes first (A B, B A, A B, ...), so that neither
# gains from going first or second, nor from the machine's drift (other loads, the clock); each side's median and
# spread (least to most) are reported, the ratios of the medians and of the bests, and the rounds' own ratios.
# Comparing a build with itself (--compare-build build) checks the method: the ratio must come out near 1.
# --only-compare skips everything else (eval, sample, the sweep, idle connections, two models).
# Last, two models served by one 'charlm serve' (the checkpoint twice, as a= and b=), --pair-clients clients on each
# at once, against the same number of clients on the model served alone (the issue's target: each at least 0.45x).
# The model is a 2x256 LSTM (embed 64) on tinyshakespeare after one training step (speed does not depend on
# training); --model 3x512 trains another shape, --checkpoint FILE measures another. --threads N goes to eval,
# sample and serve alike, and so does --precision P (auto, the default, lets each process time its products at start:
# two servers compared can then run at different precisions, and the comparison's table says which each ran).
# Usage: scripts/bench_serve.sh [--threads N] [--seconds S] [--clients "1 2 4 8 16 32"] [--max-tokens N]
#        [--pair-clients 8] [--model LxH | --checkpoint FILE] [--json FILE] [--long-seconds 60] [--no-idle]
#        [--compare-build DIR] [--compare-precision] [--rounds 3] [--only-compare] [--precision auto|fp32|bf16]
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
compare_precision=0
rounds=3
only_compare=0
model_shape=2x256
precision=auto
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
    --compare-precision) compare_precision=1 ;;
    --rounds) rounds="$2"; shift ;;
    --only-compare) only_compare=1 ;;
    --model) model_shape="$2"; shift ;;
    --precision) precision="$2"; shift ;;
    -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench_serve.sh: unknown option $1; see scripts/bench_serve.sh --help" >&2; exit 2 ;;
  esac
  shift
done
for value in "$threads" "$max_tokens" "$pair_clients" "$long_seconds" "$rounds" $client_counts; do
  case "$value" in
    ''|*[!0-9]*|0) echo "bench_serve.sh: --threads, --max-tokens, --pair-clients, --long-seconds, --rounds and --clients take positive whole numbers, not '$value'" >&2; exit 2 ;;
  esac
done
case "$seconds" in
  ''|*[!0-9.]*|*.*.*|.) echo "bench_serve.sh: --seconds takes a positive number, not '$seconds'" >&2; exit 2 ;;
esac
[ -n "$client_counts" ] || { echo "bench_serve.sh: --clients needs at least one count" >&2; exit 2; }
case "$precision" in
  auto|fp32|bf16) ;;
  *) echo "bench_serve.sh: --precision takes auto, fp32 or bf16, not '$precision'" >&2; exit 2 ;;
esac
[ "$compare_precision" -eq 0 ] || [ "$precision" = auto ] ||
  { echo "bench_serve.sh: --compare-precision sets each side's precision; leave out --precision $precision" >&2; exit 2; }
[[ "$model_shape" =~ ^([1-9][0-9]?)x([1-9][0-9]{0,4})$ ]] || { echo "bench_serve.sh: --model takes LAYERSxHIDDEN, such as 2x256 or 3x512, not '$model_shape'" >&2; exit 2; }
model_layers="${BASH_REMATCH[1]}"
model_hidden="${BASH_REMATCH[2]}"
[ "$only_compare" -eq 0 ] || [ -n "$compare_build" ] || [ "$compare_precision" -eq 1 ] ||
  { echo "bench_serve.sh: --only-compare needs --compare-build or --compare-precision" >&2; exit 2; }
if [ "$compare_precision" -eq 1 ] && ! grep -qw avx512_bf16 /proc/cpuinfo; then
  echo "bench_serve.sh: --compare-precision needs a CPU with bf16 instructions (AVX512_BF16), which this one lacks" >&2
  exit 2
fi
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
server_pids=()  # every server started, for the cleanup (two run at once while they are compared)
cleanup() {
  for pid in "${server_pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

model_label="the checkpoint given"
if [ -z "$checkpoint" ]; then
  model_label="a $model_shape LSTM (embed 64)"
  echo "bench_serve: a $model_shape LSTM checkpoint: one training step on $corpus" >&2
  build/charlm train "$corpus" --out "$work/run" --steps 1 --layers "$model_layers" --hidden "$model_hidden" --embed 64 --threads "$threads" \
    --quiet > "$work/train.log" 2>&1 || { cat "$work/train.log" >&2; exit 1; }
  checkpoint="$work/run/best.safetensors"
fi

seconds_now() { date +%s.%N; }
seconds_since() { awk -v start="$1" -v end="$(seconds_now)" 'BEGIN { printf "%.6f", end - start }'; }

eval_rate=0
sample_rate=0
if [ "$only_compare" -eq 0 ]; then
# eval: the first 200,000 characters, and the first 2,000 to take off what loading the model and the text
# costs, so that the rate is the scoring's alone.
/usr/bin/python3 -c '
import sys
text = open(sys.argv[1], encoding="utf-8").read()
open(sys.argv[2], "w", encoding="utf-8").write(text[:200000])
open(sys.argv[3], "w", encoding="utf-8").write(text[:2000])
' "$corpus" "$work/eval_large.txt" "$work/eval_small.txt"
echo "bench_serve: charlm eval --threads $threads, 200,000 characters" >&2
start=$(seconds_now); build/charlm eval "$checkpoint" "$work/eval_small.txt" --threads "$threads" --precision "$precision" --json > "$work/eval_small.json"
eval_small_seconds=$(seconds_since "$start")
start=$(seconds_now); build/charlm eval "$checkpoint" "$work/eval_large.txt" --threads "$threads" --precision "$precision" --json > "$work/eval_large.json"
eval_large_seconds=$(seconds_since "$start")
eval_rate=$(/usr/bin/python3 -c '
import json, sys
small, large = (json.load(open(path))["characters_scored"] for path in sys.argv[1:3])
print((large - small) / max(float(sys.argv[4]) - float(sys.argv[3]), 1e-9))
' "$work/eval_small.json" "$work/eval_large.json" "$eval_small_seconds" "$eval_large_seconds")

# sample: 20,000 characters at batch 1, less a 1-character run for the start.
echo "bench_serve: charlm sample --threads $threads, 20,000 characters" >&2
start=$(seconds_now); build/charlm sample "$checkpoint" --length 1 --seed 1 --threads "$threads" --precision "$precision" > /dev/null
sample_short_seconds=$(seconds_since "$start")
start=$(seconds_now); build/charlm sample "$checkpoint" --length 20000 --seed 1 --threads "$threads" --precision "$precision" > /dev/null
sample_long_seconds=$(seconds_since "$start")
sample_rate=$(awk -v short="$sample_short_seconds" -v long="$sample_long_seconds" \
  'BEGIN { d = long - short; if (d < 1e-9) d = 1e-9; printf "%.1f", 19999 / d }')
fi

# serve: a slot for every client, so that the figures measure batching and not the queue. Job control on
# while it starts, so that it does not inherit an ignored SIGINT and the Ctrl-C at the end reaches it.
most_clients=$(printf '%s\n' $client_counts | sort -n | tail -n 1)
slots=$(( most_clients > 32 ? most_clients : 32 ))
start_server() {  # the charlm binary, then what to serve and how (the checkpoint where nothing is given); sets url and server_pid
  local binary="$1"
  shift
  [ $# -gt 0 ] || set -- "$checkpoint"
  case " $* " in *" --precision "*) ;; *) set -- "$@" --precision "$precision" ;; esac  # a side of --compare-precision sets its own
  local out="$work/server-${#server_pids[@]}.out" log="$work/server-${#server_pids[@]}.log"
  : > "$out"
  set -m
  "$binary" serve "$@" --port 0 --threads "$threads" --parallel "$slots" > "$out" 2> "$log" &
  server_pid=$!
  set +m
  server_pids+=("$server_pid")
  url=""
  for _ in $(seq 600); do
    url="$(grep -m 1 -o 'http://[^[:space:]]*' "$out" || true)"
    [ -n "$url" ] && break
    kill -0 "$server_pid" 2>/dev/null || { echo "bench_serve.sh: charlm serve exited:" >&2; tail -n 5 "$log" >&2; exit 1; }
    sleep 0.1
  done
  [ -n "$url" ] || { echo "bench_serve.sh: charlm serve printed no URL within 60 s" >&2; exit 1; }
}
stop_server() {  # the server's pid (the last started where none is given)
  local pid="${1:-$server_pid}"
  kill -INT "$pid"
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "bench_serve.sh: charlm serve was still running 10 s after SIGINT" >&2
    kill -KILL "$pid" 2>/dev/null || true
  else
    status=0
    wait "$pid" || status=$?
    [ "$status" -eq 0 ] || echo "bench_serve.sh: charlm serve exited with status $status after SIGINT, not 0" >&2
  fi
}

# Two servers compared fairly (see the top): both started and warmed up, then at each client count --rounds
# rounds of one run each, the side that goes first alternating. Arguments: the results' file, then each side's
# name, binary and serve options (one word each, or none: ""). Each run's line gets "side" (0 or 1), "name" and "round".
compare_servers() {
  local out="$1" names=("$2" "$5") binaries=("$3" "$6") extra=("$4" "$7") urls=() pids=() side round order
  for side in 0 1; do
    # shellcheck disable=SC2086  # an option and its value, split on purpose
    start_server "${binaries[$side]}" ${extra[$side]} "$checkpoint"
    urls[side]="$url"
    pids[side]="$server_pid"
    echo "bench_serve: ${names[$side]}: charlm serve at $url" >&2
    # What precision the server's products run at, as its log says (a server that says nothing runs fp32).
    { grep -m 1 -o 'products in .*' "$work/server-$((${#server_pids[@]} - 1)).log" || echo "products in fp32"; } |
      sed "s/^/${names[$side]}: /" >> "$out.precision"
  done
  for side in 0 1; do
    "$load" --url "${urls[$side]}" --clients "$most_clients" --seconds 1 --warmup-seconds 1 --max-tokens "$max_tokens" > /dev/null 2>&1 || true
  done
  for clients in $client_counts; do
    for round in $(seq "$rounds"); do
      order="0 1"
      [ $((round % 2)) -eq 1 ] || order="1 0"
      for side in $order; do
        echo "bench_serve: ${names[$side]}, $clients client(s), round $round of $rounds, $seconds s" >&2
        "$load" --url "${urls[$side]}" --clients "$clients" --seconds "$seconds" --warmup-seconds 1 --max-tokens "$max_tokens" \
          --rss-pid "${pids[$side]}" --json > "$work/one.json" 2> "$work/load.err" ||
          { echo "bench_serve: ${names[$side]}: errors:" >&2; head -n 3 "$work/load.err" >&2; }
        [ ! -s "$work/one.json" ] || /usr/bin/python3 -c '
import json, sys
run = json.load(open(sys.argv[1]))
run.update(side=int(sys.argv[2]), name=sys.argv[3], round=int(sys.argv[4]))
print(json.dumps(run))' "$work/one.json" "$side" "${names[$side]}" "$round" >> "$out"
      done
    done
  done
  for side in 0 1; do stop_server "${pids[$side]}"; done
}

results="$work/serve.jsonl"
: > "$results"
idle_results="$work/idle.jsonl"
: > "$idle_results"
pairs="$work/pairs.jsonl"
: > "$pairs"
if [ "$only_compare" -eq 0 ]; then
start_server build/charlm

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

# Two models in one server, each with half the threads: --pair-clients on each at once.
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
fi

compare_results="$work/compare.jsonl"
: > "$compare_results"
[ -z "$compare_build" ] || compare_servers "$compare_results" "other build" "$compare_build/charlm" "" "this build" build/charlm ""
precision_results="$work/precision.jsonl"
: > "$precision_results"
[ "$compare_precision" -eq 0 ] ||
  compare_servers "$precision_results" fp32 build/charlm "--precision fp32" bf16 build/charlm "--precision bf16"

/usr/bin/python3 - "$results" "$eval_rate" "$sample_rate" "$threads" "$seconds" "$max_tokens" "$checkpoint" "${json_file:-}" \
  "$idle_results" "$compare_results" "$compare_build" "$pairs" "$pair_clients" "$precision_results" "$rounds" "$model_label" <<'EOF'
import json, math, os, statistics, sys

(path, eval_rate, sample_rate, threads, seconds, max_tokens, checkpoint, json_file, idle_path, compare_path, compare_build, pairs_path,
 pair_clients, precision_path, rounds, model_label) = sys.argv[1:17]
idle_runs = [json.loads(line) for line in open(idle_path) if line.strip()]
compare_runs = [json.loads(line) for line in open(compare_path) if line.strip()]
precision_runs = [json.loads(line) for line in open(precision_path) if line.strip()]
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
print(f"Serving {model_label} ({os.path.basename(checkpoint)}), --threads {threads} for eval, sample and serve, "
      f"{os.cpu_count()} cores ({cpu}); each point {seconds} s after 1 s of warm-up, max_tokens {max_tokens}.\n")
if runs:
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


def precisions_of(path):
    """The lines compare_servers() kept of what each side's server said of its precision."""
    try:
        return [line.strip() for line in open(path + ".precision") if line.strip()]
    except OSError:
        return []


def compared(title, runs, ratio_name, precisions=(), same_precision=True):
    """Side 0 against side 1 (compare_servers): each side's median chars/s with its spread, the ratio side 1 / side 0 of the
    medians and of the bests (on a busy machine the best run is the least disturbed), and the median, least and most of
    the rounds' own ratios (each round ran both sides back to back)."""
    if not runs:
        return
    names = {run["side"]: run["name"] for run in runs}
    print(f"\n{title}\n")
    print(f"| clients | {names.get(0, '?')} chars/s: median (least-most) | {names.get(1, '?')} chars/s: median (least-most) | "
          f"{ratio_name}: medians | {ratio_name}: bests | rounds' {ratio_name}: median (least-most) | "
          f"first char, median ({names.get(0, '?')} / {names.get(1, '?')}) | errors |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for clients in sorted({run["clients"] for run in runs}):
        sides = [[run for run in runs if run["clients"] == clients and run["side"] == side] for side in (0, 1)]
        if not sides[0] or not sides[1]:
            continue
        rates = [[run["chars_per_second"] for run in side] for side in sides]
        medians = [statistics.median(side) for side in rates]
        by_round = [{run["round"]: run["chars_per_second"] for run in side} for side in sides]
        round_ratios = [by_round[1][r] / by_round[0][r] for r in by_round[0] if r in by_round[1] and by_round[0][r]]
        firsts = [statistics.median([run["first_character_seconds_median"] for run in side if run["first_character_seconds_median"] is not None] or [math.nan])
                  for side in sides]
        spread = lambda values: f"{rate(min(values))}-{rate(max(values))}"
        print(f"| {clients} | {rate(medians[0])} ({spread(rates[0])}) | {rate(medians[1])} ({spread(rates[1])}) | "
              f"{medians[1] / medians[0] if medians[0] else math.nan:.2f} | {max(rates[1]) / max(rates[0]) if max(rates[0]) else math.nan:.2f} | "
              f"{statistics.median(round_ratios) if round_ratios else math.nan:.2f} "
              f"({min(round_ratios, default=math.nan):.2f}-{max(round_ratios, default=math.nan):.2f}) | "
              f"{milliseconds(firsts[0])} / {milliseconds(firsts[1])} | {sum(run['errors'] for run in sides[0])} / {sum(run['errors'] for run in sides[1])} |")
    if precisions:
        print("\nPrecision, as each server logged it: " + "; ".join(precisions) + ".")
        if same_precision and len({line.split(": ", 1)[1].split(":")[0].split(",")[0] for line in precisions}) > 1:
            print("**The two sides ran their products at different precisions**: this compares more than the builds "
                  "(pass --precision fp32 or bf16 to compare like with like).")


compared(f"This build against {compare_build}/charlm, streaming, both servers up at once, {rounds} alternating rounds a client count "
         f"({seconds} s each):", compare_runs, "this / other", precisions_of(compare_path))
compared(f"--precision bf16 against fp32 (this build), streaming, both servers up at once, {rounds} alternating rounds a client count "
         f"({seconds} s each):", precision_runs, "bf16 / fp32", precisions_of(precision_path), same_precision=False)
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
                   "serve": runs, "idle": idle_runs, "compare_build": compare_build or None, "compare": compare_runs,
                   "compare_precision": precision_runs, "two_models": pairs},
                  out, indent=1)
EOF
