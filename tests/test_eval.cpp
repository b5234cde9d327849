// Checks eval.cpp: evaluation is the training forward pass and loss, summed exactly over the text, and a text
// mostly outside the vocabulary is refused unless allowed.
#include <initializer_list>
#include <utility>

#include <gtest/gtest.h>

#include "charlm/batches.hpp"
#include "charlm/error.hpp"
#include "charlm/eval.hpp"
#include "test_helpers.hpp"

namespace charlm {
namespace {

struct Fixture {
    Vocab vocab = Vocab::from_text(U"the quick brown fox jumps over the lazy dog\n");
    Model<float> model;
    Fixture() : model(config(vocab)) {
        std::mt19937_64 rng(9);
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
};

std::u32string sample_text(std::size_t length) {
    const std::u32string pangram = U"the quick brown fox jumps over the lazy dog\n";
    std::u32string text;
    while (text.size() < length) text += pangram;
    text.resize(length);
    return text;
}

TEST(Eval, EqualsTheMeanLossOfTheTrainingCodeOnTheSameText) {
    Fixture fixture;
    const std::vector<TokenId> ids = fixture.vocab.encode(sample_text(121));  // 120 pairs: 6 windows of 20
    // The training code: one stream, windows of 20 with the state carried between them.
    BatchStream stream(ids, 20, 1);
    ModelState<float> state = fixture.model.initial_state(1);
    Batch batch;
    double total = 0;
    for (std::size_t window = 0; window < stream.windows_per_pass(); ++window) {
        stream.next(batch);
        fixture.model.forward(batch.inputs, batch.seq_length, batch.batch_size, state);
        total += fixture.model.loss(batch.targets).total_nats;
    }
    const LossSum evaluated = evaluate_loss(fixture.model, ids, 20, 1);
    EXPECT_EQ(evaluated.count, 120u);
    EXPECT_NEAR(evaluated.mean(), total / 120, 1e-6);
}

TEST(Eval, ReportsPerplexityAndBitsConsistently) {
    Fixture fixture;
    const EvalResult result = evaluate_text(fixture.model, fixture.vocab, sample_text(3000));
    EXPECT_EQ(result.characters_scored, 2999u);
    EXPECT_EQ(result.unknown_characters, 0u);
    EXPECT_NEAR(result.perplexity, std::exp(result.nats_per_character), 1e-9);
    EXPECT_NEAR(result.bits_per_character, result.nats_per_character / std::log(2.0), 1e-9);
    // An untrained model is close to uniform over the vocabulary.
    EXPECT_NEAR(result.nats_per_character, std::log(static_cast<double>(fixture.vocab.size())), 0.5);
    const auto json = result.to_json();
    EXPECT_DOUBLE_EQ(json["nats_per_character"].get<double>(), result.nats_per_character);
}

TEST(Eval, UnknownCharactersAreLeftOutAndCounted) {
    Fixture fixture;
    const EvalResult with_unknown = evaluate_text(fixture.model, fixture.vocab, U"the QUICK dog" + sample_text(200));
    EXPECT_DOUBLE_EQ(with_unknown.unknown_fraction, 5.0 / 213.0);
    const EvalResult without = evaluate_text(fixture.model, fixture.vocab, U"the  dog" + sample_text(200));
    EXPECT_EQ(with_unknown.unknown_characters, 5u);
    EXPECT_EQ(with_unknown.characters_scored, without.characters_scored);
    EXPECT_DOUBLE_EQ(with_unknown.nats_per_character, without.nats_per_character);
    EXPECT_THROW(evaluate_text(fixture.model, fixture.vocab, U"XYZ"), Error);
}

TEST(Eval, RefusesATextMoreThanATenthUnknownUnlessAllowed) {
    Fixture fixture;
    const std::u32string known = sample_text(90);
    // Exactly a tenth unknown is accepted; one character more is not.
    const EvalResult tenth = evaluate_text(fixture.model, fixture.vocab, known + std::u32string(10, U'Q'));
    EXPECT_EQ(tenth.unknown_characters, 10u);
    EXPECT_DOUBLE_EQ(tenth.unknown_fraction, 0.1);
    EXPECT_EQ(tenth.to_json().at("unknown_fraction").get<double>(), tenth.unknown_fraction);
    const std::u32string past = known + std::u32string(11, U'Q');
    try {
        evaluate_text(fixture.model, fixture.vocab, past);
        FAIL() << "scored a text 11 of 101 unknown";
    } catch (const Error& error) {
        const std::string message = error.what();
        for (const char* mention : {"10.9%", "11 of 101", "10%", "--allow-unknown"})
            EXPECT_NE(message.find(mention), std::string::npos) << mention << " in: " << message;
    }
    // Allowed, it scores what is known, exactly as if the unknown characters were not there.
    const EvalResult allowed = evaluate_text(fixture.model, fixture.vocab, past, {.allow_unknown = true});
    const EvalResult without = evaluate_text(fixture.model, fixture.vocab, known);
    EXPECT_EQ(allowed.unknown_characters, 11u);
    EXPECT_DOUBLE_EQ(allowed.unknown_fraction, 11.0 / 101.0);
    EXPECT_EQ(allowed.characters_scored, without.characters_scored);
    EXPECT_DOUBLE_EQ(allowed.nats_per_character, without.nats_per_character);
    EXPECT_EQ(without.unknown_fraction, 0.0);
}

TEST(Eval, AFileMostlyUnknownIsRefusedByName) {
    Fixture fixture;
    testing::TemporaryDirectory directory;
    const auto path = directory.write("foreign.txt", "the dog " + std::string(92, 'Q'));  // 92% unknown
    try {
        evaluate_file(fixture.model, fixture.vocab, path);
        FAIL() << "scored a file 92% unknown";
    } catch (const Error& error) {
        EXPECT_EQ(std::string(error.what()).rfind(path.string() + ": 92%", 0), 0u) << error.what();
    }
    const EvalResult allowed = evaluate_file(fixture.model, fixture.vocab, path, {.allow_unknown = true});
    EXPECT_EQ(allowed.unknown_characters, 92u);
    EXPECT_EQ(allowed.characters_scored, 7u);
    // Nothing to score is still the first thing said, allowed or not.
    try {
        evaluate_file(fixture.model, fixture.vocab, directory.write("none.txt", "QQQQ"), {.allow_unknown = true});
        FAIL() << "scored nothing";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("nothing to score"), std::string::npos) << error.what();
    }
}

TEST(Eval, AFileScoresAsItsTextDoes) {
    // charlm eval streams the file into compact ids; the result must not change.
    Fixture fixture;
    testing::TemporaryDirectory directory;
    const std::u32string text = U"the QUICK dog\n" + sample_text(5000);
    const auto path = directory.write("text.txt", encode_utf8(text));
    const EvalResult from_file = evaluate_file(fixture.model, fixture.vocab, path);
    const EvalResult from_text = evaluate_text(fixture.model, fixture.vocab, text);
    EXPECT_EQ(from_file.unknown_characters, 5u);
    EXPECT_EQ(from_file.characters_scored, from_text.characters_scored);
    EXPECT_DOUBLE_EQ(from_file.nats_per_character, from_text.nats_per_character);
    EXPECT_THROW(evaluate_file(fixture.model, fixture.vocab, directory.write("unknown.txt", "XYZ")), Error);
}

TEST(Eval, BlocksOfStreamsSumToTheWholePass) {
    // A data-parallel evaluation: each process scores a block of the streams, and the sums add up.
    Fixture fixture;
    const std::vector<TokenId> ids = fixture.vocab.encode(sample_text(2000));
    for (const std::size_t max_characters : {std::size_t{0}, std::size_t{300}}) {
        SCOPED_TRACE(max_characters);
        const LossSum whole = evaluate_loss(fixture.model, ids, 20, 7, {.max_characters = max_characters});
        LossSum blocks;
        for (const auto& [first, count] : std::initializer_list<std::pair<int, int>>{{0, 1}, {1, 4}, {5, -1}}) {
            const LossSum block =
                evaluate_loss(fixture.model, ids, 20, 7, {.max_characters = max_characters, .first_stream = first, .stream_count = count});
            blocks.total_nats += block.total_nats;
            blocks.count += block.count;
        }
        EXPECT_EQ(blocks.count, whole.count);
        EXPECT_EQ(whole.count, evaluation_pair_count(ids, 7, {.max_characters = max_characters}));
        EXPECT_NEAR(blocks.total_nats, whole.total_nats, 1e-5 * whole.total_nats);
    }
}

TEST(Eval, ASubsetCoveringTheWholeTextScoresItBitForBit) {
    Fixture fixture;
    const std::vector<TokenId> ids = fixture.vocab.encode(sample_text(2000));
    const LossSum whole = evaluate_loss(fixture.model, ids, 20, 7);
    const LossSum capped = evaluate_loss(fixture.model, ids, 20, 7, {.max_characters = 1999});
    EXPECT_EQ(capped.count, 1999u);
    EXPECT_EQ(capped.total_nats, whole.total_nats);
    const LossSum part = evaluate_loss(fixture.model, ids, 20, 7, {.max_characters = 300});
    EXPECT_EQ(part.count, 301u) << "ceil(300 / 7) = 43 steps of 7 streams";
}

}  // namespace
}  // namespace charlm
