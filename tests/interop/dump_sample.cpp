// Writes each step of a charlm sample as JSON, for torch_sample.py to replay in PyTorch step by step: the
// character drawn, the uniform draw that chose it, and the whole distribution it was drawn from.
// Usage: dump_sample CHECKPOINT PROMPT LENGTH SEED OUT_FILE [--temperature T] [--top-k K] [--top-p P] [--greedy]
#include <fstream>
#include <random>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "charlm/checkpoint.hpp"
#include "charlm/error.hpp"
#include "charlm/sample.hpp"
#include "charlm/text.hpp"
#include "charlm/threads.hpp"

int main(int argc, char** argv) {
    if (argc < 6) {
        fmt::print(stderr, "usage: dump_sample CHECKPOINT PROMPT LENGTH SEED OUT_FILE [--temperature T] [--top-k K] "
                           "[--top-p P] [--greedy]\n");
        return 2;
    }
    try {
        charlm::set_thread_count(1);
        charlm::Checkpoint checkpoint = charlm::load_checkpoint(argv[1]);
        const std::u32string prompt = charlm::decode_utf8(argv[2], "PROMPT");
        const auto length = std::stoul(argv[3]);
        const auto seed = std::stoull(argv[4]);
        charlm::SampleOptions options;
        for (int i = 6; i < argc; ++i) {
            const std::string name = argv[i];
            if (name == "--greedy") options.greedy = true;
            else if (i + 1 >= argc) throw charlm::Error(name + " needs a value");
            else if (name == "--temperature") options.temperature = std::stod(argv[++i]);
            else if (name == "--top-k") options.top_k = std::stoi(argv[++i]);
            else if (name == "--top-p") options.top_p = std::stod(argv[++i]);
            else throw charlm::Error("unknown option " + name);
        }
        charlm::validate(options);
        // The library's own Sampler, as generate() and 'charlm sample' drive it.
        charlm::Sampler sampler(*checkpoint.model, checkpoint.vocab, seed);
        sampler.prime(prompt);
        // The sampler's uniform draws, replayed from the same seed as Sampler::next makes them (greedy
        // draws none): were they not the sampler's, PyTorch's replay would choose other characters.
        std::mt19937_64 replay(seed);
        nlohmann::json steps = nlohmann::json::array();
        std::u32string text;
        for (unsigned long i = 0; i < length; ++i) {
            const char32_t character = sampler.next(options);
            const double uniform = options.greedy ? 0.0 : charlm::uniform_draw(replay);
            text += character;
            steps.push_back({{"chosen", checkpoint.vocab.id_of(character)},
                             {"uniform", uniform},
                             {"distribution", sampler.last_draw().distribution()}});
        }
        std::ofstream out(argv[5], std::ios::binary | std::ios::trunc);
        out << nlohmann::json{{"text", charlm::encode_utf8(text)}, {"steps", steps}}.dump() << "\n";
        if (!out.flush()) throw charlm::Error(fmt::format("{}: cannot write the steps", argv[5]));
    } catch (const std::exception& error) {
        fmt::print(stderr, "dump_sample: error: {}\n", error.what());
        return 1;
    }
    return 0;
}
