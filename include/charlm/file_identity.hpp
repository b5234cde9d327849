// Which file a run read: its size and SHA-256, and copies of what cannot be read twice (pipes, standard input).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace charlm {

class AtomicFile;

// A file's size and SHA-256: what a resumed run checks to know that its corpus is the one it started on.
struct FileFingerprint {
    std::uint64_t size_bytes = 0;
    std::string sha256;  // 64 lowercase hex digits
    bool operator==(const FileFingerprint&) const = default;
};
// Reads the file once, streamed. Throws Error naming the file where it cannot be read.
FileFingerprint fingerprint_file(const std::filesystem::path& path);

// True for a path under /dev or /proc as written (/dev/stdin, a process substitution's /dev/fd/63):
// it names what this process was handed, not a file that another process or a later run finds there.
bool is_under_dev_or_proc(const std::filesystem::path& path);

// True for standard input ("-") and for a path that cannot be read twice from the start, now and by
// a later process: a pipe, a FIFO, anything under /dev or /proc (/dev/stdin, a process substitution's
// /dev/fd/63). Training copies these first (spool_to_file). False for a regular file, and for a path
// that is missing or a directory, which reading then refuses with the reason.
bool can_be_read_only_once(const std::filesystem::path& path);
// Copies `source` ("-" for standard input) into `destination`, which the caller commits once it has
// checked the text (through destination.temporary_path()). Throws Error naming what failed.
void spool_to_file(const std::filesystem::path& source, AtomicFile& destination);

}  // namespace charlm
