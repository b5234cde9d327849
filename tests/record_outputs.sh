#!/usr/bin/env bash
# What charlm does, as a user sees it: a fixed set of commands, their exit codes, stdout, stderr and the
# bytes of the files they write, compared with tests/recorded/outputs.txt. A change that means to alter
# an output re-records it in the same commit (--record), so that the diff shows what changed for users.
#
# Usage: tests/record_outputs.sh CHARLM_BINARY [--record | --portable-only]
# (--portable-only: compare the [portable] blocks alone, for a build whose floats round otherwise: the sanitizers' -O1)
#
# Blocks are tagged [portable] (help, refusals: the same on any machine) or [machine] (trained numbers,
# sampled text, checkpoint digests: the same bits on the same CPU and thread count). On a machine other
# than the recording's, the [machine] blocks are left out of the comparison, and the script says so.
set -uo pipefail
binary=$(realpath "$1")
mode=${2:-compare}
here=$(cd "$(dirname "$0")" && pwd)
recorded=$here/recorded/outputs.txt
scratch=$(mktemp -d /tmp/charlm-record.XXXXXX)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$scratch"
}
trap cleanup EXIT
cd "$scratch" || exit 1
transcript=$scratch/transcript.txt
: >"$transcript"

# The machine: the CPU and the instruction sets the kernels may use.
cpu_signature() {
  local model flags
  model=$(grep -m1 -E '^(model name|cpu model)' /proc/cpuinfo | sed 's/.*: //')
  flags=$(grep -m1 -E '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -xE 'avx2|fma|avx512f|avx512_bf16|amx_bf16' | sort | tr '\n' ' ')
  echo "$model | $(grep -m1 -E '^cpu family' /proc/cpuinfo | sed 's/.*: //') $(grep -m1 -E '^model\s' /proc/cpuinfo | sed 's/.*: //') | ${flags% }"
}

# Timings, dates and the scratch folder's name change from run to run; everything else must not.
normalize() {
  sed -E -e "s#$scratch#SCRATCH#g" \
    -e 's/^\[[0-9:]{8}\] /[TIME] /' \
    -e 's/[0-9.]+k? chars\/s/N chars\/s/g' \
    -e 's/[0-9.]+ GFLOP\/s/N GFLOP\/s/g' \
    -e 's/\| [0-9hms ]+ \| ETA [0-9hms ]+/| ELAPSED | ETA/' \
    -e 's/"(chars_per_second|elapsed_seconds|created|seconds|time_to_first_character_seconds)": ?[0-9.e+-]+/"\1":N/g' \
    -e 's/in [0-9.]+ ?(s|ms|seconds|minutes)\b/in N \1/g' \
    -e 's/(took|after) [0-9.]+ ?(s|ms|seconds|minutes)\b/\1 N \2/g' \
    -e 's/"id": ?"cmpl-[0-9a-f]+-[0-9]+"/"id":"cmpl-N"/g' \
    -e 's#127\.0\.0\.1:[0-9]+#127.0.0.1:PORT#g' \
    -e 's/Usage: [^ ]*charlm/Usage: charlm/'
}

# run TAG COMMAND...: one block with the command, its exit code, stdout and stderr.
run() {
  local tag=$1
  shift
  "$@" >"$scratch/out" 2>"$scratch/err" </dev/null
  local status=$?
  {
    echo "=== [$tag] \$ ${*//$binary/charlm}" | normalize
    echo "exit $status"
    echo "--- stdout"
    normalize <"$scratch/out"
    echo "--- stderr"
    normalize <"$scratch/err"
  } >>"$transcript"
}

# files TAG FILE...: digests of files, with the scratch folder's name (stored in checkpoints) left out.
files() {
  local tag=$1
  shift
  echo "=== [$tag] files" >>"$transcript"
  for file in "$@"; do
    if [ -f "$file" ]; then
      echo "$file $(LC_ALL=C sed "s#$scratch#SCRATCH#g" "$file" | sha256sum | cut -c1-16)" >>"$transcript"
    else
      echo "$file (absent)" >>"$transcript"
    fi
  done
}

metrics() {
  echo "=== [machine] $1" >>"$transcript"
  normalize <"$1" >>"$transcript"
  echo >>"$transcript"
}

# A text made here: sentences of common words from a fixed generator.
awk 'BEGIN{split("the of and to in a is that for it as was with be by on not he I this are or his from at which but have an they you were her she there one all we their",w," "); s=12345; for(i=0;i<6000;i++){s=(s*1103515245+12345)%2147483648; printf "%s", w[1+int(s/65536)%40]; s=(s*1103515245+12345)%2147483648; r=int(s/65536)%13; if(r==0) printf ".\n"; else if (r==1) printf ", "; else printf " "}}' >corpus.txt
head -c 3000 corpus.txt >other.txt
printf 'we were there, and they' >prompt.txt
printf '\xff\xfe' >bad.txt
: >empty.txt
printf 'aaaaaaaaaaaa' >one.txt
printf 'abcd' >short.txt
small=(--layers 1 --hidden 32 --embed 16 --seq 32 --batch 8 --eval-every 10 --seed 3)

# --- help: every command's, and the tool's
run portable "$binary" --help
for command in train sample eval serve info plot bench; do run portable "$binary" "$command" --help; done
run portable "$binary" --version

# --- training: one thread and two, a resume, fine-tuning, each cell
run machine "$binary" train corpus.txt --out t1 "${small[@]}" --steps 30 --threads 1
files machine t1/last.safetensors t1/best.safetensors t1/corpus.ids
metrics t1/metrics.jsonl
run machine "$binary" train corpus.txt --out t2 "${small[@]}" --steps 30 --threads 2
files machine t2/last.safetensors t2/best.safetensors
run machine "$binary" train corpus.txt --out t3 "${small[@]}" --steps 20 --threads 2 --keep-checkpoints
run machine "$binary" train --resume t3 --steps 30 --threads 2
files machine t3/last.safetensors t3/best.safetensors t3/step-000010-*.safetensors
metrics t3/metrics.jsonl
run machine "$binary" train other.txt --out t4 --init-from t1/best.safetensors --steps 10 --seq 16 --batch 4 --eval-every 5 --threads 1
files machine t4/last.safetensors t4/best.safetensors
for cell in gru rnn; do
  run machine "$binary" train corpus.txt --out "c-$cell" --cell "$cell" "${small[@]}" --steps 20 --threads 1 --dropout 0 --ema 0 \
    --lr-schedule cosine --warmup 5 --quiet
  files machine "c-$cell/last.safetensors"
done
run machine "$binary" train corpus.txt --out t5 "${small[@]}" --steps 20 --threads 1 --val other.txt --dropout-mask step \
  --embed-dropout 0.1 --weight-drop 0.2 --lr-schedule step --lr-decay-every 5 --lr-decay 0.7 --clip 1 --val-chars 0
files machine t5/last.safetensors
run machine sh -c "head -c 8000 corpus.txt | '$binary' train - --out t6 --layers 1 --hidden 16 --seq 16 --batch 4 --steps 10 --threads 1 --eval-every 5"

# --- sampling with every option
checkpoint=t1/best.safetensors
run machine "$binary" sample "$checkpoint" --prompt "the " --length 80 --seed 5
run machine "$binary" sample "$checkpoint" --prompt "the " --length 80 --seed 5 --temperature 0.5 --top-k 5
run machine "$binary" sample "$checkpoint" --prompt "the " --length 80 --seed 5 --top-p 0.8 --threads 2
run machine "$binary" sample "$checkpoint" --prompt "the " --length 60 --greedy
run machine "$binary" sample "$checkpoint" --prompt-file prompt.txt --length 60 --seed 2 --count 2 --json
run machine "$binary" sample "$checkpoint" --prompt "the Q" --skip-unknown --length 40 --seed 2 --stop "."
run machine "$binary" sample "$checkpoint" --prompt "the " --length 40 --seed 2 --adapt-to other.txt --adapt-lr 0.001 --adapt-decay 0.01 --adapt-window 20
run machine "$binary" sample c-gru/last.safetensors --prompt "and " --length 40 --seed 9
run machine "$binary" sample c-rnn/last.safetensors --prompt "and " --length 40 --seed 9

# --- evaluation and description
run machine "$binary" eval "$checkpoint" other.txt
run machine "$binary" eval "$checkpoint" other.txt --json --threads 2
run machine "$binary" eval "$checkpoint" other.txt --adapt --adapt-window 20
run machine "$binary" eval "$checkpoint" other.txt --html report.html --html-chars 200
files machine report.html
run machine "$binary" info "$checkpoint"
run machine "$binary" info t3/last.safetensors --json

# --- CHARLM_KERNELS: a name that is no level is refused before any work, on any machine
run portable env CHARLM_KERNELS=avx3 "$binary" bench --corpus corpus.txt --seconds 0.05

# --- bench: its shape, not its timings (at fp32: auto's choice would follow a timing)
run machine sh -c "'$binary' bench --corpus corpus.txt --model 2x128 --seconds 0.05 --threads 1 --precision fp32 --json | sed -E 's/\"([a-z0-9_]*(per_second|gflops|peak|rss_megabytes))\": ?[0-9.e+-]+/\"\\1\":N/g'"

# --- serve: a fixed set of requests
"$binary" serve "$checkpoint" --port 0 --threads 1 >serve.out 2>serve.err &
server_pid=$!
url=""
for _ in $(seq 1 300); do
  url=$(grep -m1 -o 'http://[0-9.:]*/' serve.out 2>/dev/null)
  [ -n "$url" ] && curl -fs "${url}health" >/dev/null 2>&1 && break
  sleep 0.1
done
request() {  # request METHOD PATH [BODY]
  local method=$1 path=$2 body=${3:-}
  if [ -n "$body" ]; then
    run machine curl -s -w '\nstatus %{http_code}\n' -X "$method" -H 'Content-Type: application/json' -d "$body" "${url}${path#/}"
  else
    run machine curl -s -w '\nstatus %{http_code}\n' -X "$method" "${url}${path#/}"
  fi
}
if [ -n "$url" ]; then
  request GET /health
  request GET /v1/models
  request POST /v1/completions '{"prompt": "the ", "max_tokens": 40, "seed": 4}'
  request POST /v1/completions '{"prompt": "the ", "max_tokens": 20, "seed": 4, "temperature": 0.7, "top_k": 4, "top_p": 0.9, "n": 2, "logprobs": 2, "stop": ["."]}'
  # A stream's pieces follow the clock (an event at most every 16 ms): its texts joined, its last finish_reason and [DONE].
  run machine sh -c "curl -sN -X POST -H 'Content-Type: application/json' -d '{\"prompt\": \"the \", \"max_tokens\": 10, \"seed\": 4, \"stream\": true}' ${url}v1/completions | sed -nE 's/.*\"text\":\"([^\"]*)\".*\"finish_reason\":(null|\"[a-z]*\").*/\\1 \\2/p; /\\[DONE\\]/p' | awk '{ if (\$0 == \"data: [DONE]\") done = 1; else { text = text substr(\$0, 1, length(\$0) - length(\$NF) - 1); last = \$NF } } END { print \"text: \" text; print \"finish_reason: \" last; print (done ? \"[DONE]\" : \"no [DONE]\") }'"
  request POST /v1/score '{"text": "we were there", "top": 2, "neurons": [[0, 1], [0, 2, "cell"]], "most_varying": 2}'
  request POST /v1/completions '{"prompt": "the ", "temperature": 0}'
  request POST /v1/completions '{"prompt": "QQ"}'
  request POST /v1/completions '{"prompt": "the ", "frobnicate": 1}'
  request POST /v1/completions '{not json'
  request POST /v1/score '{}'
  request GET /nowhere
  request DELETE /v1/completions
  kill -INT "$server_pid"
  wait "$server_pid"
  echo "=== [machine] serve exit $?" >>"$transcript"
else
  echo "=== [machine] serve did not start" >>"$transcript"
fi
server_pid=""
normalize <serve.out >>"$transcript"

# --- refusals (docs/bad-input.md): each a one-line error and its exit code
train_refusal() { run portable "$binary" train "$@" --threads 1; }
train_refusal missing.txt --out r
train_refusal empty.txt --out r
train_refusal /tmp --out r
train_refusal bad.txt --out r
train_refusal one.txt --out r
train_refusal short.txt --out r
train_refusal corpus.txt --out r --hidden 0
train_refusal corpus.txt --out r --layers -2
train_refusal corpus.txt --out r --hidden 1000000
train_refusal corpus.txt --out r --seq 100000 --batch 100000
train_refusal corpus.txt --out r --dropout 1
train_refusal corpus.txt --out r --dropout-mask per-unit
train_refusal corpus.txt --out r --dropout-mask step --dropout 0
train_refusal corpus.txt --out r --ema 1
train_refusal corpus.txt --out r --lr-decay 0.5
train_refusal corpus.txt --out r --val-chars lots
train_refusal corpus.txt --out r --lr-schedule linear
train_refusal corpus.txt --out r --cell transformer
train_refusal corpus.txt --out t1
train_refusal corpus.txt --out r --steps 0
train_refusal corpus.txt --out r --bogus-option
train_refusal corpus.txt --out r --hidden ten
train_refusal corpus.txt --out r --val-fraction 0 --patience 3
train_refusal --resume nowhere
train_refusal corpus.txt --out r --resume t1
run portable "$binary" train corpus.txt --out r --lr-schedule cosine --minutes 1
run portable "$binary" trian corpus.txt
run portable "$binary"
sample_refusal() { run portable "$binary" sample "$checkpoint" "$@"; }
for option in "--temperature 0" "--temperature -1" "--temperature nan" "--temperature abc" "--top-p 0" "--top-p 1.5" \
  "--top-k -1" "--count 0" "--length -5" "--length ten" "--adapt-lr 0.1"; do
  # shellcheck disable=SC2086
  sample_refusal --prompt "the " $option
done
sample_refusal --prompt "the " --stop ""
sample_refusal --prompt "the QZ!"
sample_refusal --prompt "a" --prompt-file prompt.txt
run portable "$binary" sample missing.safetensors --prompt a
run portable "$binary" sample corpus.txt --prompt a
run portable "$binary" eval "$checkpoint" missing.txt
run portable "$binary" eval "$checkpoint" empty.txt
run portable "$binary" eval "$checkpoint" bad.txt
run portable "$binary" eval "$checkpoint" one.txt --adapt --html x.html
run portable "$binary" info missing.safetensors
run portable "$binary" plot nowhere
run portable "$binary" serve missing.safetensors --port 0
run portable "$binary" serve "$checkpoint" --port 70000

# --- compare, or record
signature="# recorded on: $(cpu_signature)"
if [ "$mode" = "--record" ]; then
  mkdir -p "$(dirname "$recorded")"
  { echo "$signature"; cat "$transcript"; } >"$recorded"
  echo "recorded $(grep -c '^=== ' "$recorded") blocks in $recorded"
  exit 0
fi
[ -f "$recorded" ] || { echo "record_outputs: no recording at $recorded; run with --record on a known-good commit" >&2; exit 1; }
only_portable() {  # keep the [portable] blocks
  awk '/^=== \[/{keep = ($0 ~ /^=== \[portable\]/)} keep'
}
if [ "$(head -n1 "$recorded")" = "$signature" ] && [ "$mode" != --portable-only ]; then
  expected=$(tail -n +2 "$recorded")
  actual=$(cat "$transcript")
  scope="all $(grep -c '^=== ' "$transcript") blocks"
else
  expected=$(tail -n +2 "$recorded" | only_portable)
  actual=$(only_portable <"$transcript")
  if [ "$mode" = --portable-only ]; then
    echo "record_outputs: SKIPPED the [machine] blocks, as asked (--portable-only): this build's floats round otherwise" >&2
  else
    echo "record_outputs: SKIPPED the [machine] blocks: recorded on '$(head -n1 "$recorded" | sed 's/# recorded on: //')'," \
      "this is '$(cpu_signature)'; re-record with --record on a known-good commit to compare them" >&2
  fi
  scope="the $(grep -c '^=== \[portable\]' "$transcript") portable blocks"
fi
if diff -u <(echo "$expected") <(echo "$actual") >"$scratch/diff"; then
  echo "record_outputs: $scope match the recording"
  exit 0
fi
cat "$scratch/diff"
echo "record_outputs: the outputs differ from $recorded (above: - recorded, + now)" >&2
exit 1
