// --init-from: a trained checkpoint read against the options given, and the model a run starts from it with.
#include "init_from.hpp"

#include <algorithm>
#include <random>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "charlm/display.hpp"
#include "charlm/error.hpp"

namespace charlm {

ModelConfig with_regularization_of(ModelConfig shape, const ModelConfig& rates) {
    shape.take_regularization(rates);
    return shape;
}

Checkpoint load_checkpoint_to_start_from(TrainOptions& options) {
    TrainOptions::InitFrom& init_from = *options.init_from;
    Checkpoint checkpoint = load_checkpoint(init_from.checkpoint);
    const ModelConfig& given = options.model;
    const ModelConfig& trained = checkpoint.config;
    struct ShapeOption {
        const char* flag;
        std::string given, trained;
    };
    const ShapeOption shape[] = {
        {"--cell", to_string(given.cell), to_string(trained.cell)},
        {"--layers", std::to_string(given.layers), std::to_string(trained.layers)},
        {"--hidden", std::to_string(given.hidden_size), std::to_string(trained.hidden_size)},
        {"--embed", std::to_string(given.embed_size), std::to_string(trained.embed_size)},
    };
    for (const ShapeOption& option : shape)
        if (option.given != option.trained && std::ranges::find(init_from.given, option.flag) != init_from.given.end())
            throw UsageError(fmt::format("{} {} contradicts --init-from {}, whose model has {} {}; the run takes the model's shape "
                                         "from its checkpoint: leave {} out",
                                         option.flag, option.given, init_from.checkpoint.string(), option.flag, option.trained,
                                         option.flag));
    options.model = with_regularization_of(trained, options.model);
    init_from.step = checkpoint.training.step;
    return checkpoint;
}

std::string describe_start(const TrainOptions::InitFrom& init_from, const Vocab& trained, const Vocab& vocab) {
    const std::string start =
        fmt::format("starting from {} (step {}) with a fresh optimizer", init_from.checkpoint.string(), init_from.step);
    const std::size_t added = vocab.size() - trained.size();
    if (added == 0) return fmt::format("{}; the text adds no characters to its {}", start, trained.size());
    constexpr std::size_t kMostNamed = 8;
    std::vector<std::string> named;
    for (std::size_t id = trained.size(); id < vocab.size() && named.size() < kMostNamed; ++id)
        named.push_back(describe_code_point(vocab.code_point_of(static_cast<TokenId>(id))));
    return fmt::format("{}; the text adds {} character{} to its {}: {}{}", start, added, added == 1 ? "" : "s", trained.size(),
                       fmt::join(named, ", "), added > named.size() ? fmt::format(" and {} more", added - named.size()) : "");
}


Model<float> model_with_new_characters(const Model<float>& trained, int vocab_size, const ModelConfig& rates, std::mt19937_64& rng) {
    ModelConfig config = with_regularization_of(trained.config(), rates);
    if (vocab_size < config.vocab_size)
        throw Error(fmt::format("a model of {} characters cannot start from one of {}", vocab_size, config.vocab_size));
    config.vocab_size = vocab_size;
    Model<float> model(config);
    model.initialize(rng);  // every weight drawn as a fresh run's, so that the new rows are drawn so too
    // The trained weights over them: whole, or the trained characters' rows of the embedding and the
    // head's weight and the first columns of the head's bias (the new characters' ids come last).
    for (std::size_t i = 0; i < model.parameters().size(); ++i) {
        const Matrix<float>& from = trained.parameters()[i].value;
        model.parameters()[i].value.topLeftCorner(from.rows(), from.cols()) = from;
    }
    return model;
}

}  // namespace charlm
