// Checks sample.cpp: draws that follow the exact truncated distribution, reproducible samples, greedy as the
// zero-temperature limit, valid UTF-8, a stop text found in constant memory, warnings and clear errors.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>

#include <utf8.h>

#include "charlm/error.hpp"
#include "charlm/sample.hpp"
#include "text_helpers.hpp"

namespace charlm {
namespace {

struct Fixture {
    Vocab vocab = testing::vocab_of_text(U"Zażółć gęślą jaźń 你好世界 မင်္ဂလာပါ\n");
    Model<float> model;
    Fixture() : model(config(vocab)) {
        std::mt19937_64 rng(4);
        model.initialize(rng);
    }
    static ModelConfig config(const Vocab& vocab) {
        ModelConfig config;
        config.vocab_size = static_cast<int>(vocab.size());
        config.embed_size = 8;
        config.hidden_size = 16;
        config.layers = 2;
        return config;
    }
    std::u32string run(const std::u32string& prompt, const SampleOptions& options, std::uint64_t seed, std::size_t length = 200) {
        std::u32string text;
        const std::size_t generated = generate(model, vocab, prompt, length, options, seed, [&](char32_t c) { text += c; });
        EXPECT_EQ(generated, text.size());
        return text;
    }
};

// The logits of one step from the zero state, through the same forward() that sampling uses.
Matrix<float> first_logits(Model<float>& model, TokenId input) {
    ModelState<float> state = model.initial_state(1);
    model.forward(std::span<const TokenId>(&input, 1), 1, 1, state);
    return model.logits();
}

TEST(Sample, SamplingMatchesTheUnfrozenModelAndSeesLaterWeightChanges) {
    // A sampler freezes the weights and works from packed copies of them; the copies must give the
    // unfrozen model's logits, and a change made after the sampler is gone must show.
    Fixture fixture;
    const Matrix<float> unfrozen = first_logits(fixture.model, 3);
    {
        Sampler sampler(fixture.model, fixture.vocab, 1);
        const Matrix<float> frozen = first_logits(fixture.model, 3);
        EXPECT_LE((frozen - unfrozen).cwiseAbs().maxCoeff(), 1e-5f);
    }
    for (const char* name : {"rnn.weight_ih_l0", "rnn.weight_hh_l1", "head.weight"}) fixture.model.find_parameter(name)->value *= 2.0f;
    const Matrix<float> changed = first_logits(fixture.model, 3);
    EXPECT_GT((changed - unfrozen).cwiseAbs().maxCoeff(), 1e-3f);
    Sampler sampler(fixture.model, fixture.vocab, 1);  // a new freeze packs the new weights
    EXPECT_LE((first_logits(fixture.model, 3) - changed).cwiseAbs().maxCoeff(), 1e-5f);
}

TEST(Sample, SameSeedGivesTheSameSample) {
    Fixture fixture;
    const SampleOptions options;
    const auto first = fixture.run(U"gęś", options, 17);
    EXPECT_EQ(first.size(), 200u);
    EXPECT_EQ(fixture.run(U"gęś", options, 17), first);
    EXPECT_NE(fixture.run(U"gęś", options, 18), first);
}

TEST(Sample, TemperatureNearZeroGivesTheGreedySample) {
    Fixture fixture;
    SampleOptions greedy;
    greedy.greedy = true;
    SampleOptions cold;
    cold.temperature = 1e-6;
    EXPECT_EQ(fixture.run(U"你好", cold, 1), fixture.run(U"你好", greedy, 2));
}

TEST(Sample, TopKOfOneIsGreedy) {
    Fixture fixture;
    SampleOptions greedy;
    greedy.greedy = true;
    SampleOptions top_one;
    top_one.top_k = 1;
    SampleOptions tiny_p;
    tiny_p.top_p = 1e-9;
    const auto expected = fixture.run(U"ż", greedy, 5);
    EXPECT_EQ(fixture.run(U"ż", top_one, 6), expected);
    EXPECT_EQ(fixture.run(U"ż", tiny_p, 7), expected);
}

TEST(Sample, StopStringEndsTheSample) {
    Fixture fixture;
    SampleOptions options;
    const auto full = fixture.run(U"a", options, 8, 300);
    const char32_t stop_character = full[40];  // whatever the model draws at position 40
    options.stops = {std::u32string(1, stop_character)};
    const auto stopped = fixture.run(U"a", options, 8, 300);
    EXPECT_EQ(stopped, full.substr(0, full.find(stop_character) + 1));
}

TEST(Sample, SamplesOfMultiByteTextAreValidUtf8) {
    Fixture fixture;
    const std::string bytes = encode_utf8(fixture.run(U"မင်", SampleOptions{}, 3, 500));
    EXPECT_TRUE(utf8::is_valid(bytes.begin(), bytes.end()));
    for (char32_t c : decode_utf8(bytes, "sample")) EXPECT_TRUE(fixture.vocab.contains(c));
}

TEST(Sample, RefusesBadOptionsAndUnknownPromptCharacters) {
    Fixture fixture;
    for (double temperature : {0.0, -1.0, std::nan(""), std::numeric_limits<double>::infinity()}) {
        SampleOptions options;
        options.temperature = temperature;
        EXPECT_THROW(validate(options), UsageError) << temperature;
    }
    for (double top_p : {0.0, -0.5, 1.5}) {
        SampleOptions options;
        options.top_p = top_p;
        EXPECT_THROW(validate(options), UsageError) << top_p;
    }
    try {
        fixture.run(U"QZ", SampleOptions{}, 1);
        FAIL() << "accepted an unknown prompt";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("'Q' (U+0051)"), std::string::npos) << error.what();
    }
}

// ---- drawing against the exact distribution ----

// The distribution a draw should follow, worked out in double apart from the library: weights
// exp((logit - max) / temperature); the top_k heaviest (ties by id); of those, the smallest prefix whose
// weight reaches top_p of theirs; renormalised.
std::vector<double> exact_distribution(const std::vector<float>& logits, double temperature, int top_k, double top_p) {
    const double max_logit = *std::max_element(logits.begin(), logits.end());
    std::vector<double> weights;
    for (float logit : logits) weights.push_back(std::exp((logit - max_logit) / temperature));
    std::vector<std::size_t> order(logits.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return weights[a] > weights[b]; });
    std::size_t kept = top_k > 0 ? std::min<std::size_t>(static_cast<std::size_t>(top_k), order.size()) : order.size();
    double kept_weight = 0;
    for (std::size_t i = 0; i < kept; ++i) kept_weight += weights[order[i]];
    double running = 0;
    for (std::size_t i = 0; i < kept; ++i) {
        running += weights[order[i]];
        if (running >= top_p * kept_weight) {
            kept = i + 1;
            break;
        }
    }
    std::vector<double> probabilities(logits.size(), 0.0);
    double total = 0;
    for (std::size_t i = 0; i < kept; ++i) total += weights[order[i]];
    for (std::size_t i = 0; i < kept; ++i) probabilities[order[i]] = weights[order[i]] / total;
    return probabilities;
}

// The chi-square statistic that a correct sampler exceeds with probability 1e-5 at `degrees` degrees
// of freedom (Wilson and Hilferty's approximation: within a percent here). The seed is fixed, so the
// test is deterministic; the bound only says how unlucky a correct sampler would have to be.
double chi_square_bound(std::size_t degrees) {
    const double k = static_cast<double>(degrees), z = 4.265;  // the standard normal's 1 - 1e-5 quantile
    return k * std::pow(1 - 2 / (9 * k) + z * std::sqrt(2 / (9 * k)), 3);
}

// Twelve logits in no particular order, so that sorting matters, with no two alike.
const std::vector<float> kLogits = {1.2f, -0.3f, 2.5f, 0.7f, 1.9f, -1.0f, 0.1f, 2.2f, -0.6f, 1.5f, 0.4f, -2.0f};

// Draws `draws` times from `logits` under `options` (uniforms as Sampler makes them, from a fixed seed)
// and checks the counts against the exact distribution: never an id outside it, and a chi-square below
// the bound. A truncation off by one, a top-p boundary on the wrong side or a missing renormalisation
// moves at least 3% of the mass, tens of standard deviations at this many draws.
void expect_draws_follow_the_exact_distribution(const std::vector<float>& logits, const SampleOptions& options,
                                                std::size_t expected_kept, int draws = 200000) {
    const std::vector<double> exact = exact_distribution(logits, options.temperature, options.top_k, options.top_p);
    ASSERT_EQ(static_cast<std::size_t>(std::count_if(exact.begin(), exact.end(), [](double p) { return p > 0; })), expected_kept)
        << "the test's own distribution keeps what the test case says";
    TokenDrawer drawer;
    std::mt19937_64 rng(2024);
    std::vector<long> counts(logits.size(), 0);
    for (int i = 0; i < draws; ++i) {
        ++counts[static_cast<std::size_t>(drawer.draw(logits, options, uniform_draw(rng)))];
    }
    // The distribution the drawer reports is the exact one (up to float weights).
    const std::vector<double> reported = drawer.distribution();
    ASSERT_EQ(reported.size(), exact.size());
    for (std::size_t id = 0; id < exact.size(); ++id) EXPECT_NEAR(reported[id], exact[id], 1e-6) << "id " << id;
    double chi_square = 0;
    for (std::size_t id = 0; id < exact.size(); ++id) {
        if (exact[id] == 0) {
            EXPECT_EQ(counts[id], 0) << "id " << id << " lies outside the truncated distribution but was drawn";
            continue;
        }
        const double expected = exact[id] * draws;
        chi_square += (counts[id] - expected) * (counts[id] - expected) / expected;
    }
    EXPECT_LT(chi_square, chi_square_bound(expected_kept - 1));
}

TEST(Sample, DrawsFollowTheTemperedDistribution) {
    SampleOptions options;
    options.temperature = 0.7;
    expect_draws_follow_the_exact_distribution(kLogits, options, 12);
}

TEST(Sample, TopKDrawsFollowTheExactTruncatedDistribution) {
    SampleOptions options;
    options.temperature = 0.8;
    options.top_k = 5;
    expect_draws_follow_the_exact_distribution(kLogits, options, 5);
}

TEST(Sample, TopPDrawsFollowTheExactTruncatedDistribution) {
    // At 1.3 the kept set's first seven weigh 0.889 of the whole and the eighth brings it to 0.926:
    // p = 0.9 keeps eight, the one that crosses the boundary included.
    SampleOptions options;
    options.temperature = 1.3;
    options.top_p = 0.9;
    expect_draws_follow_the_exact_distribution(kLogits, options, 8);
}

TEST(Sample, TopKThenTopPDrawsFollowTheExactTruncatedDistribution) {
    // Top-p counts its share of what top-k kept: 0.8 of the six heaviest is reached at the fourth.
    SampleOptions options;
    options.top_k = 6;
    options.top_p = 0.8;
    expect_draws_follow_the_exact_distribution(kLogits, options, 4);
}

TEST(Sample, TopPKeepsTheCharacterThatReachesPExactly) {
    // Four equal weights (exactly 1 each): p = 0.5 is reached, not passed, by the second, so two are kept,
    // the lower ids, as a set that "reaches p" is read everywhere (and by PyTorch users' top-p).
    SampleOptions options;
    options.top_p = 0.5;
    expect_draws_follow_the_exact_distribution({0.5f, 0.5f, 0.5f, 0.5f}, options, 2);
}

TEST(Sample, GreedyDrawsTheMostLikelyAndReportsItAsCertain) {
    SampleOptions options;
    options.greedy = true;
    TokenDrawer drawer;
    EXPECT_EQ(drawer.draw(kLogits, options, 0.99), 2);
    std::vector<double> expected(kLogits.size(), 0.0);
    expected[2] = 1;
    EXPECT_EQ(drawer.distribution(), expected);
}

// ---- streaming and stop texts ----

TEST(Sample, StopDetectorFindsTheStopTextAcrossRingWrapsAndOverlaps) {
    auto first_stop = [](const std::u32string& stop, const std::u32string& text) {
        StopDetector detector(stop);
        for (std::size_t i = 0; i < text.size(); ++i)
            if (detector.push(text[i])) return i + 1;
        return std::u32string::npos;
    };
    EXPECT_EQ(first_stop(U"aab", U"aaab"), 4u);          // a false start overlapping the real one
    EXPECT_EQ(first_stop(U"abc", U"xxxxxxxabc"), 10u);   // after the ring has wrapped several times
    EXPECT_EQ(first_stop(U"abc", U"ab"), std::u32string::npos);
    EXPECT_EQ(first_stop(U"\n\n", U"a\nb\n\n"), 5u);
    EXPECT_EQ(first_stop(U"日本", U"x日x本日本"), 6u);
    EXPECT_EQ(first_stop(U"", U"anything"), std::u32string::npos);
    EXPECT_EQ(first_stop(U"cab", U"cab"), 3u);           // the stop text is the whole text
}

TEST(Sample, StopDetectorTakesTheFirstStopListedAndCountsWhatMayStillBecomeOne) {
    StopDetector detector(std::vector<std::u32string>{U"b", U"ab", U"xyz", U""});
    EXPECT_EQ(detector.push(U'x'), 0u);
    EXPECT_EQ(detector.undecided(), 1u);  // "x" begins "xyz"
    EXPECT_EQ(detector.push(U'y'), 0u);
    EXPECT_EQ(detector.undecided(), 2u);
    EXPECT_EQ(detector.push(U'a'), 0u);
    EXPECT_EQ(detector.undecided(), 1u) << "\"a\" begins \"ab\"; \"ya\" begins nothing";
    EXPECT_EQ(detector.push(U'b'), 1u) << "\"b\", listed first, wins over \"ab\"";
}

// Resident memory of this process, in bytes.
std::size_t resident_bytes() {
    std::ifstream statm("/proc/self/statm");
    std::size_t total_pages = 0, resident_pages = 0;
    statm >> total_pages >> resident_pages;
    return resident_pages * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

TEST(Sample, GenerateStreamsWithoutKeepingTheSample) {
    // A million characters: 4 MB as UTF-32 if the library kept them. Resident memory at the last
    // character must be where it was at the first.
    Fixture fixture;
    SampleOptions options;
    options.stops = {U"never: '@' is not in the vocabulary"};
    const std::size_t length = std::size_t{1} << 20;
    std::size_t emitted = 0, resident_at_first = 0, resident_at_last = 0;
    const std::size_t generated = generate(fixture.model, fixture.vocab, U"", length, options, 3, [&](char32_t) {
        if (emitted == 0) resident_at_first = resident_bytes();
        if (++emitted == length) resident_at_last = resident_bytes();
    });
    EXPECT_EQ(generated, length);
    EXPECT_EQ(emitted, length);
    ASSERT_GT(resident_at_first, 0u) << "cannot read /proc/self/statm";
    EXPECT_LT(resident_at_last, resident_at_first + (std::size_t{1} << 20))
        << "resident memory grew from " << resident_at_first << " to " << resident_at_last << " bytes while sampling";
}

TEST(Sample, GenerateReturnsHowManyItGeneratedUpToTheStop) {
    Fixture fixture;
    SampleOptions options;
    const std::u32string full = fixture.run(U"a", options, 8, 300);
    const std::u32string stop = full.substr(50, 3);  // whatever the model draws there; it may occur earlier too
    options.stops = {stop};
    std::u32string emitted;
    const std::size_t generated = generate(fixture.model, fixture.vocab, U"a", 300, options, 8, [&](char32_t c) { emitted += c; });
    EXPECT_EQ(generated, full.find(stop) + 3);
    EXPECT_EQ(emitted, full.substr(0, generated));
}

// ---- warnings ----

TEST(Sample, WarnsThatGreedyIgnoresTheDrawingOptionsGiven) {
    Fixture fixture;
    SampleOptions options;
    options.greedy = true;
    options.temperature = 0.5;
    options.top_k = 5;
    // Given or not is what counts: the values themselves may be the defaults.
    EXPECT_TRUE(sample_warnings(options, {}, fixture.vocab).empty());
    const auto warnings = sample_warnings(options, {.temperature = true, .top_k = true, .top_p = true, .seed = 7}, fixture.vocab);
    ASSERT_EQ(warnings.size(), 1u);
    for (const char* mention : {"--greedy", "ignores", "--temperature 0.5", "--top-k 5", "--top-p 1", "--seed 7"})
        EXPECT_NE(warnings[0].find(mention), std::string::npos) << mention << " in: " << warnings[0];
    const auto one = sample_warnings(options, {.top_p = true}, fixture.vocab);
    ASSERT_EQ(one.size(), 1u);
    EXPECT_EQ(one[0].find("--temperature"), std::string::npos) << one[0];
    options.greedy = false;
    EXPECT_TRUE(sample_warnings(options, {.temperature = true, .top_k = true, .top_p = true, .seed = 7}, fixture.vocab).empty());
}

TEST(Sample, WarnsThatAStopTextWithCharactersOutsideTheVocabularyCanNeverMatch) {
    Fixture fixture;
    SampleOptions options;
    options.stops = {U"gęś"};  // all in the vocabulary
    EXPECT_TRUE(sample_warnings(options, {}, fixture.vocab).empty());
    options.stops = {U"QgQ!"};
    const auto warnings = sample_warnings(options, {}, fixture.vocab);
    ASSERT_EQ(warnings.size(), 1u);
    const std::string& warning = warnings[0];
    EXPECT_NE(warning.find("--stop"), std::string::npos) << warning;
    EXPECT_NE(warning.find("never"), std::string::npos) << warning;
    EXPECT_NE(warning.find("'Q' (U+0051), '!' (U+0021)"), std::string::npos) << "each once, in order: " << warning;
    EXPECT_EQ(warning.find("'g'"), std::string::npos) << warning;
}

}  // namespace
}  // namespace charlm
