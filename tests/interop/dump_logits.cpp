// Writes a checkpoint's logits for a text as raw float32, for torch_interop.py to compare with PyTorch's.
// Usage: dump_logits CHECKPOINT TEXT_FILE OUT_FILE   -> OUT_FILE holds T x V little-endian float32, row-major.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "charlm/checkpoint.hpp"
#include "charlm/error.hpp"
#include "charlm/text.hpp"
#include "charlm/threads.hpp"

int main(int argc, char** argv) {
    if (argc != 4) {
        fmt::print(stderr, "usage: dump_logits CHECKPOINT TEXT_FILE OUT_FILE\n");
        return 2;
    }
    try {
        charlm::set_thread_count(1);
        charlm::Checkpoint checkpoint = charlm::load_checkpoint(argv[1]);
        const std::vector<charlm::TokenId> ids = checkpoint.vocab.encode(charlm::read_text_file(argv[2]));
        auto& model = *checkpoint.model;
        // The whole text as one stream from the zero state: exactly what a single PyTorch pass computes.
        auto state = model.initial_state(1);
        model.forward(ids, static_cast<int>(ids.size()), 1, state);
        const auto& logits = model.logits();  // T x V, row-major
        std::ofstream out(argv[3], std::ios::binary | std::ios::trunc);
        out.write(reinterpret_cast<const char*>(logits.data()), static_cast<std::streamsize>(logits.size() * sizeof(float)));
        if (!out.flush()) throw charlm::Error(fmt::format("{}: cannot write the logits", argv[3]));
        fmt::print("{} {}\n", logits.rows(), logits.cols());
    } catch (const charlm::Error& error) {
        fmt::print(stderr, "dump_logits: error: {}\n", error.what());
        return 1;
    }
    return 0;
}
