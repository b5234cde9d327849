// Which file a run read (size and SHA-256), and copies of what cannot be read twice; not how the text is decoded.
#include "charlm/file_identity.hpp"

#include <fstream>
#include <iostream>
#include <string_view>

#include <sys/stat.h>

#include <fmt/format.h>

#include "charlm/atomic_file.hpp"
#include "charlm/error.hpp"
#include "text/open_text_file.hpp"
#include "text/sha256.hpp"

namespace charlm {

FileFingerprint fingerprint_file(const std::filesystem::path& path) {
    std::ifstream file = open_text_file(path);
    Sha256 sha256;
    FileFingerprint fingerprint;
    std::string buffer(std::size_t{1} << 20, '\0');
    while (file) {
        file.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
        const auto count = static_cast<std::size_t>(file.gcount());
        sha256.add(buffer.data(), count);
        fingerprint.size_bytes += count;
    }
    if (file.bad()) throw Error(fmt::format("{}: read failed", path.string()));
    fingerprint.sha256 = sha256.hex();
    return fingerprint;
}

bool is_under_dev_or_proc(const std::filesystem::path& path) {
    const std::string written = path.string();
    return written.starts_with("/dev/") || written.starts_with("/proc/");
}

bool can_be_read_only_once(const std::filesystem::path& path) {
    if (path == "-") return true;
    struct stat status {};
    if (::stat(path.c_str(), &status) != 0 || S_ISDIR(status.st_mode)) return false;  // the reader says what is wrong
    // /dev/stdin and /dev/fd/N name whatever the process was handed, which the next process is not:
    // a regular file behind one is copied all the same, so that a resume finds it.
    return !S_ISREG(status.st_mode) || is_under_dev_or_proc(std::filesystem::absolute(path).lexically_normal());
}

void spool_to_file(const std::filesystem::path& source, AtomicFile& out) {
    std::ifstream file;
    std::istream* in = &std::cin;
    if (source != "-") {
        file = open_text_file(source);
        in = &file;
    }
    std::string buffer(std::size_t{1} << 20, '\0');
    while (*in) {
        in->read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
        out.write(std::string_view(buffer.data(), static_cast<std::size_t>(in->gcount())));
    }
    if (in->bad()) throw Error(fmt::format("{}: read failed", source == "-" ? std::string("standard input") : source.string()));
}

}  // namespace charlm
