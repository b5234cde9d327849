// The files of a run directory, each named once here: what training writes there, reads back and sweeps.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "charlm/run_lock.hpp"

namespace charlm::run_files {

constexpr const char* kLastCheckpoint = "last.safetensors";  // everything a resume needs
constexpr const char* kBestCheckpoint = "best.safetensors";  // the weights of the lowest validation loss
constexpr const char* kMetrics = "metrics.jsonl";            // the progress reports (MetricsLog)
// The ids of the texts, encoded once and mapped (MappedIds): the corpus's, and a --val file's.
constexpr const char* kCorpusIds = "corpus.ids";
constexpr const char* kValidationIds = "validation.ids";
// The copies of texts that can be read only once (a pipe, standard input), which the run then reads.
constexpr const char* kCorpusCopy = "corpus.txt";
constexpr const char* kValidationCopy = "validation.txt";
// The lock that allows one training per directory, named by RunLock.
constexpr const char* kLock = RunLock::kFileName;

// --keep-checkpoints' name for a validation's weights (kept_checkpoint_name() in train.hpp), and whether
// `file_name` has that form, whatever run kept it.
bool is_kept_checkpoint_name(const std::string& file_name);
// How the messages write a kept checkpoint's name when they mean all of them.
constexpr const char* kKeptCheckpointPattern = "step-...-val-....safetensors";

// Whether `file_name` is the temporary of a write into the run directory (an AtomicFile's: a
// checkpoint, a copy of a text, an ids file) that a killed process never renamed.
bool is_stale_temporary(const std::string& file_name);

// The folders that a fresh run made for its run directory (the directory and any missing parents), and
// its lock file in a directory that was there: a run that fails before it begins training (a text
// refused, from a pipe as from a file) removes them again, with the ids and copies it wrote there, so
// that a failure leaves nothing behind. Destroy it before the RunLock it created, so that the lock is
// still held while its file goes: no other run can take a directory that is being removed.
class CreatedDirectories {
public:
    CreatedDirectories() = default;
    CreatedDirectories(const CreatedDirectories&) = delete;
    CreatedDirectories& operator=(const CreatedDirectories&) = delete;
    ~CreatedDirectories();

    // Creates `run_directory` and its missing parents, remembering which were missing; throws Error.
    void create(const std::filesystem::path& run_directory);
    // Training has begun: what it made is the run's from here on.
    void keep();

private:
    std::filesystem::path run_directory_;
    std::vector<std::filesystem::path> created_;  // the shallowest first
    bool lock_was_there_ = true;
};

}  // namespace charlm::run_files
