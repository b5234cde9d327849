// Checks eval.cpp: evaluation is the training forward pass and loss, summed exactly over the text, and a text
// mostly outside the vocabulary is refused unless allowed; dynamic evaluation scores each window before it
// learns from it, and learns.
#include <cmath>
#include <filesystem>
#include <initializer_list>
#include <utility>

#include <gtest/gtest.h>

#include "charlm/batches.hpp"
#include "charlm/error.hpp"
#include "charlm/eval.hpp"
#include "charlm/utf8.hpp"
#include "test_helpers.hpp"
#include "text_helpers.hpp"

namespace charlm {
namespace {

struct Fixture {
    Vocab vocab = testing::vocab_of_text(U"the quick brown fox jumps over the lazy dog\n");
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

// A text scored as `charlm eval` scores it: written to a file and read back through evaluate_file.
EvalResult evaluate_text(Model<float>& model, const Vocab& vocab, const std::u32string& text, const EvalOptions& options = {}) {
    testing::TemporaryDirectory directory;
    return evaluate_file(model, vocab, directory.write("text.txt", encode_utf8(text)), options);
}

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

TEST(Eval, AFileScoresAsItsKnownCharactersDo) {
    // charlm eval streams the file into compact ids, drops the unknown characters and reads the rest as
    // streams of at least ~1k characters (5 here: 5009 known / 1024), each in windows of 100; the result
    // must be that of the same ids scored in memory.
    Fixture fixture;
    testing::TemporaryDirectory directory;
    const std::u32string text = U"the QUICK dog\n" + sample_text(5000);
    const auto path = directory.write("text.txt", encode_utf8(text));
    const EvalResult from_file = evaluate_file(fixture.model, fixture.vocab, path);
    std::size_t unknown = 0;
    const std::vector<TokenId> known = fixture.vocab.encode_known(text, unknown);
    const LossSum in_memory = evaluate_loss(fixture.model, known, 100, static_cast<int>(known.size() / 1024));
    EXPECT_EQ(unknown, 5u);
    EXPECT_EQ(from_file.unknown_characters, 5u);
    EXPECT_EQ(from_file.characters_scored, in_memory.count);
    EXPECT_DOUBLE_EQ(from_file.nats_per_character, in_memory.mean());
    EXPECT_THROW(evaluate_file(fixture.model, fixture.vocab, directory.write("unknown.txt", "XYZ")), Error);
}

TEST(Eval, AFilesIdsGoToTheirFolderAndLeaveNothingThere) {
    // The ids are mapped from a file of no name in the folder given (TMPDIR's by default), not held in
    // memory: a folder that cannot take them is refused by name, and one that can is empty afterwards.
    Fixture fixture;
    testing::TemporaryDirectory directory;
    const std::u32string text = sample_text(5000);
    const auto path = directory.write("text.txt", encode_utf8(text));
    const std::filesystem::path folder = directory.path() / "ids";
    std::filesystem::create_directory(folder);
    const EvalResult result = evaluate_file(fixture.model, fixture.vocab, path, {.ids_folder = folder});
    EXPECT_TRUE(std::filesystem::is_empty(folder)) << "a file of no name: nothing to remove, however the process ends";
    EXPECT_DOUBLE_EQ(result.nats_per_character, evaluate_file(fixture.model, fixture.vocab, path).nats_per_character);
    try {
        evaluate_file(fixture.model, fixture.vocab, path, {.ids_folder = directory.path() / "missing"});
        ADD_FAILURE() << "a folder that is not there took the ids";
    } catch (const Error& error) {
        const std::string message = error.what();
        EXPECT_NE(message.find("cannot write the ids of"), std::string::npos) << message;
        EXPECT_NE(message.find((directory.path() / "missing").string()), std::string::npos) << message;
        EXPECT_NE(message.find("set TMPDIR"), std::string::npos) << message;
    }
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

// ---- dynamic evaluation ----

// `repeats` copies of a random string of `length` of the fixture's characters: what a model can only
// predict by remembering what it read.
std::u32string repeated_random_text(std::size_t length, int repeats, std::uint64_t seed = 3) {
    const std::u32string alphabet = U"abcdefghijklmnopqrstuvwxyz ";
    std::mt19937_64 rng(seed);
    std::u32string piece;
    for (std::size_t i = 0; i < length; ++i) piece += alphabet[rng() % alphabet.size()];
    std::u32string text;
    for (int i = 0; i < repeats; ++i) text += piece;
    return text;
}

TEST(Eval, AdaptingLowersTheLossOnATextThatRepeats) {
    Fixture fixture;
    const std::vector<TokenId> ids = fixture.vocab.encode(repeated_random_text(40, 12));
    const AdaptedLoss loss = evaluate_loss_adapting(fixture.model, ids, {.learning_rate = 0.03, .decay = 0.0, .window = 10});
    EXPECT_EQ(loss.plain.count, ids.size() - 1);
    EXPECT_EQ(loss.adapted.count, loss.plain.count);
    // Untrained, the model cannot tell the repeats from the first copy: about ln 28 = 3.3 nats throughout.
    EXPECT_NEAR(loss.plain.mean(), std::log(static_cast<double>(fixture.vocab.size())), 0.2);
    EXPECT_LT(loss.adapted.mean(), loss.plain.mean() - 0.5) << "adapted " << loss.adapted.mean() << ", plain " << loss.plain.mean();
    // The defaults, made for trained models, take smaller steps: they gain less, but gain.
    Fixture again;
    const AdaptedLoss by_default = evaluate_loss_adapting(again.model, ids, AdaptOptions{});
    EXPECT_NEAR(by_default.plain.total_nats, loss.plain.total_nats, 1e-6 * loss.plain.total_nats) << "windows of another length";
    EXPECT_LT(by_default.adapted.mean(), by_default.plain.mean()) << by_default.adapted.mean();
}

TEST(Eval, AdaptingScoresEachWindowBeforeLearningFromIt) {
    Fixture fixture;
    const std::u32string text = repeated_random_text(100, 3);
    const AdaptOptions options{.learning_rate = 0.03, .decay = 0.1, .window = 25};
    std::vector<AdaptProgress> seen;
    const AdaptedLoss loss = evaluate_loss_adapting(fixture.model, fixture.vocab.encode(text), options,
                                                    [&](const AdaptProgress& progress) { seen.push_back(progress); });
    ASSERT_EQ(seen.size(), 12u) << "299 pairs in windows of 25";
    EXPECT_EQ(seen.back().characters_scored, 299u);
    EXPECT_EQ(seen.back().characters_total, 299u);
    EXPECT_EQ(seen.back().adapted.total_nats, loss.adapted.total_nats);
    // The first window meets the trained weights: the same figure as the plain pass, and as the plain
    // evaluation of those 26 characters.
    EXPECT_EQ(seen[0].characters_scored, 25u);
    EXPECT_EQ(seen[0].adapted.total_nats, seen[0].plain.total_nats);
    Fixture untouched;
    const std::vector<TokenId> first_window = untouched.vocab.encode(text.substr(0, 26));
    EXPECT_NEAR(seen[0].adapted.total_nats, evaluate_loss(untouched.model, first_window, 25, 1).total_nats, 1e-5);
    // From the second on, the weights have learnt: the figures part.
    EXPECT_NE(seen[1].adapted.total_nats, seen[1].plain.total_nats);
    // What follows a window never changes its figure: the same first 151 characters (six windows of
    // pairs), then other ones.
    const std::u32string other_ending = text.substr(0, 151) + repeated_random_text(149, 1, 4);
    std::vector<AdaptProgress> other;
    Fixture fresh;
    (void)evaluate_loss_adapting(fresh.model, fresh.vocab.encode(other_ending), options,
                                 [&](const AdaptProgress& progress) { other.push_back(progress); });
    ASSERT_EQ(other.size(), seen.size());
    for (std::size_t window = 0; window < 6; ++window) {
        EXPECT_EQ(other[window].adapted.total_nats, seen[window].adapted.total_nats) << window;
        EXPECT_EQ(other[window].plain.total_nats, seen[window].plain.total_nats) << window;
    }
    EXPECT_NE(other.back().adapted.total_nats, seen.back().adapted.total_nats);
}

TEST(Eval, WeightsThatNeverMoveScoreExactlyThePlainFigure) {
    Fixture fixture;
    const std::vector<TokenId> ids = fixture.vocab.encode(repeated_random_text(150, 4));
    // The plain figure is the one stream's, which a plain evaluation of one stream gives too.
    const LossSum one_stream = evaluate_loss(fixture.model, ids, 1000, 1);
    for (const AdaptOptions& options : {AdaptOptions{.learning_rate = 0.0, .decay = 0.0, .window = 30},
                                        AdaptOptions{.learning_rate = 2.0, .decay = 1.0, .window = 30},
                                        AdaptOptions{.learning_rate = 0.0, .decay = 0.5, .window = 7}}) {
        SCOPED_TRACE(options.to_json().dump());
        Fixture fresh;
        const AdaptedLoss loss = evaluate_loss_adapting(fresh.model, ids, options);
        EXPECT_EQ(loss.adapted.total_nats, loss.plain.total_nats);
        EXPECT_EQ(loss.adapted.count, loss.plain.count);
        EXPECT_NEAR(loss.plain.total_nats, one_stream.total_nats, 1e-6 * one_stream.total_nats);
        for (std::size_t i = 0; i < fresh.model.parameters().size(); ++i)
            EXPECT_TRUE(fresh.model.parameters()[i].value == fixture.model.parameters()[i].value) << fresh.model.parameters()[i].name;
    }
}

TEST(Eval, AdaptingLeavesTheModelAdaptedAndTheResultSaysSo) {
    Fixture fixture, trained;
    const std::u32string text = repeated_random_text(300, 4);
    const AdaptOptions options{.learning_rate = 0.03, .decay = 0.01, .window = 40};
    const EvalResult result = evaluate_text(fixture.model, fixture.vocab, text, {.adapt = options});
    ASSERT_TRUE(result.adaptation.has_value());
    EXPECT_EQ(result.characters_scored, 1199u);
    EXPECT_LT(result.nats_per_character, result.plain_nats_per_character);
    EXPECT_NEAR(result.perplexity, std::exp(result.nats_per_character), 1e-9);
    const nlohmann::json json = result.to_json();
    EXPECT_EQ(json.at("adapted"), true);
    EXPECT_EQ(json.at("nats_per_character").get<double>(), result.nats_per_character);
    EXPECT_EQ(json.at("plain").at("nats_per_character").get<double>(), result.plain_nats_per_character);
    EXPECT_NEAR(json.at("plain").at("bits_per_character").get<double>(), result.plain_nats_per_character / std::log(2.0), 1e-12);
    EXPECT_EQ(json.at("adaptation").at("learning_rate"), 0.03);
    EXPECT_EQ(json.at("adaptation").at("decay"), 0.01);
    EXPECT_EQ(json.at("adaptation").at("window"), 40);
    // The weights now are the adapted ones (what sampling in the text's style starts from).
    EXPECT_FALSE(fixture.model.parameters()[0].value == trained.model.parameters()[0].value);
    // Without adapting, the result says so and carries no plain figures of its own.
    const nlohmann::json plain = evaluate_text(trained.model, trained.vocab, text).to_json();
    EXPECT_EQ(plain.at("adapted"), false);
    EXPECT_FALSE(plain.contains("plain"));
    EXPECT_FALSE(plain.contains("adaptation"));
}

TEST(Eval, AdaptOptionsOutOfRangeAreRefusedByName) {
    const std::pair<AdaptOptions, const char*> refused[] = {
        {{.learning_rate = -0.1}, "--adapt-lr"},          {{.learning_rate = std::nan("")}, "--adapt-lr"},
        {{.learning_rate = INFINITY}, "--adapt-lr"},      {{.decay = -0.01}, "--adapt-decay"},
        {{.decay = 1.5}, "--adapt-decay"},                {{.decay = std::nan("")}, "--adapt-decay"},
        {{.window = 0}, "--adapt-window"},                {{.window = -5}, "--adapt-window"}};
    Fixture fixture;
    const std::vector<TokenId> ids = fixture.vocab.encode(sample_text(100));
    for (const auto& [options, name] : refused) {
        SCOPED_TRACE(name);
        try {
            validate(options);
            ADD_FAILURE() << "accepted " << options.to_json().dump();
        } catch (const UsageError& error) {
            EXPECT_EQ(std::string(error.what()).rfind(name, 0), 0u) << error.what();
        }
        EXPECT_THROW(evaluate_loss_adapting(fixture.model, ids, options), UsageError);
    }
    EXPECT_NO_THROW(validate({.learning_rate = 0, .decay = 1, .window = 1}));
}

TEST(Eval, AdaptingThatDivergesStopsWithAnError) {
    Fixture fixture;
    const std::vector<TokenId> ids = fixture.vocab.encode(repeated_random_text(100, 3));
    // Steps that leave the loss finite but far past a uniform guess's, and steps past float's range.
    for (const double learning_rate : {1e4, 1e30}) {
        SCOPED_TRACE(learning_rate);
        Fixture fresh;
        try {
            evaluate_loss_adapting(fresh.model, ids, {.learning_rate = learning_rate, .decay = 0, .window = 10});
            FAIL() << "went on";
        } catch (const Error& error) {
            const std::string message = error.what();
            for (const char* mention : {"diverged", "in the window after character 10 of 299", "--adapt-lr"})
                EXPECT_NE(message.find(mention), std::string::npos) << mention << " in: " << message;
        }
    }
}

TEST(Eval, AdaptingDoesNotDependOnTheThreadCount) {
    const std::vector<TokenId> ids = Fixture().vocab.encode(repeated_random_text(200, 3));
    const AdaptOptions options{.learning_rate = 0.03, .decay = 0.02, .window = 30};
    AdaptedLoss alone, shared;
    {
        const testing::Threads threads(1);
        Fixture one;
        alone = evaluate_loss_adapting(one.model, ids, options);
    }
    {
        const testing::Threads threads(3);
        Fixture three;
        shared = evaluate_loss_adapting(three.model, ids, options);
    }
    EXPECT_NEAR(shared.adapted.total_nats, alone.adapted.total_nats, 1e-5 * alone.adapted.total_nats);
    EXPECT_NEAR(shared.plain.total_nats, alone.plain.total_nats, 1e-5 * alone.plain.total_nats);
}

}  // namespace
}  // namespace charlm
