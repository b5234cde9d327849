// The names of a run directory's files that take a computation (kept checkpoints', stale temporaries'), and the folders a failed run removes.
#include "run_directory.hpp"

#include <regex>

#include <fmt/format.h>

#include "charlm/atomic_file.hpp"
#include "charlm/error.hpp"
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

void CreatedDirectories::create(const std::filesystem::path& run_directory) {
    run_directory_ = run_directory;
    std::error_code error;
    for (std::filesystem::path folder = run_directory; !folder.empty() && !std::filesystem::exists(folder, error);
         folder = folder.parent_path()) {
        created_.insert(created_.begin(), folder);
        if (folder == folder.parent_path()) break;
    }
    // The nearest that is there must be a folder: a file there (--out corpus.txt) is a name mistaken.
    const std::filesystem::path there = created_.empty() ? run_directory : created_.front().parent_path();
    if (!there.empty() && std::filesystem::exists(there, error) && !std::filesystem::is_directory(there, error))
        throw Error(fmt::format("{}: is a file, not a folder{}; choose another --out", there.string(),
                                there == run_directory ? "" : fmt::format(" to hold {}", run_directory.string())));
    lock_was_there_ = std::filesystem::exists(run_directory / kLock, error);
    std::filesystem::create_directories(run_directory, error);
    if (error) throw Error(fmt::format("{}: cannot create the run directory ({})", run_directory.string(), error.message()));
}

void CreatedDirectories::keep() {
    created_.clear();
    lock_was_there_ = true;
}

CreatedDirectories::~CreatedDirectories() {
    if (run_directory_.empty()) return;
    std::error_code ignored;
    if (!created_.empty())  // only a directory of this run's making holds nothing but what it wrote
        for (const char* written : {kCorpusIds, kValidationIds, kCorpusCopy, kValidationCopy})
            std::filesystem::remove(run_directory_ / written, ignored);
    if (!lock_was_there_) std::filesystem::remove(run_directory_ / kLock, ignored);
    // Each folder only where it is empty: what anyone else put there stays, and so does its folder.
    // (Reverse iterators, not std::views::reverse, which clang 14 cannot compile against libstdc++ 12: the fuzz build.)
    for (auto folder = created_.rbegin(); folder != created_.rend(); ++folder)
        if (!std::filesystem::remove(*folder, ignored)) break;
}

}  // namespace run_files

}  // namespace charlm
