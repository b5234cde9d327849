// Files that appear whole or not at all: written under a temporary name beside them, then renamed.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace charlm {

// A file being written: created exclusively under an unpredictable temporary name in the target's
// folder (".NAME.tmp-XXXXXX", no symlink followed, the prefix training sweeps after a crash), renamed
// over the target by commit() after an fsync of the file, and of the folder after the rename.
// Destroyed without commit(), it removes the temporary, and the target is untouched. Errors name the
// target and say that it is unchanged.
class AtomicFile {
public:
    explicit AtomicFile(std::filesystem::path target);
    ~AtomicFile();
    AtomicFile(const AtomicFile&) = delete;
    AtomicFile& operator=(const AtomicFile&) = delete;

    void write(std::string_view bytes);
    // Overwrites bytes already written, from `offset`: a header whose fields are known only at the end.
    void write_at(std::uint64_t offset, std::string_view bytes);
    void commit();
    const std::filesystem::path& temporary_path() const { return temporary_; }

private:
    [[noreturn]] void fail(const std::string& what);

    std::filesystem::path target_;
    std::filesystem::path temporary_;
    int fd_ = -1;
};

// The whole of `bytes` as `path`, through an AtomicFile: a crash or a full disk at any moment leaves
// the previous file intact.
void write_file_atomically(const std::filesystem::path& path, std::string_view bytes);

// The file name that an AtomicFile's temporary stands for: NAME for ".NAME.tmp-XXXXXX"; none for a name
// of any other form. What a sweep after a crash reads, so that the form is written down once.
std::optional<std::string> file_of_temporary(std::string_view temporary_name);

}  // namespace charlm
