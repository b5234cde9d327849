// Several models served side by side: each its own decoder, with its share of the threads (see served_models.hpp).
#include "serve/served_models.hpp"

#include <algorithm>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace charlm {

ServedModels::ServedModels(const ServerOptions& options) : options_(options) {
    for (std::size_t i = 0; i < std::max<std::size_t>(options.models, 1); ++i) models_.push_back(std::make_unique<ServedModel>(options));
}

// Each model decodes on its own thread with its own share of the cores, rather than every model using
// every thread and taking turns at the steps: no model waits for another's step, and no two OpenMP teams
// contend for the same cores. Measured on 2 busy cores (docs/serve.md), turns split the steps exactly
// evenly but made a third of the characters; a share each made 2-3x more. The cost: a model busy
// alone keeps only its share while the others idle.
int ServedModels::threads_of(int threads, std::size_t index, std::size_t count) {
    const int total = threads > 0 ? threads : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    const int models = static_cast<int>(count);
    const int share = total / models + (static_cast<int>(index) < total % models ? 1 : 0);
    return std::max(1, share);
}

void ServedModels::load(Checkpoint checkpoint, std::string name) {
    const std::size_t index = loaded_;
    if (index >= models_.size()) throw Error(fmt::format("the server was set up for {} models; {} is one more", models_.size(), name));
    ServedModel& served = *models_[index];
    served.checkpoint = std::move(checkpoint);
    served.name = std::move(name);
    // One model alone keeps the thread count as given (0: OpenMP's one per core), as before several could be served.
    const int threads = models_.size() == 1 ? options_.threads : threads_of(options_.threads, index, models_.size());
    served.decoder = std::make_unique<BatchDecoder>(*served.checkpoint->model, served.checkpoint->vocab,
                                                    DecoderOptions{.slots = options_.slots, .queued = options_.queued, .threads = threads});
    served.ready = true;
    ++loaded_;
}

std::vector<const ServedModel*> ServedModels::loaded() const {
    std::vector<const ServedModel*> models;
    for (std::size_t i = 0; i < loaded_; ++i) models.push_back(models_[i].get());
    return models;
}

void ServedModels::check_loaded() const {
    if (all_loaded()) return;
    if (models_.size() == 1) models_[0]->check_ready();
    throw RequestRefusal{503, "the models are still loading; try again shortly", "", "unavailable_error"};
}

ServedModel& ServedModels::pick(const std::string& requested) {
    check_loaded();
    std::vector<std::string> names;
    for (const auto& model : models_) names.push_back(model->name);
    if (requested.empty()) {
        if (models_.size() == 1) return *models_[0];
        throw RequestRefusal{400, fmt::format("model is required: this server serves {}", fmt::join(names, ", ")), "model"};
    }
    for (const auto& model : models_)
        if (model->name == requested) return *model;
    throw RequestRefusal{404, fmt::format("no model \"{}\" here; this server serves {}", requested, fmt::join(names, ", ")), "model"};
}

HealthAnswer ServedModels::health() const {
    HealthAnswer answer;
    answer.loading = !all_loaded();
    for (const ServedModel* model : loaded()) answer.models.push_back({model->name, model->decoder->load()});
    return answer;
}

ModelsAnswer ServedModels::models_answer() const {
    ModelsAnswer answer{{}, options_};
    for (const ServedModel* model : loaded()) answer.models.push_back({*model->checkpoint, model->name});
    return answer;
}

void ServedModels::stop() {
    for (std::size_t i = 0; i < loaded_; ++i) models_[i]->decoder->stop();
}

}  // namespace charlm
