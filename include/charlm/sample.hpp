// Generation: a prompt primes the recurrent state, then characters are drawn one at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "charlm/model.hpp"
#include "charlm/text.hpp"

namespace charlm {

struct SampleOptions {
    double temperature = 1.0;  // > 0; logits are divided by it
    int top_k = 0;             // keep the k most likely characters; 0 keeps all
    double top_p = 1.0;        // keep the smallest set whose probability reaches p; 1 keeps all
    bool greedy = false;       // always the most likely character
    std::u32string stop;       // end a sample as soon as it ends with this text (kept); empty never
};

void validate(const SampleOptions& options);  // throws Error for a temperature or top-p out of range
// Throws Error listing the prompt's characters that are not in the vocabulary.
void check_prompt(const Vocab& vocab, const std::u32string& prompt);

// Which drawing options the user set, whatever their values: --greedy ignores every one of them.
struct ExplicitSampleOptions {
    bool temperature = false;
    bool top_k = false;
    bool top_p = false;
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
    double last_uniform() const { return uniform_; }

private:
    std::size_t size_ = 0;        // the vocabulary's, as the last draw's logits had it
    std::vector<float> weights_;  // per id: exp((logit - max) / temperature), unnormalised
    std::vector<TokenId> order_;  // ids, most likely first where anything is cut
    std::size_t kept_ = 0;        // the first kept_ of order_ may be drawn
    double total_ = 0;            // their weights' sum
    double uniform_ = 0;
    TokenId greedy_choice_ = -1;  // the last draw's id where it was greedy, else -1
};

// A uniform draw in [0, 1) from the generator's top 53 bits, the same on every platform.
inline double uniform_draw(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

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
    // What the last next() drew from, and with which uniform draw.
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

// Whether a stream of characters has just ended with a stop text, keeping only the last stop.size()
// characters: a sample can run for as long as it likes in constant memory.
class StopDetector {
public:
    explicit StopDetector(std::u32string stop) : stop_(std::move(stop)), tail_(stop_.size(), U'\0') {}
    // Takes the next character; true when the characters so far end with the stop text (never for an
    // empty one).
    bool push(char32_t character);

private:
    std::u32string stop_;
    std::u32string tail_;    // the last stop_.size() characters, a ring whose oldest is at next_slot_
    std::size_t next_slot_ = 0;
    std::size_t seen_ = 0;   // characters pushed, up to stop_.size()
};

// Primes with `prompt`, then calls `emit` for each of up to `length` generated characters as it is
// drawn (fewer when options.stop ends the sample). Keeps none of the text beyond the stop text's
// length: a caller that wants the whole sample collects it in `emit`. Returns how many it generated.
std::size_t generate(Model<float>& model, const Vocab& vocab, const std::u32string& prompt, std::size_t length,
                     const SampleOptions& options, std::uint64_t seed, const std::function<void(char32_t)>& emit);

}  // namespace charlm
