#!/usr/bin/env bash
# Fuzzes the checkpoint loader, the text pipeline, the server's request bodies and its connections' bytes (pipelined HTTP requests, headers, keys) with libFuzzer (clang, ASan, UBSan) for SECONDS each.
# Usage: scripts/fuzz.sh [SECONDS]   (default 60). Crashes are left in build-fuzz/crashes; exit 1 if any, or if a
# fuzzer reports no runs.
set -euo pipefail
case "${1:-}" in
  -h|--help) sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *)
    if [[ ! "$1" =~ ^[0-9]+$ ]] || [ "$((10#$1))" -eq 0 ]; then
      echo "fuzz.sh: SECONDS must be a whole number above 0, not '$1'; see scripts/fuzz.sh --help" >&2
      exit 2
    fi ;;
esac
[ $# -le 1 ] || { echo "fuzz.sh: one argument at most (SECONDS); see scripts/fuzz.sh --help" >&2; exit 2; }
cd "$(dirname "$0")/.."

seconds="${1:-60}"
build_dir=build-fuzz
export CC="${CC:-clang-14}" CXX="${CXX:-clang++-14}"
if [ -f "$build_dir/CMakeCache.txt" ] && ! grep -q '^CMAKE_CXX_COMPILER:.*clang' "$build_dir/CMakeCache.txt"; then
  echo "fuzz: $build_dir was configured with another compiler; remove it and run again" >&2
  exit 2
fi
# -O1: quick to build, and libFuzzer's throughput is as good as at -O3 for this code.
scripts/setup.sh --fuzz --build-dir "$build_dir" -- -DCHARLM_FUZZ=ON -DCHARLM_TESTS=OFF -DCHARLM_BENCH=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG"

# Seeds are made fresh by the binary just built, so that they follow the current checkpoint format
# (nothing binary is committed): a real checkpoint with and without resume state, and truncations.
seeds="$(mktemp -d)"
trap 'rm -rf "$seeds"' EXIT
mkdir -p "$seeds/checkpoint" "$seeds/text" "$build_dir/crashes"
printf 'In the beginning was the word, and the word was with God.\nÀ bientôt — 你好, κόσμε! 🙂\n%.0s' {1..8} > "$seeds/corpus.txt"
# A model as small as charlm trains, so that most of each seed is header, where the parsing happens.
"$build_dir/charlm" train "$seeds/corpus.txt" --out "$seeds/run" --layers 1 --hidden 2 --embed 2 --seq 8 --batch 2 \
  --steps 4 --eval-every 2 --threads 1 >/dev/null 2>&1
for name in last best; do
  checkpoint="$seeds/run/$name.safetensors"
  cp "$checkpoint" "$seeds/checkpoint/$name"
  size=$(stat -c %s "$checkpoint")
  header_end=$((8 + $(od -An -t u8 -N 8 "$checkpoint" | tr -d ' ')))
  for cut in 7 8 $((header_end - 1)) "$header_end" $((size / 2)) $((size - 1)); do
    head -c "$cut" "$checkpoint" > "$seeds/checkpoint/$name-first-$cut"
  done
  # The fuzz target's second reading: "JSON header, NUL, tensor data", the header length computed for it.
  # (head before tail: a writer that outlives its reader dies of SIGPIPE, which pipefail makes the script's exit 141.)
  { head -c "$header_end" "$checkpoint" | tail -c +9; printf '\0'; tail -c +$((header_end + 1)) "$checkpoint"; } \
    > "$seeds/checkpoint/$name-unprefixed"
  # Without the generator's state (most of the header's bytes), mutations land on the fields that matter more often.
  LC_ALL=C sed 's/\\"rng_state\\":\\"[0-9 ]*\\"/\\"rng_state\\":\\"\\"/' "$seeds/checkpoint/$name-unprefixed" \
    > "$seeds/checkpoint/$name-unprefixed-short"
done
# The metadata's JSON objects on their own (the fuzz target reads any '{' input as a config and as options too).
python3 - "$seeds/run/last.safetensors" "$seeds/checkpoint" <<'PYTHON'
import json, struct, sys
data = open(sys.argv[1], "rb").read()
metadata = json.loads(data[8:8 + struct.unpack("<Q", data[:8])[0]])["__metadata__"]
training = json.loads(metadata["training"])
training["rng_state"] = ""
seeds = {"config": json.loads(metadata["config"]), "options": training["options"], "training": training}
for name, value in seeds.items():
    open(f"{sys.argv[2]}/json-{name}", "w").write(json.dumps(value))
PYTHON
# Inputs that once failed (out-of-range floats read as integers: undefined behaviour; a 300-byte file
# that claimed a 2-billion-parameter model and was allocated before its tensors were looked for).
printf '%s' '{"cell":"lstm","vocab_size":2,"embed_size":1,"hidden_size":1,"layers":1e10}' > "$seeds/checkpoint/found-config-float"
printf '%s' '{"corpus":"c","validation_file":null,"run_directory":"r","model":{"cell":"lstm","vocab_size":2,"embed_size":1,"hidden_size":1,"layers":1},"seq_length":1e10,"batch_size":1,"learning_rate":0.1,"clip":1,"validation_fraction":0,"steps":1,"minutes":0,"eval_every":1,"seed":1}' \
  > "$seeds/checkpoint/found-options-float"
printf '%s' '{"__metadata__":{"format":"charlm-checkpoint-1","config":"{\"cell\":\"lstm\",\"vocab_size\":2,\"embed_size\":1,\"hidden_size\":1,\"layers\":1}","vocab":"[97,98]","training":"{\"step\":1e300,\"best_validation_loss\":null,\"data_position\":0,\"rng_state\":\"\",\"options\":{}}"}}' \
  > "$seeds/checkpoint/found-training-float"
printf '%s' '{"__metadata__":{"format":"charlm-checkpoint-1","config":"{\"cell\":\"lstm\",\"vocab_size\":2,\"embed_size\":16000,\"hidden_size\":16384,\"layers\":1}","vocab":"[97,98]","training":"{\"step\":0,\"best_validation_loss\":null,\"data_position\":0,\"rng_state\":\"\",\"options\":{}}"}}' \
  > "$seeds/checkpoint/found-huge-config"
cp "$seeds/corpus.txt" "$seeds/text/corpus"
printf '\xef\xbb\xbfwith a byte order mark' > "$seeds/text/bom"
printf 'a\xc3(invalid)' > "$seeds/text/invalid"
printf '\xf4\x8f\xbf\xbf\xed\x9f\xbf\x00\x7f' > "$seeds/text/edges"
# Words of the checkpoint format, so that mutations reach the values behind the JSON syntax.
cat > "$seeds/checkpoint.dict" <<'WORDS'
"__metadata__"
"dtype"
"F32"
"F16"
"shape"
"data_offsets"
"format"
"config"
"vocab"
"training"
"lstm"
"gru"
"rnn"
"vocab_size"
"embed_size"
"hidden_size"
"layers"
"step"
"data_position"
"optimizer_steps"
"best_validation_loss"
"rng_state"
"options"
"state.hidden_l0"
"state.cell_l0"
"optimizer.exp_avg."
"optimizer.exp_avg_sq."
"rnn.weight_ih_l1"
"\\\""
"null"
"true"
"e10"
"e19"
"e300"
"E-5"
".5"
"-"
"1e300"
"-1"
"-1.5"
"0.5"
"16384"
"2147483648"
"4294967296"
"18446744073709551615"
"\x00\x00\xc0\x7f"
"\x00\x00\x80\x7f"
WORDS

export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
status=0
# Request bodies for charlm serve: good ones to mutate, and the field names and values that matter.
mkdir -p "$seeds/request"
printf '%s' '{"prompt": "abc", "max_tokens": 20, "temperature": 0.7, "top_p": 0.9, "top_k": 5, "seed": 7, "stop": ["\n", "x"], "n": 2, "stream": true, "logprobs": 3}' > "$seeds/request/completion"
printf '%s' '{"prompt": ["a é"], "skip_unknown": true, "model": "m", "echo": false, "best_of": 1, "logit_bias": {}}' > "$seeds/request/openai"
printf '%s' '{"prompt": "a🙂 é", "echo": true, "logprobs": 2, "max_tokens": 0, "model": "shakespeare"}' > "$seeds/request/echo"
printf '%s' '{"prompt": "ab", "echo": true, "stream": true, "max_tokens": 3, "model": null}' > "$seeds/request/echo-stream"
printf '%s' '{"text": "abc def", "top": 3, "neurons": [[0, 1], [1, 7, "cell"]], "most_varying": 4}' > "$seeds/request/score"
cat > "$seeds/request.dict" <<'WORDS'
"prompt"
"max_tokens"
"temperature"
"top_p"
"top_k"
"seed"
"stop"
"stream"
"logprobs"
"skip_unknown"
"text"
"top"
"neurons"
"most_varying"
"hidden"
"cell"
"echo"
"model"
"best_of"
"frequency_penalty"
"logit_bias"
"suffix"
"null"
"true"
"1e300"
"-1"
"0.5"
"18446744073709551615"
"\\u0000"
"\\ud83d\\ude42"
WORDS
# What a client sends down a connection (fuzz_http): the first byte sets how many bytes each read brings; then pipelined
# requests with keys, chunked bodies, 100-continue and HTTP/1.0.
mkdir -p "$seeds/http"
printf '%s' $'\x07GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/models HTTP/1.1\r\nAuthorization: Bearer fuzz-key\r\n\r\nGET /metrics?x=1 HTTP/1.1\r\nAuthorization: bearer other-key\r\n\r\n' > "$seeds/http/pipelined"
printf '%s' $'\xffPOST /v1/completions HTTP/1.1\r\nAuthorization: Bearer fuzz-key\r\nContent-Length: 17\r\nExpect: 100-continue\r\n\r\n{"prompt": "ab"}\nPOST /v1/score HTTP/1.1\r\nTransfer-Encoding: chunked\r\nAuthorization: Bearer wrong\r\n\r\n4\r\n{"te\r\n0\r\n\r\n' > "$seeds/http/bodies"
printf '%s' $'\x01GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nDELETE /v1/score HTTP/1.0\r\nAuthorization: Bearer \r\n\r\nHEAD /health HTTP/1.1\r\n\r\n' > "$seeds/http/old"
cat > "$seeds/http.dict" <<'WORDS'
"\x0d\x0a"
"\x0d\x0a\x0d\x0a"
"HTTP/1.1"
"HTTP/1.0"
"GET "
"POST "
"HEAD "
"OPTIONS "
"/v1/completions"
"/v1/score"
"/v1/models"
"/metrics"
"/health"
"Authorization: Bearer fuzz-key"
"Authorization: "
"Bearer "
"Content-Length: "
"Transfer-Encoding: chunked"
"Expect: 100-continue"
"Connection: close"
"Connection: keep-alive"
"0\x0d\x0a\x0d\x0a"
"18446744073709551616"
WORDS
for target in checkpoint text request http; do
  case "$target" in
    checkpoint) max_length=65536 dictionary=(-dict="$seeds/checkpoint.dict") ;;
    text) max_length=4096 dictionary=() ;;
    request) max_length=4096 dictionary=(-dict="$seeds/request.dict") ;;
    http) max_length=8192 dictionary=(-dict="$seeds/http.dict") ;;
  esac
  corpus="$build_dir/corpus/$target"  # kept between runs, so that later runs start where this one stopped
  mkdir -p "$corpus"
  log="$build_dir/fuzz_$target.log"
  echo "fuzz: fuzz_$target for $seconds s (log: $log)" >&2
  if "$build_dir/fuzz_$target" -max_total_time="$seconds" -rss_limit_mb=2048 -max_len="$max_length" -timeout=30 \
       "${dictionary[@]}" -print_final_stats=1 -artifact_prefix="$build_dir/crashes/$target-" "$corpus" "$seeds/$target" > "$log" 2>&1; then
    runs=$(grep -o 'Done [0-9]* runs' "$log" | tail -1 || true)
    if [ -n "$runs" ] && [ "${runs//[!0-9]/}" -gt 0 ]; then
      echo "fuzz_$target: $runs in $seconds s, no crash"
    else
      # An exit of 0 with no runs reported is a fuzzer that never fuzzed (a bad flag, an empty build): no pass.
      status=1
      echo "fuzz_$target: FAILED: libFuzzer reported no 'Done N runs' line, or none run; the log ends:" >&2
      tail -5 "$log" >&2
    fi
  else
    status=1
    echo "fuzz_$target: FAILED; the report:" >&2
    grep -E 'ERROR|runtime error| in charlm::| in LLVMFuzzerTestOneInput|Test unit written|SUMMARY' "$log" | cut -c 1-240 | head -30 >&2 \
      || tail -5 "$log" >&2
  fi
done
if [ "$status" -ne 0 ]; then
  echo "fuzz: crash inputs are in $build_dir/crashes; minimize one with: $build_dir/fuzz_TARGET -minimize_crash=1 -runs=10000 FILE" >&2
fi
exit "$status"
