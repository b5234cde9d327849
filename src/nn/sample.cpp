// Temperature, top-k, top-p and greedy sampling from the model's next-character distribution.
#include "charlm/sample.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "charlm/error.hpp"
#include "charlm/utf8.hpp"

namespace charlm {

void validate(const SampleOptions& options) {
    if (!(options.temperature > 0) || !std::isfinite(options.temperature))
        throw UsageError(fmt::format("--temperature must be a positive number, not {}; use --greedy for the most likely text",
                                options.temperature));
    if (!(options.top_p > 0 && options.top_p <= 1)) throw UsageError(fmt::format("--top-p must be in (0, 1], not {}", options.top_p));
    if (options.top_k < 0) throw UsageError(fmt::format("--top-k must be 0 (off) or positive, not {}", options.top_k));
}

std::vector<std::string> sample_warnings(const SampleOptions& options, const ExplicitSampleOptions& given, const Vocab& vocab) {
    std::vector<std::string> warnings;
    if (options.greedy) {
        std::vector<std::string> ignored;
        if (given.temperature) ignored.push_back(fmt::format("--temperature {}", options.temperature));
        if (given.top_k) ignored.push_back(fmt::format("--top-k {}", options.top_k));
        if (given.top_p) ignored.push_back(fmt::format("--top-p {}", options.top_p));
        if (given.seed) ignored.push_back(fmt::format("--seed {}", *given.seed));
        if (!ignored.empty())
            warnings.push_back(fmt::format("--greedy always takes the most likely character, so it ignores {}; drop --greedy "
                                           "to draw with {}",
                                           fmt::join(ignored, ", "), ignored.size() == 1 ? "it" : "them"));
    }
    std::size_t never_matching = 0;
    for (const std::u32string& stop : options.stops) {
        const std::string unknown = unknown_characters(stop, vocab);
        if (unknown.empty()) continue;
        ++never_matching;
        if (options.stops.size() == 1)
            warnings.push_back(fmt::format("--stop can never match: the model never produces {}, so every sample runs to --length", unknown));
        else
            warnings.push_back(fmt::format("--stop \"{}\" can never match: the model never produces {}{}", encode_utf8(stop), unknown,
                                           never_matching == options.stops.size() ? ", and no other --stop can: every sample runs to --length" : ""));
    }
    return warnings;
}

TokenId TokenDrawer::draw(std::span<const float> logits, const SampleOptions& options, double uniform) {
    const std::size_t V = logits.size();
    size_ = V;
    // Eigen's reductions run in SIMD registers, as sampling's did before the drawer; std::max_element's do not.
    const Eigen::Map<const Eigen::ArrayXf> row(logits.data(), static_cast<Eigen::Index>(V));
    if (options.greedy) {
        Eigen::Index best = 0;
        row.maxCoeff(&best);
        greedy_choice_ = static_cast<TokenId>(best);
        return greedy_choice_;
    }
    greedy_choice_ = -1;
    weights_.resize(V);
    const float max_logit = row.maxCoeff();
    // 1/T overflows to infinity for a subnormal T, and 0 * infinity made the most likely weight NaN
    // (a sample of garbage); dividing gives 0 for it and -infinity for the rest, as T -> 0 should.
    const double inverse_temperature = 1.0 / options.temperature;
    if (std::isfinite(inverse_temperature)) {
        for (std::size_t i = 0; i < V; ++i) weights_[i] = static_cast<float>(std::exp((logits[i] - max_logit) * inverse_temperature));
    } else {
        for (std::size_t i = 0; i < V; ++i) weights_[i] = static_cast<float>(std::exp((logits[i] - max_logit) / options.temperature));
    }
    auto weight = [&](TokenId id) { return weights_[static_cast<std::size_t>(id)]; };
    std::size_t kept = V;
    order_.resize(V);
    std::iota(order_.begin(), order_.end(), 0);
    if (options.top_k > 0 || options.top_p < 1) {
        // Most likely first; ties by id so that a seed always gives the same text.
        std::sort(order_.begin(), order_.end(),
                  [&](TokenId a, TokenId b) { return weight(a) != weight(b) ? weight(a) > weight(b) : a < b; });
        if (options.top_k > 0) kept = std::min(kept, static_cast<std::size_t>(options.top_k));
        if (options.top_p < 1) {
            double total = 0;
            for (std::size_t i = 0; i < kept; ++i) total += weight(order_[i]);
            double running = 0;
            for (std::size_t i = 0; i < kept; ++i) {
                running += weight(order_[i]);
                if (running >= options.top_p * total) {
                    kept = i + 1;
                    break;
                }
            }
        }
    }
    double total = 0;
    for (std::size_t i = 0; i < kept; ++i) total += weight(order_[i]);
    kept_ = kept;
    total_ = total;
    double target = uniform * total;
    TokenId chosen = order_[kept - 1];
    for (std::size_t i = 0; i < kept; ++i) {
        target -= weight(order_[i]);
        if (target < 0) {
            chosen = order_[i];
            break;
        }
    }
    return chosen;
}

std::vector<double> TokenDrawer::distribution() const {
    std::vector<double> probabilities(size_, 0.0);
    if (greedy_choice_ >= 0) {
        probabilities[static_cast<std::size_t>(greedy_choice_)] = 1;
        return probabilities;
    }
    for (std::size_t i = 0; i < kept_; ++i) {
        const auto id = static_cast<std::size_t>(order_[i]);
        probabilities[id] = weights_[id] / total_;
    }
    return probabilities;
}

Sampler::Sampler(Model<float>& model, const Vocab& vocab, std::uint64_t seed)
    : model_(model), freeze_(model), vocab_(vocab), rng_(seed), state_(model.initial_state(1)) {}

void Sampler::feed(TokenId id) {
    input_ = id;
    model_.forward(std::span<const TokenId>(&input_, 1), 1, 1, state_);
}

std::string unknown_characters(std::u32string_view text, const Vocab& vocab, std::size_t most_bytes) {
    std::vector<std::string> named;
    std::string list;
    for (char32_t c : text) {
        if (vocab.contains(c) || list.size() >= most_bytes) continue;
        std::string name = describe_code_point(c);
        if (std::find(named.begin(), named.end(), name) != named.end()) continue;
        list += (list.empty() ? "" : ", ") + name;
        named.push_back(std::move(name));
    }
    return list;
}

void check_prompt(const Vocab& vocab, const std::u32string& prompt) {
    const std::string unknown = unknown_characters(prompt, vocab);
    if (!unknown.empty())
        throw Error(fmt::format("the prompt has characters the model never saw: {}; remove them or pass --skip-unknown", unknown));
}

std::vector<TokenId> priming_ids(const Vocab& vocab, const std::u32string& prompt) {
    if (prompt.empty()) return {vocab.contains(U'\n') ? vocab.id_of(U'\n') : TokenId{0}};
    return vocab.encode(prompt);
}

void Sampler::prime(const std::u32string& prompt) {
    check_prompt(vocab_, prompt);
    state_.reset();
    for (TokenId id : priming_ids(vocab_, prompt)) feed(id);
}

char32_t Sampler::next(const SampleOptions& options) {
    const auto& logits = model_.logits();
    const double uniform = options.greedy ? 0.0 : uniform_draw(rng_);  // greedy draws none
    const TokenId chosen = drawer_.draw(std::span<const float>(logits.data(), static_cast<std::size_t>(logits.cols())), options, uniform);
    feed(chosen);
    return vocab_.code_point_of(chosen);
}

StopDetector::StopDetector(std::vector<std::u32string> stops) {
    std::erase_if(stops, [](const std::u32string& stop) { return stop.empty(); });
    stops_ = std::move(stops);
    std::size_t longest = 0;
    for (const std::u32string& stop : stops_) longest = std::max(longest, stop.size());
    tail_.assign(longest, U'\0');
}

bool StopDetector::last_characters_are(const std::u32string& text, std::size_t length) const {
    if (length > seen_) return false;
    // Newest first: most characters differ from a stop text's last, and the test ends there.
    const std::size_t ring = tail_.size();
    for (std::size_t back = 0; back < length; ++back)
        if (tail_[(next_slot_ + ring - 1 - back) % ring] != text[length - 1 - back]) return false;
    return true;
}

std::size_t StopDetector::push(char32_t character) {
    if (tail_.empty()) return 0;
    tail_[next_slot_] = character;
    next_slot_ = next_slot_ + 1 == tail_.size() ? 0 : next_slot_ + 1;
    if (seen_ < tail_.size()) ++seen_;
    for (const std::u32string& stop : stops_)
        if (last_characters_are(stop, stop.size())) return stop.size();
    return 0;
}

std::size_t StopDetector::undecided() const {
    std::size_t longest = 0;
    for (const std::u32string& stop : stops_)
        for (std::size_t length = std::min(stop.size() - 1, seen_); length > longest; --length)
            if (last_characters_are(stop, length)) {
                longest = length;
                break;
            }
    return longest;
}

std::size_t generate(Model<float>& model, const Vocab& vocab, const std::u32string& prompt, std::size_t length,
                     const SampleOptions& options, std::uint64_t seed, const std::function<void(char32_t)>& emit) {
    validate(options);
    Sampler sampler(model, vocab, seed);
    sampler.prime(prompt);
    StopDetector stop(options.stops);
    for (std::size_t generated = 0; generated < length;) {
        const char32_t character = sampler.next(options);
        emit(character);
        ++generated;
        if (stop.push(character)) return generated;
    }
    return length;
}

}  // namespace charlm
