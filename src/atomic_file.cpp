// Atomic replacement of a file: exclusive temporary, fsync, rename, fsync of the folder.
#include "charlm/atomic_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include "charlm/error.hpp"

namespace charlm {

AtomicFile::AtomicFile(std::filesystem::path target) : target_(std::move(target)) {
    const auto directory = target_.has_parent_path() ? target_.parent_path() : std::filesystem::path(".");
    // mkostemp: O_CREAT | O_EXCL under a random name, so no other file and no symlink planted in advance is written.
    std::string name = (directory / fmt::format(".{}.tmp-XXXXXX", target_.filename().string())).string();
    fd_ = ::mkostemp(name.data(), O_CLOEXEC);
    if (fd_ < 0) fail("creating a temporary file");
    temporary_ = name;
}

AtomicFile::~AtomicFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!temporary_.empty()) ::unlink(temporary_.c_str());
}

void AtomicFile::fail(const std::string& what) {
    const std::string reason = std::strerror(errno);
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    if (!temporary_.empty()) ::unlink(temporary_.c_str());
    temporary_.clear();
    throw Error(fmt::format("cannot write {}: {} failed ({}); the previous file is unchanged", target_.string(), what, reason));
}

void AtomicFile::write(std::string_view bytes) {
    std::size_t written = 0;
    while (written < bytes.size()) {
        const ssize_t count = ::write(fd_, bytes.data() + written, bytes.size() - written);
        if (count < 0 && errno == EINTR) continue;
        if (count <= 0) {
            if (count == 0) errno = EIO;
            fail("writing");
        }
        written += static_cast<std::size_t>(count);
    }
}

void AtomicFile::commit() {
    if (::fchmod(fd_, 0644) != 0) fail("setting permissions");  // mkostemp makes it 0600
    if (::fsync(fd_) != 0) fail("flushing to disk");
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) fail("closing");
    if (::rename(temporary_.c_str(), target_.c_str()) != 0) fail("renaming into place");
    temporary_.clear();
    // Make the rename itself durable.
    const auto directory = target_.has_parent_path() ? target_.parent_path() : std::filesystem::path(".");
    const int directory_fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (directory_fd >= 0) {
        ::fsync(directory_fd);
        ::close(directory_fd);
    }
}

}  // namespace charlm
