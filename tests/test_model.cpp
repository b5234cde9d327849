// Checks model.cpp: whole-network gradients (embedding, stacked LSTM, head and loss) and that it can learn.
#include <cstring>

#include <gtest/gtest.h>

#include "charlm/model.hpp"
#include "charlm/optim.hpp"
#include "test_helpers.hpp"

namespace charlm {
namespace {

using testing::expect_gradient_matches;

ModelConfig small_config(int layers) {
    ModelConfig config;
    config.vocab_size = 7;
    config.embed_size = 3;
    config.hidden_size = 5;
    config.layers = layers;
    return config;
}

// Steps x batch windows of ids, with one ignored target to check that masking is differentiated too.
struct Window {
    int steps = 4, batch = 2;
    std::vector<TokenId> inputs{0, 3, 6, 2, 5, 1, 4, 4};
    std::vector<TokenId> targets{3, 6, 2, kIgnoreTarget, 1, 4, 4, 0};
};

// A window of 16 rows, at least twice the vocabulary: the first layer looks its projection up in a table.
Window long_window() {
    Window window;
    window.steps = 8;
    window.inputs = {0, 3, 6, 2, 5, 1, 4, 4, 1, 1, 0, 6, 2, 3, 3, 5};
    window.targets = {3, 6, 2, kIgnoreTarget, 1, 4, 4, 0, 1, 0, 6, 2, 3, 3, 5, 4};
    return window;
}

// Regularization's rates for a gradient check; masks are drawn wherever one is above 0.
struct Rates {
    double dropout = 0, embed_dropout = 0, weight_drop = 0;
    DropoutMask mask = DropoutMask::locked;
};

void check_all_gradients(int layers, CellType cell = CellType::lstm, const Rates& rates = {}, const Window& window = {}) {
    ModelConfig config = small_config(layers);
    config.cell = cell;
    config.dropout = rates.dropout;
    config.embed_dropout = rates.embed_dropout;
    config.weight_drop = rates.weight_drop;
    config.dropout_mask = rates.mask;
    Model<double> model(config);
    std::mt19937_64 rng(3);
    model.initialize(rng);
    // A carried state that is not zero, as in the middle of training.
    ModelState<double> carried = model.initial_state(window.batch);
    for (auto& h : carried.hidden) testing::fill_random(h, rng);
    for (auto& c : carried.cell) testing::fill_random(c, rng);

    // Dropout draws from this generator; restarting it for each evaluation keeps the masks fixed.
    std::mt19937_64 dropout_rng;
    model.set_dropout_generator(model.regularized() ? &dropout_rng : nullptr);
    auto loss = [&] {
        dropout_rng.seed(99);
        ModelState<double> state = carried;
        model.forward(window.inputs, window.steps, window.batch, state);
        return model.loss(window.targets).mean();
    };
    loss();
    model.zero_gradients();
    model.backward();
    for (auto& parameter : model.parameters()) {
        const Matrix<double> analytic = parameter.gradient;
        expect_gradient_matches(parameter.name, parameter.value, analytic, loss);
    }
}

TEST(Model, OneLayerGradientsMatchFiniteDifferences) { check_all_gradients(1); }

TEST(Model, ACheckpointsConfigThatDoesNotSayHowMasksAreKeyedKeyedThemLocally) {
    // Runs before DropoutKeys::stream recorded nothing: they resume keyed by place in each process's block.
    ModelConfig config;
    config.vocab_size = 10;
    EXPECT_EQ(config.dropout_keys, DropoutKeys::stream) << "a new run's masks are keyed by stream";
    nlohmann::json json = config.to_json();
    EXPECT_EQ(json.at("dropout_keys"), "stream");
    EXPECT_EQ(ModelConfig::from_json(json).dropout_keys, DropoutKeys::stream);
    json.erase("dropout_keys");
    EXPECT_EQ(ModelConfig::from_json(json).dropout_keys, DropoutKeys::local);
    json["dropout_keys"] = "sideways";
    EXPECT_THROW(ModelConfig::from_json(json), Error);
}

TEST(Model, LossFiguresAreThePerplexityAndBitsOfTheNats) {
    EXPECT_DOUBLE_EQ(perplexity_of(std::log(3.0)), 3.0);
    EXPECT_DOUBLE_EQ(bits_per_character_of(std::log(2.0)), 1.0);
    EXPECT_DOUBLE_EQ(bits_per_character_of(std::log(256.0)), 8.0);
}

TEST(Model, AWeightsFreezePutsBackWhatWasThereBefore) {
    ModelConfig config = small_config(1);
    config.vocab_size = 5;
    Model<float> model(config);
    {
        const WeightsFreeze<float> outer(model);
        EXPECT_TRUE(model.weights_frozen());
        { const WeightsFreeze<float> inner(model); }
        EXPECT_TRUE(model.weights_frozen()) << "an inner freeze must not thaw an outer one";
    }
    EXPECT_FALSE(model.weights_frozen());
}
// A model of `cell` with sizes off every SIMD width, so that the panels' edges are used, drawn from rng.
Model<float> odd_sized_model(CellType cell, int hidden_size, int layers, std::mt19937_64& rng) {
    ModelConfig config;
    config.cell = cell;
    config.vocab_size = 29;
    config.embed_size = 11;
    config.hidden_size = hidden_size;
    config.layers = layers;
    Model<float> model(config);
    model.initialize(rng);
    return model;
}

// Serving decodes requests as the rows of one batch: each row's logits and state must come out the
// same bits whatever rows stand beside it, and the same as sampling's own batch of one.
TEST(Model, RowsComputedAsIfAloneMatchABatchOfOneToTheBit) {
    for (CellType cell : {CellType::lstm, CellType::gru, CellType::rnn}) {
        std::mt19937_64 rng(7);
        Model<float> model = odd_sized_model(cell, 37, 3, rng);
        const ModelConfig& config = model.config();
        const WeightsFreeze<float> freeze(model);
        std::normal_distribution<float> normal(0.0f, 0.5f);
        for (int batch : {1, 2, 3, 4, 5, 7, 9, 16, 17, 33}) {
            SCOPED_TRACE(to_string(cell) + ", batch " + std::to_string(batch));
            ModelState<float> state = model.initial_state(batch);
            for (auto& h : state.hidden) h = h.unaryExpr([&](float) { return normal(rng); });
            for (auto& c : state.cell) c = c.unaryExpr([&](float) { return normal(rng); });
            std::vector<TokenId> inputs(static_cast<std::size_t>(batch));
            for (auto& id : inputs) id = static_cast<TokenId>(rng() % static_cast<std::uint64_t>(config.vocab_size));
            const ModelState<float> before = state;
            model.set_rows_as_if_alone(true);
            model.forward(inputs, 1, batch, state);
            const Matrix<float> logits = model.logits();
            model.set_rows_as_if_alone(false);
            for (int row = 0; row < batch; ++row) {
                ModelState<float> alone = model.initial_state(1);
                for (std::size_t l = 0; l < alone.hidden.size(); ++l) alone.hidden[l] = before.hidden[l].row(row);
                for (std::size_t l = 0; l < alone.cell.size(); ++l) alone.cell[l] = before.cell[l].row(row);
                model.forward(std::span<const TokenId>(&inputs[static_cast<std::size_t>(row)], 1), 1, 1, alone);
                ASSERT_EQ(0, std::memcmp(model.logits().data(), logits.row(row).data(), sizeof(float) * static_cast<std::size_t>(config.vocab_size)))
                    << "row " << row << "'s logits differ from its batch of one";
                for (std::size_t l = 0; l < alone.hidden.size(); ++l)
                    ASSERT_TRUE((alone.hidden[l].array() == state.hidden[l].row(row).array()).all()) << "row " << row << ", layer " << l;
                for (std::size_t l = 0; l < alone.cell.size(); ++l)
                    ASSERT_TRUE((alone.cell[l].array() == state.cell[l].row(row).array()).all()) << "row " << row << ", layer " << l;
            }
        }
    }
}

TEST(Model, ADecodingStepGivesTheSameBitsWhateverTheThreads) {
    // One step against frozen weights runs in one team (all layers and the head), split by rows and by
    // the weights' panels: a sampled text must not depend on the thread count.
    for (CellType cell : {CellType::lstm, CellType::gru, CellType::rnn})
        for (Precision precision : {Precision::fp32, Precision::bf16})
            for (int batch : {5, 16}) {
                SCOPED_TRACE(to_string(cell) + (precision == Precision::bf16 ? ", bf16" : ", fp32") + ", batch " + std::to_string(batch));
                std::mt19937_64 rng(3);
                Model<float> model = odd_sized_model(cell, 97, 2, rng);  // large enough that the step takes a team
                model.set_precision(precision);
                const WeightsFreeze<float> freeze(model);
                model.set_rows_as_if_alone(batch > 8);  // as the server does; a few rows without it too
                std::vector<Matrix<float>> first_logits;
                for (int threads : {1, 2, 3}) {
                    testing::Threads scope(threads);
                    ModelState<float> state = model.initial_state(batch);
                    for (int step = 0; step < 3; ++step) {
                        std::vector<TokenId> inputs(static_cast<std::size_t>(batch));
                        for (std::size_t i = 0; i < inputs.size(); ++i) inputs[i] = static_cast<TokenId>((i * 5 + step * 3) % 29);
                        model.forward(inputs, 1, batch, state);
                        if (threads == 1) first_logits.push_back(model.logits());
                        else
                            ASSERT_TRUE((model.logits().array() == first_logits[static_cast<std::size_t>(step)].array()).all())
                                << "step " << step << ": the logits on " << threads << " threads differ from one thread's";
                    }
                }
            }
}

TEST(Model, RowsAsIfAloneRefuseAWindowOrWeightsThatMayChange) {
    ModelConfig config = small_config(2);
    Model<float> model(config);
    std::mt19937_64 rng(1);
    model.initialize(rng);
    model.set_rows_as_if_alone(true);
    ModelState<float> state = model.initial_state(2);
    const std::vector<TokenId> inputs{1, 2, 3, 4};
    EXPECT_THROW(model.forward(std::span<const TokenId>(inputs).first(2), 1, 2, state), Error) << "weights not frozen";
    const WeightsFreeze<float> freeze(model);
    EXPECT_THROW(model.forward(inputs, 2, 2, state), Error) << "a window of two steps";
    EXPECT_NO_THROW(model.forward(std::span<const TokenId>(inputs).first(2), 1, 2, state));
}

TEST(Model, TwoLayerStackGradientsMatchFiniteDifferences) { check_all_gradients(2); }
TEST(Model, GruStackGradientsMatchFiniteDifferences) { check_all_gradients(2, CellType::gru); }
TEST(Model, RnnStackGradientsMatchFiniteDifferences) { check_all_gradients(2, CellType::rnn); }
TEST(Model, GradientsWithDropoutMatchFiniteDifferences) {
    check_all_gradients(3, CellType::lstm, {.dropout = 0.4, .mask = DropoutMask::step});
    check_all_gradients(3, CellType::lstm, {.dropout = 0.4, .mask = DropoutMask::locked});
}
TEST(Model, GradientsWithDropoutOfOneLayerMatchFiniteDifferences) {  // its output, before the head
    check_all_gradients(1, CellType::lstm, {.dropout = 0.4});
}
TEST(Model, GradientsWithEmbeddingDropoutMatchFiniteDifferences) {
    for (DropoutMask mask : {DropoutMask::locked, DropoutMask::step})
        check_all_gradients(2, CellType::lstm, {.embed_dropout = 0.4, .mask = mask}, long_window());
}
TEST(Model, GradientsWithWeightDropMatchFiniteDifferences) {
    for (CellType cell : {CellType::lstm, CellType::gru, CellType::rnn}) check_all_gradients(2, cell, {.weight_drop = 0.4});
}
TEST(Model, GradientsWithEveryMaskAtOnceMatchFiniteDifferences) {
    for (CellType cell : {CellType::lstm, CellType::gru})
        check_all_gradients(2, cell, {.dropout = 0.3, .embed_dropout = 0.2, .weight_drop = 0.3}, long_window());
}
TEST(Model, GradientsThroughTheFirstLayersInputTableMatchFiniteDifferences) {
    for (CellType cell : {CellType::lstm, CellType::gru, CellType::rnn}) check_all_gradients(2, cell, {}, long_window());
}

TEST(Model, EveryKindOfDropoutActsOnlyWithAGenerator) {
    for (Rates rates : {Rates{.dropout = 0.5}, Rates{.embed_dropout = 0.5}, Rates{.weight_drop = 0.5}}) {
        ModelConfig config = small_config(1);
        config.dropout = rates.dropout;
        config.embed_dropout = rates.embed_dropout;
        config.weight_drop = rates.weight_drop;
        Model<float> model(config);
        std::mt19937_64 rng(2);
        model.initialize(rng);
        std::vector<TokenId> inputs{1, 2, 3, 4};
        auto logits = [&](std::mt19937_64* generator) {
            model.set_dropout_generator(generator);
            ModelState<float> state = model.initial_state(1);
            model.forward(inputs, 4, 1, state);
            return Matrix<float>(model.logits());
        };
        const Matrix<float> evaluation = logits(nullptr);
        EXPECT_EQ(logits(nullptr), evaluation);
        const Matrix<float> first = logits(&rng);
        EXPECT_NE(first, evaluation);
        EXPECT_NE(logits(&rng), first) << "each window draws new masks";
    }
}

// Locked dropout drops the same units of a stream at every step of a window: with the embedding's
// dropout at 0.5 and one character repeated, every step of a stream sees the same input (its state
// apart), where masks drawn per step differ between steps.
TEST(Model, LockedMasksAreSharedByEveryStepOfAStream) {
    for (DropoutMask mask : {DropoutMask::locked, DropoutMask::step}) {
        ModelConfig config = small_config(1);
        config.cell = CellType::rnn;
        config.embed_size = 16;
        config.embed_dropout = 0.5;
        config.dropout_mask = mask;
        Model<double> model(config);
        std::mt19937_64 rng(4);
        model.initialize(rng);
        // With W_hh zero, a step's output depends on its input alone.
        model.find_parameter("rnn.weight_hh_l0")->value.setZero();
        const int steps = 6, batch = 2;
        std::vector<TokenId> inputs(steps * batch, 3);
        model.set_dropout_generator(&rng);
        ModelState<double> state = model.initial_state(batch);
        model.forward(inputs, steps, batch, state);
        const Matrix<double>& logits = model.logits();
        bool steps_alike = true;
        for (int t = 1; t < steps; ++t)
            for (int b = 0; b < batch; ++b) steps_alike = steps_alike && logits.row(t * batch + b) == logits.row(b);
        EXPECT_EQ(steps_alike, mask == DropoutMask::locked) << to_string(mask);
        EXPECT_NE(logits.row(0), logits.row(1)) << "each stream has a mask of its own";
    }
}

TEST(Model, GruAndRnnParametersHavePyTorchShapes) {
    ModelConfig config = small_config(2);
    config.cell = CellType::gru;
    EXPECT_EQ(Model<float>(config).find_parameter("rnn.weight_ih_l0")->shape, (std::vector<std::int64_t>{15, 3}));
    config.cell = CellType::rnn;
    EXPECT_EQ(Model<float>(config).find_parameter("rnn.weight_hh_l1")->shape, (std::vector<std::int64_t>{5, 5}));
    EXPECT_EQ(parse_cell_type("gru"), CellType::gru);
    EXPECT_THROW(parse_cell_type("transformer"), Error);
}

TEST(Model, ParametersFollowPyTorchNamesAndShapes) {
    Model<float> model(small_config(2));
    std::vector<std::string> names;
    for (const auto& parameter : model.parameters()) names.push_back(parameter.name);
    EXPECT_EQ(names, (std::vector<std::string>{"embedding.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0",
                                               "rnn.bias_hh_l0", "rnn.weight_ih_l1", "rnn.weight_hh_l1", "rnn.bias_ih_l1",
                                               "rnn.bias_hh_l1", "head.weight", "head.bias"}));
    EXPECT_EQ(model.find_parameter("rnn.weight_ih_l0")->shape, (std::vector<std::int64_t>{20, 3}));
    EXPECT_EQ(model.find_parameter("rnn.weight_hh_l1")->shape, (std::vector<std::int64_t>{20, 5}));
    EXPECT_EQ(model.find_parameter("head.bias")->shape, (std::vector<std::int64_t>{7}));
    std::size_t count = 0;
    for (const auto& parameter : model.parameters()) count += static_cast<std::size_t>(parameter.value.size());
    EXPECT_EQ(count, model.config().parameter_count());
}

TEST(Model, LossOfUniformLogitsIsLogVocabularySize) {
    Model<float> model(small_config(1));  // all-zero parameters give uniform predictions
    ModelState<float> state = model.initial_state(1);
    std::vector<TokenId> inputs{1, 2}, targets{2, 3};
    model.forward(inputs, 2, 1, state);
    EXPECT_NEAR(model.loss(targets).mean(), std::log(7.0), 1e-6);
}

TEST(Model, OverfitsATinyCorpus) {
    // 40 characters seen again and again: the model must memorize them.
    const std::vector<TokenId> text = {0, 1, 2, 3, 4, 5, 6, 0, 2, 4, 6, 1, 3, 5, 0, 6, 5, 4, 3, 2,
                                       1, 0, 3, 3, 6, 6, 1, 2, 5, 4, 0, 0, 2, 1, 6, 3, 4, 5, 2, 1};
    ModelConfig config = small_config(2);
    config.hidden_size = 48;
    config.embed_size = 8;
    Model<float> model(config);
    std::mt19937_64 rng(1);
    model.initialize(rng);
    Adam optimizer(model.parameters());
    std::vector<TokenId> inputs(text.begin(), text.end() - 1), targets(text.begin() + 1, text.end());
    const int steps = static_cast<int>(inputs.size());
    double loss = 0;
    for (int step = 0; step < 400; ++step) {
        ModelState<float> state = model.initial_state(1);
        model.zero_gradients();
        model.forward(inputs, steps, 1, state);
        loss = model.loss(targets).mean();
        model.backward();
        clip_gradient_norm(model.parameters(), 5.0);
        ASSERT_TRUE(optimizer.step(model.parameters(), 1e-2));
    }
    EXPECT_LT(loss, 0.05);
}

TEST(Model, ConfigRejectsNonsenseSizes) {
    ModelConfig config = small_config(1);
    config.hidden_size = 0;
    EXPECT_THROW(config.validate(), Error);
    config.hidden_size = -3;
    EXPECT_THROW(config.validate(), Error);
    config = small_config(1);
    config.layers = 1000;
    EXPECT_THROW(config.validate(), Error);
    config = small_config(1);
    config.hidden_size = 16384;
    config.layers = 64;
    EXPECT_THROW(config.validate(), Error);  // billions of parameters
    config = small_config(1);
    config.dropout = 1.0;
    EXPECT_THROW(config.validate(), Error);
    for (double rate : {-0.1, 1.0, std::nan("")}) {
        config = small_config(1);
        config.embed_dropout = rate;
        EXPECT_THROW(config.validate(), UsageError) << rate;
        config = small_config(1);
        config.weight_drop = rate;
        EXPECT_THROW(config.validate(), UsageError) << rate;
    }
    EXPECT_THROW(parse_dropout_mask("gaussian"), UsageError);
}

// Sizes given on the command line are the user's mistake (exit 2); the same sizes read from a file are
// a bad file (exit 1). The CLI tells them apart only by the exception's type.
TEST(Model, BadSizesAreUsageErrorsButABadConfigFromAFileIsNot) {
    ModelConfig config = small_config(1);
    config.hidden_size = 0;
    EXPECT_THROW(config.validate(), UsageError);
    config = small_config(1);
    config.dropout = 1.0;
    EXPECT_THROW(config.validate(), UsageError);
    EXPECT_THROW(parse_cell_type("transformer"), UsageError);

    auto expect_plain_error = [](const nlohmann::json& json, const std::string& fragment) {
        try {
            ModelConfig::from_json(json);
            ADD_FAILURE() << "accepted " << json.dump();
        } catch (const UsageError& error) {
            ADD_FAILURE() << "a config read from a file is not a usage error: " << error.what();
        } catch (const Error& error) {
            EXPECT_NE(std::string(error.what()).find(fragment), std::string::npos) << error.what();
        }
    };
    nlohmann::json json = small_config(1).to_json();
    json["hidden_size"] = 0;
    expect_plain_error(json, "hidden size must be between 1 and 16384, not 0");
    json = small_config(1).to_json();
    json["cell"] = "transformer";
    expect_plain_error(json, "unknown cell type 'transformer'");
    json = small_config(1).to_json();
    json["dropout_mask"] = "gaussian";
    expect_plain_error(json, "unknown dropout mask 'gaussian'");
    json = small_config(1).to_json();
    json["weight_drop"] = 1.5;
    expect_plain_error(json, "weight drop (--weight-drop) must be at least 0 and below 1, not 1.5");
}

// A checkpoint from before the choice of masks drew them per step, and goes on doing so.
TEST(Model, AConfigWithoutAMaskKindDrawsOnePerStep) {
    nlohmann::json json = small_config(2).to_json();
    json.erase("dropout_mask");
    json.erase("embed_dropout");
    json.erase("weight_drop");
    const ModelConfig config = ModelConfig::from_json(json);
    EXPECT_EQ(config.dropout_mask, DropoutMask::step);
    EXPECT_EQ(config.weight_drop, 0.0);
    EXPECT_EQ(ModelConfig::from_json(small_config(2).to_json()).dropout_mask, DropoutMask::locked);
}

}  // namespace
}  // namespace charlm
