// Checks sample.cpp: reproducible draws, greedy as the zero-temperature limit, valid UTF-8, clear errors.
#include <gtest/gtest.h>

#include <utf8.h>

#include "charlm/error.hpp"
#include "charlm/sample.hpp"

namespace charlm {
namespace {

struct Fixture {
    Vocab vocab = Vocab::from_text(U"Zażółć gęślą jaźń 你好世界 မင်္ဂလာပါ\n");
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
        generate(model, vocab, prompt, length, options, seed, [&](char32_t c) { text += c; });
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
    options.stop = std::u32string(1, stop_character);
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
        EXPECT_THROW(validate(options), Error) << temperature;
    }
    for (double top_p : {0.0, -0.5, 1.5}) {
        SampleOptions options;
        options.top_p = top_p;
        EXPECT_THROW(validate(options), Error) << top_p;
    }
    try {
        fixture.run(U"QZ", SampleOptions{}, 1);
        FAIL() << "accepted an unknown prompt";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("'Q' (U+0051)"), std::string::npos) << error.what();
    }
}

}  // namespace
}  // namespace charlm
