// The models charlm serve answers for: each checkpoint with its name and its decoder, and which one a
// request's "model" picks, as http.cpp's handlers read them.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "charlm/checkpoint.hpp"
#include "charlm/decode.hpp"
#include "charlm/server.hpp"
#include "serve/api.hpp"

namespace charlm {

// What the handlers serve: the model and its decoder, from Server::load() on. Handlers read them
// without a lock once `ready` is set: nothing changes them after that until stop(), which fails the
// decoder's requests in flight but keeps the decoder for the answers still being written.
struct ServedModel {
    explicit ServedModel(const ServerOptions& server_options) : options(server_options) {}

    const ServerOptions& options;
    std::optional<Checkpoint> checkpoint;
    std::string name;
    std::unique_ptr<BatchDecoder> decoder;
    std::atomic<bool> ready{false};

    void check_ready() const {
        if (!ready) throw RequestRefusal{503, "the model is still loading; try again shortly", "", "unavailable_error"};
    }
};

// The options.models models of a server, loaded one after another while it already answers. Their
// places exist from the start, so that a handler may read the ones loaded while the next loads.
class ServedModels {
public:
    explicit ServedModels(const ServerOptions& options);

    // The next model; its decoder gets its share of options.threads (see threads_of).
    void load(Checkpoint checkpoint, std::string name);
    bool all_loaded() const { return loaded_ == models_.size(); }
    // The loaded models, in the order they were given.
    std::vector<const ServedModel*> loaded() const;
    // 503 until every model is loaded.
    void check_loaded() const;
    // The model a request names ("" where it names none): 503 until every model is loaded, then 404
    // for a name not served and 400 for none where there are several, each naming the choices.
    ServedModel& pick(const std::string& requested);
    HealthAnswer health() const;
    ModelsAnswer models_answer() const;
    // Ends every decoder's requests in flight (they fail with a message).
    void stop();

    // The compute threads model `index` of `count` decodes with: `threads` (0: one per core) split
    // evenly, the first ones taking what does not divide, at least one each.
    static int threads_of(int threads, std::size_t index, std::size_t count);

private:
    const ServerOptions& options_;
    std::vector<std::unique_ptr<ServedModel>> models_;
    std::atomic<std::size_t> loaded_{0};
};

}  // namespace charlm
