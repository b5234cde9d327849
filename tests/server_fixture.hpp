// What the server's tests share (test_server.cpp, test_connection.cpp, test_serve_models.cpp): a small
// model's checkpoint, charlm sample's text from it, and a server on a free port of 127.0.0.1 serving such models.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "charlm/checkpoint.hpp"
#include "charlm/sample.hpp"
#include "charlm/server.hpp"
#include "charlm/utf8.hpp"
#include "text_helpers.hpp"

namespace charlm::testing {

inline const std::u32string kServedAlphabet = U"abcdefgh ijklmnop\nqrstuvwxyz.,;'ABC";

// A 2x32 LSTM over kServedAlphabet, initialized from `weights`: two of other weights answer apart.
inline Checkpoint small_checkpoint(std::uint64_t weights = 3) {
    Checkpoint checkpoint;
    checkpoint.vocab = vocab_of_text(kServedAlphabet);
    checkpoint.config.vocab_size = static_cast<int>(checkpoint.vocab.size());
    checkpoint.config.embed_size = 8;
    checkpoint.config.hidden_size = 32;
    checkpoint.config.layers = 2;
    checkpoint.model.emplace(checkpoint.config);
    std::mt19937_64 rng(weights);
    checkpoint.model->initialize(rng);
    return checkpoint;
}

// What charlm sample prints for these, from small_checkpoint(weights).
inline std::string sample_text(const std::string& prompt, std::size_t length, std::uint64_t seed, double temperature = 1.0,
                               std::uint64_t weights = 3) {
    Checkpoint checkpoint = small_checkpoint(weights);
    SampleOptions options;
    options.temperature = temperature;
    std::string text;
    generate(*checkpoint.model, checkpoint.vocab, decode_utf8(prompt, "prompt"), length, options, seed,
             [&](char32_t c) { text += encode_utf8(c); });
    return text;
}

// A server on a free port of 127.0.0.1 (2 threads unless `options` says) for `names.size()` models of
// weights 3, 4, ..., loaded in that order unless `load` is false (then load_next() loads them).
class ServerOnSmallModels {
public:
    explicit ServerOnSmallModels(ServerOptions options = {}, std::vector<std::string> names = {"small.safetensors"}, bool load = true)
        : names_(std::move(names)) {
        options.port = 0;
        options.threads = options.threads ? options.threads : 2;
        options.models = names_.size();
        server_ = std::make_unique<Server>(options);
        server_->start();
        if (load)
            while (loaded_ < names_.size()) load_next();
    }
    void load_next() {
        server_->load(small_checkpoint(3 + loaded_), names_[loaded_]);
        ++loaded_;
    }
    Server& server() const { return *server_; }
    int port() const { return server_->port(); }

private:
    std::vector<std::string> names_;
    std::size_t loaded_ = 0;
    std::unique_ptr<Server> server_;
};

}  // namespace charlm::testing
