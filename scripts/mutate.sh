#!/usr/bin/env bash
# Breaks the code on purpose, one line at a time, and checks that the test suite catches every break.
# Usage: scripts/mutate.sh [NUMBER...]   (default: every mutation below; NUMBERs pick some, as the table numbers them)
#        scripts/mutate.sh --list        (checks that each original text occurs once and lists the mutations; builds nothing)
#
# Each mutation is applied in a scratch copy of the tree ($CHARLM_MUTATE_DIR, default /tmp/charlm-mutate:
# tree/ is refreshed from this checkout's files, build/ is kept between runs and between mutations, with
# ccache) and run against ctest --stop-on-failure: first the tests of its area, with only the test program
# that holds them rebuilt, then, where those caught nothing, every other test, with everything rebuilt; so
# a caught break costs little. Its file is put back before the next one. A catch counts only where the
# catching test passes again without the break (checked at the end, on the restored tree).
# Prints a table mutation -> first failing test, or NOT CAUGHT; exits 1 if any break is not caught, 2 if
# the script itself is wrong (an original text that does not occur exactly once, a break that does not
# build). Takes a while (a build and some tests per mutation): run by hand, not in CI. docs/testing.md
# keeps its last output.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch="${CHARLM_MUTATE_DIR:-/tmp/charlm-mutate}"
tree="$scratch/tree" build="$scratch/build" logs="$scratch/logs"
jobs="${CHARLM_MUTATE_JOBS:-2}"

# The mutations, one block each:
#   @ FILE | TESTS FIRST (a ctest -R regex) | what the break is
#   - the original text (must occur exactly once in FILE)
#   + its replacement
mutations="$(cat <<'EOF'
@ src/nn/cells/lstm.hpp | RecurrentLayerTest | LSTM forward: the forget gate ignored, c' = c + i g
- u.c() = f * u.c_prev() + i * g;
+ u.c() = u.c_prev() + i * g;

@ src/nn/cells/lstm.hpp | RecurrentLayerTest | LSTM backward: the output gate's gradient without the logistic's derivative
- u.gate(3) = dh * tanh_c * o * (1 - o);
+ u.gate(3) = dh * tanh_c * o;

@ src/nn/cells/gru.hpp | RecurrentLayerTest | GRU backward: dL/dh passed back whole, not through z
- u.dh_next() = dh * z;
+ u.dh_next() = dh;

@ src/nn/cells/rnn.hpp | RecurrentLayerTest | Elman backward: tanh' taken as 1 - h, not 1 - h^2
- u.gate(0) = (u.dh_output() + u.dh_next()) * (1 - u.h().square());
+ u.gate(0) = (u.dh_output() + u.dh_next()) * (1 - u.h());

@ src/nn/recurrent_layer.cpp | RecurrentLayerTest | engine: the carried state is the window's first step, not its last
- hidden_state = w.hidden.bottomRows(B);
+ hidden_state = w.hidden.topRows(B);

@ src/nn/recurrent_layer.cpp | RecurrentLayerTest | engine: backpropagation through time stops one step early
- if (t > 0)
+ if (t > 1)

@ src/nn/recurrent_layer.cpp | RecurrentLayerTest | engine: b_hh left out of the forward pass
- w.bias = weights.bias_ih + weights.bias_hh;
+ w.bias = weights.bias_ih;

@ src/nn/gemm.cpp | ^Gemm\. | gemm: the packed product's blocks drop the rows left over by an uneven split
- const Eigen::Index block_rows = rows / blocks + (block < rows % blocks ? 1 : 0);
+ const Eigen::Index block_rows = rows / blocks;

@ src/nn/gemm.cpp | ^Gemm\. | gemm: Eigen's product overwrites where it should accumulate (beta 1)
- else c.noalias() += left * right;
+ else c.noalias() = left * right;

@ src/nn/input_projection.cpp | ^LayerInput\.|^Model\.Gradients | input projection: a token's gradients overwrite one another instead of summing
- destination.row(tokens[static_cast<std::size_t>(row)]).segment(first, columns) += source.row(row).segment(first, columns);
+ destination.row(tokens[static_cast<std::size_t>(row)]).segment(first, columns) = source.row(row).segment(first, columns);

@ src/nn/input_projection.cpp | ^LayerInput\.|^Model\.Gradients | input projection: each step looks up the first step's rows of the table
- rows.row(row) = cache.table.row(input.tokens[static_cast<std::size_t>(first + row)]);
+ rows.row(row) = cache.table.row(input.tokens[static_cast<std::size_t>(row)]);

@ src/nn/optim.cpp | ^Optim\. | Adam: the second moment decays by beta1, not beta2
- v = beta2 * v + (1 - beta2) * g.square();
+ v = beta1 * v + (1 - beta1) * g.square();

@ src/nn/optim.cpp | ^Optim\. | Adam: no bias correction of the first moment
- const auto step_size = static_cast<float>(learning_rate / correction1);
+ const auto step_size = static_cast<float>(learning_rate);

@ src/nn/optim.cpp | ^Optim\. | Adam: no bias correction of the second moment
- w -= step_size * m / (v.sqrt() / root_correction2 + epsilon);
+ w -= step_size * m / (v.sqrt() + epsilon);

@ src/nn/optim.cpp | ^Optim\. | clipping: gradients scaled by max / norm^2, not max / norm
- const float scale = static_cast<float>(max_norm / (norm + 1e-6));
+ const float scale = static_cast<float>(max_norm / (squared + 1e-6));

@ src/nn/dropout.cpp | ^Dropout\. | dropout: what is kept is not scaled by 1 / (1 - p)
- const Scalar scale = static_cast<Scalar>(1 / (1 - rate));
+ const Scalar scale = static_cast<Scalar>(1);

@ src/nn/model.cpp | ^Model\.Gradients | dropout: backward lets the gradient through the dropped outputs
- if (w.dropping_outputs) apply_dropout_mask_in_place(layer.d_output, layer.output_mask);
+ if (false) apply_dropout_mask_in_place(layer.d_output, layer.output_mask);

@ src/nn/sample.cpp | ^Sample\. | sampling: the temperature ignored
- for (std::size_t i = 0; i < V; ++i) weights_[i] = static_cast<float>(std::exp((logits[i] - max_logit) * inverse_temperature));
+ for (std::size_t i = 0; i < V; ++i) weights_[i] = static_cast<float>(std::exp(logits[i] - max_logit));

@ src/nn/sample.cpp | ^Sample\. | top-k: keeps one character more than k
- if (options.top_k > 0) kept = std::min(kept, static_cast<std::size_t>(options.top_k));
+ if (options.top_k > 0) kept = std::min(kept, static_cast<std::size_t>(options.top_k) + 1);

@ src/nn/sample.cpp | ^Sample\. | top-p: drops the character that reaches p exactly
- if (running >= options.top_p * total) {
+ if (running > options.top_p * total) {

@ src/nn/sample.cpp | ^Sample\. | greedy: takes the least likely character
- row.maxCoeff(&best);
+ row.minCoeff(&best);

@ src/io/checkpoint.cpp | ^Checkpoint\. | checkpoint: the second moments load from the first moments' tensors
- take(optimizer_name("exp_avg_sq", parameters[i].name), optimizer.second_moments()[i], parameters[i].shape);
+ take(optimizer_name("exp_avg", parameters[i].name), optimizer.second_moments()[i], parameters[i].shape);

@ src/io/checkpoint.cpp | ^Checkpoint\. | checkpoint: the optimizer's step count is not restored
- optimizer.set_step_count(count("optimizer_steps"));
+ optimizer.set_step_count(0);

@ src/train/loop.cpp | ^Train\.Resum | resume: the data cursor starts again at the beginning
- stream_.set_position(session.state.data_position % stream_.windows_per_pass());
+ stream_.set_position(0 * session.state.data_position % stream_.windows_per_pass());

@ src/train/start.cpp | ^Train\.Resum | resume: the random generator restarts from the run's seed
- rng_from_string(checkpoint->training.rng_state)};
+ std::mt19937_64(options.seed)};

@ src/serve/decoder.cpp | ^Decode\. | decoder: a staying slot keeps the hidden state of its new row, not its own
- for (std::size_t l = 0; l < next.hidden.size(); ++l) next.hidden[l].row(r) = state.hidden[l].row(from);
+ for (std::size_t l = 0; l < next.hidden.size(); ++l) next.hidden[l].row(r) = state.hidden[l].row(std::min(from, r));

@ src/serve/decoder.cpp | ^Decode\. | decoder: a request that exactly fills the slots and the queue is turned away
- if (slots_busy_ + slots_queued_ + wanted > options_.slots + options_.queued)
+ if (slots_busy_ + slots_queued_ + wanted >= options_.slots + options_.queued)

@ src/serve/api.cpp | ^Server\.EveryBadRequest | request check: top_p 0 accepted
- if (!(request.top_p > 0 && request.top_p <= 1)) refuse("top_p", "top_p must be above 0 and at most 1");
+ if (!(request.top_p >= 0 && request.top_p <= 1)) refuse("top_p", "top_p must be above 0 and at most 1");

@ src/serve/api.cpp | ^Server\.EveryBadRequest | request check: a completion's unknown fields accepted
- fields.only_default("logit_bias", json::object());
+ fields.only_default("logit_bias", json::object()); return call;

@ src/serve/api.cpp | ^Server\.EveryBadRequest | request check: a temperature above 100 accepted
- if (!(request.temperature > 0) || request.temperature > 100)
+ if (!(request.temperature > 0))
EOF
)"

files=() firsts=() descriptions=() originals=() replacements=()
while IFS= read -r line; do
  case "$line" in
    "@ "*)  # the regex may hold '|' itself: it is what lies between the first " | " and the last
      rest="${line#@ }" file="${rest%% | *}" rest="${rest#* | }"
      files+=("$file") firsts+=("${rest% | *}") descriptions+=("${rest##* | }") ;;
    "- "*) originals+=("${line#- }") ;;
    "+ "*) replacements+=("${line#+ }") ;;
    "") ;;
    *) echo "mutate: cannot read this line of the mutations: $line" >&2; exit 2 ;;
  esac
done <<< "$mutations"
count=${#files[@]}
if [ "${#originals[@]}" -ne "$count" ] || [ "${#replacements[@]}" -ne "$count" ]; then
  echo "mutate: each mutation needs one '-' and one '+' line" >&2
  exit 2
fi

list_only=0
if [ "${1:-}" = "--list" ]; then
  list_only=1
  shift
fi
chosen=("$@")
[ ${#chosen[@]} -gt 0 ] || mapfile -t chosen < <(seq 1 "$count")

# occurrences FILE TEXT: how many times TEXT occurs in FILE, taken literally.
occurrences() { TEXT="$2" perl -0ne '$n = () = /\Q$ENV{TEXT}\E/g; print $n' "$1"; }

# Each original must occur exactly once in this checkout's file, or the script has gone stale.
stale=0
for number in "${chosen[@]}"; do
  i=$((number - 1))
  if [ "$i" -lt 0 ] || [ "$i" -ge "$count" ]; then echo "mutate: no mutation $number (1-$count)" >&2; exit 2; fi
  found="$(occurrences "${files[$i]}" "${originals[$i]}")"
  if [ "$found" != 1 ]; then
    echo "mutate: $number: '${originals[$i]}' occurs $found times in ${files[$i]}, not once: update the mutation" >&2
    stale=1
  fi
done
[ "$stale" = 0 ] || exit 2
if [ "$list_only" = 1 ]; then
  for number in "${chosen[@]}"; do
    i=$((number - 1))
    printf '%-3s %s: %s\n    first: ctest -R '"'"'%s'"'"'\n    - %s\n    + %s\n' "$number" "${files[$i]}" "${descriptions[$i]}" \
      "${firsts[$i]}" "${originals[$i]}" "${replacements[$i]}"
  done
  exit 0
fi

# The scratch tree: this checkout's files as they are now (tracked, and untracked ones git does not ignore),
# with their times, so that the kept build recompiles only what differs. $scratch/unbuilt names the files
# that were mutated since the build last succeeded: a run cut short may have left a mutant's objects, which
# the checkout's older times would not replace, so they are touched.
mkdir -p "$tree" "$build" "$logs"
rm -rf "$tree"
mkdir -p "$tree"
git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf - | tar -xf - -C "$tree"
if [ -f "$scratch/unbuilt" ]; then
  while IFS= read -r name; do [ -f "$tree/$name" ] && touch "$tree/$name"; done < "$scratch/unbuilt"
fi

restore_file=""
restore() { if [ -n "$restore_file" ]; then cp "$scratch/original" "$tree/$restore_file"; restore_file=""; fi; }
trap restore EXIT

# build_tree LOG [TARGET...]: configure (once) and build the scratch tree, or only those targets; 0 on success.
# Only a whole build leaves no mutant's objects behind but the one applied now.
build_tree() {
  local log="$1" targets=()
  shift
  [ $# -eq 0 ] || targets=(--target "$@")
  { [ -f "$build/CMakeCache.txt" ] || cmake -S "$tree" -B "$build" -DCHARLM_TESTS=ON -DCMAKE_CXX_COMPILER_LAUNCHER=ccache; } >"$log" 2>&1 &&
    cmake --build "$build" -j "$jobs" "${targets[@]}" >>"$log" 2>&1 || return 1
  if [ ${#targets[@]} -eq 0 ]; then
    if [ -n "$restore_file" ]; then echo "$restore_file"; fi > "$scratch/unbuilt"
  fi
}
# area_targets REGEX: the test program that holds an area's tests: the server's, or the unit tests'.
area_targets() { case "$1" in *Server*) echo charlm_server_tests ;; *) echo charlm_tests ;; esac; }

echo "mutate: building the scratch tree in $build"
if ! build_tree "$logs/baseline-build.log"; then
  echo "mutate: the unmutated tree does not build; see $logs/baseline-build.log" >&2
  exit 2
fi

# first_failure LOG: the first test that ctest's summary lists as failed, or nothing.
first_failure() {
  sed -n '/^The following tests FAILED:/,/^$/s/^[[:space:]]*[0-9]* - \(.*\) ([^)]*)$/\1/p' "$1" | head -1
}

caught_by=() seconds=()
for number in "${chosen[@]}"; do
  i=$((number - 1))
  file="${files[$i]}"
  start=$SECONDS
  echo "mutate: $number/$count: ${descriptions[$i]} ($file)"
  cp "$tree/$file" "$scratch/original"
  restore_file="$file"
  echo "$file" >> "$scratch/unbuilt"
  FROM="${originals[$i]}" TO="${replacements[$i]}" perl -0pi -e 's/\Q$ENV{FROM}\E/$ENV{TO}/' "$tree/$file"
  log="$logs/mutation-$number"
  if ! build_tree "$log-build.log" "$(area_targets "${firsts[$i]}")"; then
    restore
    echo "mutate: mutation $number does not build; see $log-build.log" >&2
    exit 2
  fi
  # The area's tests first, then the rest; --timeout bounds a test that a break makes hang. A program that
  # the first build left as it was runs the unmutated code, which can miss a break but never invent one.
  ctest --test-dir "$build" -R "${firsts[$i]}" --stop-on-failure -j "$jobs" --timeout 600 >"$log-test.log" 2>&1 || true
  failed="$(first_failure "$log-test.log")"
  if [ -z "$failed" ]; then
    if ! build_tree "$log-build-all.log"; then
      restore
      echo "mutate: mutation $number does not build; see $log-build-all.log" >&2
      exit 2
    fi
    ctest --test-dir "$build" -E "${firsts[$i]}" --stop-on-failure -j "$jobs" --timeout 600 >"$log-rest.log" 2>&1 || true
    failed="$(first_failure "$log-rest.log")"
  fi
  restore
  caught_by[$i]="$failed"
  seconds[$i]=$((SECONDS - start))
  shown="${failed%%  # GetParam*}"  # a parameterized test's name ends with GoogleTest's note of its parameter
  echo "mutate: $number: ${shown:-NOT CAUGHT} (${seconds[$i]} s)"
done

# A catch counts only where the catching test passes without the break: rebuild the restored tree and run them.
echo "mutate: checking that each catching test passes on the unmutated tree"
build_tree "$logs/restored-build.log" || { echo "mutate: the restored tree does not build; see $logs/restored-build.log" >&2; exit 2; }
catchers=""
for number in "${chosen[@]}"; do
  name="${caught_by[$((number - 1))]}"
  [ -n "$name" ] || continue
  catchers="${catchers:+$catchers|}^$(printf '%s' "$name" | sed 's/[][\.*^$+?(){}|/]/\\&/g')\$"
done
passing_unmutated=""
if [ -n "$catchers" ]; then
  ctest --test-dir "$build" -R "$catchers" -j "$jobs" --timeout 600 >"$logs/catchers.log" 2>&1 || true
  # ctest's progress lines: " 3/18 Test  #66: NAME .......   Passed    12.80 sec"
  passing_unmutated="$(sed -n 's/^ *[0-9]*\/[0-9]* Test *#[0-9]*: \(.*[^ .]\) \.*  *Passed .*$/\1/p' "$logs/catchers.log")"
fi

echo
printf '%-3s %-98s %s\n' "#" "mutation (file: what breaks)" "caught by"
not_caught=0
for number in "${chosen[@]}"; do
  i=$((number - 1))
  verdict="${caught_by[$i]}"
  if [ -z "$verdict" ]; then
    verdict="NOT CAUGHT"
  elif ! printf '%s\n' "$passing_unmutated" | grep -qxF "$verdict"; then
    verdict="NOT CAUGHT ($verdict did not pass without the break either)"
  fi
  [[ "$verdict" == "NOT CAUGHT"* ]] && not_caught=$((not_caught + 1))
  printf '%-3s %-98s %s\n' "$number" "${files[$i]#src/}: ${descriptions[$i]}" "${verdict%%  # GetParam*}"
done
echo
if [ "$not_caught" -gt 0 ]; then
  echo "mutate: $not_caught of ${#chosen[@]} breaks NOT CAUGHT (logs in $logs)" >&2
  exit 1
fi
echo "mutate: all ${#chosen[@]} breaks caught (logs in $logs)"
