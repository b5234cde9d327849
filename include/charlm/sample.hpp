// Generation: a prompt primes the recurrent state, then characters are drawn one at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "charlm/model.hpp"
#include "charlm/text.hpp"
#include "charlm/uniform_draw.hpp"

namespace charlm {

struct SampleOptions {
    double temperature = 1.0;  // > 0; logits are divided by it
    int top_k = 0;             // keep the k most likely characters; 0 keeps all
    double top_p = 1.0;        // keep the smallest set whose probability reaches p; 1 keeps all
    bool greedy = false;       // always the most likely character
    // End a sample as soon as it ends with one of these texts (kept), the first to complete; none: never.
    std::vector<std::u32string> stops;
};

// Throws UsageError for a temperature, top-k or top-p out of range.
void validate(const SampleOptions& options);
// The characters of `text` that the vocabulary lacks, each named once (describe_code_point) in the
// order they first come, joined with ", "; empty where it has them all. The list stops growing once it
// reaches `most_bytes`: a request full of strange characters gets a message, not a page.
std::string unknown_characters(std::u32string_view text, const Vocab& vocab, std::size_t most_bytes = std::string::npos);
// Throws Error listing the prompt's characters that are not in the vocabulary.
void check_prompt(const Vocab& vocab, const std::u32string& prompt);
// The ids that prime the state for `prompt`, whose characters the vocabulary must hold: an empty prompt
// starts as if after a line break where the text has one, else after the first character.
std::vector<TokenId> priming_ids(const Vocab& vocab, const std::u32string& prompt);

// Which drawing options the user set, whatever their values: --greedy ignores every one of them.
struct ExplicitSampleOptions {
    bool temperature = false;
    bool top_k = false;
    bool top_p = false;
    std::optional<std::uint64_t> seed = std::nullopt;  // the seed given, which draws nothing for --greedy either
};

// A sentence for each thing the user asked that sampling will not do, for the CLI to warn with:
// drawing options that --greedy ignores, and a stop text with characters the model never produces
// (it can never match). Empty when all is as asked.
std::vector<std::string> sample_warnings(const SampleOptions& options, const ExplicitSampleOptions& given, const Vocab& vocab);

// Draws ids from rows of logits under SampleOptions, and remembers what the last draw chose from, so
// that it can be checked against the distribution it should follow. Its buffers are sized on the
// first draw: drawing allocates nothing after that.
class TokenDrawer {
public:
    // The id that `uniform` (in [0, 1)) picks: temperature, then top-k, then top-p over what top-k
    // kept, then by inverse CDF over the kept ids' renormalised weights, most likely first (ties by id)
    // where anything was cut, else in id order (no sort). Greedy takes the most likely id and ignores
    // `uniform`.
    TokenId draw(std::span<const float> logits, const SampleOptions& options, double uniform);
    // The distribution the last draw() chose from: one probability per id, zero for those cut off.
    std::vector<double> distribution() const;

private:
    std::size_t size_ = 0;        // the vocabulary's, as the last draw's logits had it
    std::vector<float> weights_;  // per id: exp((logit - max) / temperature), unnormalised
    std::vector<TokenId> order_;  // ids, most likely first where anything is cut
    std::size_t kept_ = 0;        // the first kept_ of order_ may be drawn
    double total_ = 0;            // their weights' sum
    TokenId greedy_choice_ = -1;  // the last draw's id where it was greedy, else -1
};

class Sampler {
public:
    // Freezes the model's weights (Model::set_weights_frozen) until the sampler is destroyed.
    Sampler(Model<float>& model, const Vocab& vocab, std::uint64_t seed);
    Sampler(const Sampler&) = delete;
    Sampler& operator=(const Sampler&) = delete;

    // Feeds the prompt through the model; an empty prompt starts from the zero state and a newline.
    // Throws Error listing the prompt's characters that are not in the vocabulary.
    void prime(const std::u32string& prompt);
    // Draws the next character and feeds it back in.
    char32_t next(const SampleOptions& options);
    // What the last next() drew from.
    const TokenDrawer& last_draw() const { return drawer_; }

private:
    void feed(TokenId id);

    Model<float>& model_;
    WeightsFreeze<float> freeze_;
    const Vocab& vocab_;
    std::mt19937_64 rng_;
    ModelState<float> state_;
    TokenDrawer drawer_;
    TokenId input_ = 0;
};

// Whether a stream of characters has just ended with one of a few stop texts, keeping only as many
// characters as the longest has: a sample can run for as long as it likes in constant memory. charlm
// sample ends at its one --stop; a completion also holds back what may still turn out to be a stop.
class StopDetector {
public:
    explicit StopDetector(std::u32string stop) : StopDetector(std::vector<std::u32string>{std::move(stop)}) {}
    explicit StopDetector(std::vector<std::u32string> stops);  // an empty one never matches
    // Takes the next character; returns the length of the first stop text (in the order given) that
    // the characters so far end with, else 0.
    std::size_t push(char32_t character);
    // How many of the last characters begin some stop text without completing it: a caller that shows
    // the text as it comes holds these back until they can no longer turn out to be a stop.
    std::size_t undecided() const;

private:
    bool last_characters_are(const std::u32string& text, std::size_t length) const;  // the last `length` are text's first `length`

    std::vector<std::u32string> stops_;
    std::u32string tail_;    // the last tail_.size() characters, a ring whose oldest is at next_slot_
    std::size_t next_slot_ = 0;
    std::size_t seen_ = 0;   // characters pushed, up to tail_.size()
};

// Primes with `prompt`, then calls `emit` for each of up to `length` generated characters as it is
// drawn (fewer when options.stop ends the sample). Keeps none of the text beyond the stop text's
// length: a caller that wants the whole sample collects it in `emit`. Returns how many it generated.
std::size_t generate(Model<float>& model, const Vocab& vocab, const std::u32string& prompt, std::size_t length,
                     const SampleOptions& options, std::uint64_t seed, const std::function<void(char32_t)>& emit);

}  // namespace charlm
