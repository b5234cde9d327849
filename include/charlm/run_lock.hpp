// One training per run directory: a lock that the kernel releases however the process ends.
#pragma once

#include <filesystem>

namespace charlm {

// An exclusive flock on RUN_DIR/.lock, held while the object lives. The kernel drops it when the
// process ends, even by kill -9, so no stale lock is ever left to clear by hand. The file holds the
// holder's pid, for the message that refuses a second run.
class RunLock {
public:
    // Throws Error naming the directory and the pid of the process that holds it.
    explicit RunLock(const std::filesystem::path& run_directory);
    ~RunLock();
    RunLock(const RunLock&) = delete;
    RunLock& operator=(const RunLock&) = delete;

    static constexpr const char* kFileName = ".lock";

private:
    int fd_ = -1;
};

}  // namespace charlm
