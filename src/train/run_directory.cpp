// The names of a run directory's files that take a computation: kept checkpoints' and stale temporaries'.
#include "run_directory.hpp"

#include <regex>

#include <fmt/format.h>

#include "charlm/atomic_file.hpp"
#include "charlm/train.hpp"

namespace charlm {

std::string kept_checkpoint_name(std::int64_t step, double validation_loss) {
    return fmt::format("step-{:06d}-val-{:.4f}.safetensors", step, validation_loss);
}

namespace run_files {

bool is_kept_checkpoint_name(const std::string& file_name) {
    static const std::regex kept_name(R"(step-\d{6,}-val-\d+\.\d{4}\.safetensors)");
    return std::regex_match(file_name, kept_name);
}

bool is_stale_temporary(const std::string& file_name) {
    const std::optional<std::string> target = file_of_temporary(file_name);
    if (!target) return false;
    for (const char* written : {kLastCheckpoint, kBestCheckpoint, kCorpusCopy, kValidationCopy, kCorpusIds, kValidationIds})
        if (*target == written) return true;
    return is_kept_checkpoint_name(*target);
}

}  // namespace run_files

}  // namespace charlm
