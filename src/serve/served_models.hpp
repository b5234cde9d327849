// The models charlm serve answers for: each checkpoint with its name and its decoder, as http.cpp's
// handlers read them.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "charlm/checkpoint.hpp"
#include "charlm/decode.hpp"
#include "charlm/server.hpp"
#include "serve/api.hpp"

namespace charlm {

// What the handlers serve: the model and its decoder, from Server::load() on. Handlers read them
// without a lock once `ready` is set: nothing changes them after that until stop(), which first stops
// the listener's handlers.
struct ServedModel {
    explicit ServedModel(const ServerOptions& server_options) : options(server_options) {}

    const ServerOptions& options;
    std::optional<Checkpoint> checkpoint;
    std::string name;
    std::unique_ptr<BatchDecoder> decoder;
    std::atomic<bool> ready{false};
    std::atomic<std::uint64_t> next_id{1};

    void check_ready() const {
        if (!ready) throw RequestRefusal{503, "the model is still loading; try again shortly", "", "unavailable_error"};
    }
};

}  // namespace charlm
