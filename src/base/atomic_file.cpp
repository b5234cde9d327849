// Atomic replacement of a file: exclusive temporary, fsync, rename, fsync of the folder.
#include "charlm/atomic_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <random>

#include <fmt/format.h>

#include "charlm/error.hpp"

namespace charlm {

namespace {

constexpr std::string_view kTemporaryMark = ".tmp-";  // between the target's name and the random letters

std::filesystem::path folder_of(const std::filesystem::path& path) {
    return path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
}

// Opens a new file beside `path` for writing, named `.NAME.tmp-XXXXXX` with six random letters and
// digits: a name no other process can guess in advance, and the prefix that train() sweeps away when a
// killed process left one behind. O_EXCL creates the file or fails, so an existing file or a symlink
// planted at that name is never opened, let alone followed; another name is then tried.
int create_temporary_beside(const std::filesystem::path& path, std::filesystem::path& temporary) {
    static constexpr char kLetters[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    std::random_device random;
    for (int attempt = 0; attempt < 100; ++attempt) {
        std::string suffix(6, ' ');
        for (char& letter : suffix) letter = kLetters[random() % (sizeof kLetters - 1)];
        temporary = folder_of(path) / fmt::format(".{}{}{}", path.filename().string(), kTemporaryMark, suffix);
        const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd >= 0 || errno != EEXIST) return fd;
    }
    return -1;  // errno is EEXIST: a hundred names taken is not chance
}

// A fault-injection point for tests/test_crash.cpp alone: where CHARLM_TEST_PAUSE_BEFORE_RENAME names the
// file being written (e.g. last.safetensors), the process says so on stderr and waits, its temporary written
// and flushed but not renamed, for the test's SIGKILL: a kill that lands between write and rename, on purpose.
void pause_here_if_a_test_asks(const std::filesystem::path& target, const std::filesystem::path& temporary) {
    const char* name = std::getenv("CHARLM_TEST_PAUSE_BEFORE_RENAME");
    if (name == nullptr || target.filename() != name) return;
    const std::string line = fmt::format("charlm: paused before renaming {} into place\n", temporary.string());
    [[maybe_unused]] const ssize_t written = ::write(STDERR_FILENO, line.data(), line.size());
    for (;;) ::pause();
}

}  // namespace

AtomicFile::AtomicFile(std::filesystem::path target) : target_(std::move(target)) {
    fd_ = create_temporary_beside(target_, temporary_);
    if (fd_ < 0) {
        temporary_.clear();
        fail("creating a temporary file");
    }
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

void AtomicFile::write_at(std::uint64_t offset, std::string_view bytes) {
    std::size_t written = 0;
    while (written < bytes.size()) {
        const ssize_t count = ::pwrite(fd_, bytes.data() + written, bytes.size() - written, static_cast<off_t>(offset + written));
        if (count < 0 && errno == EINTR) continue;
        if (count <= 0) {
            if (count == 0) errno = EIO;
            fail("writing");
        }
        written += static_cast<std::size_t>(count);
    }
}

void AtomicFile::commit() {
    if (::fsync(fd_) != 0) fail("flushing to disk");
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) fail("closing");
    pause_here_if_a_test_asks(target_, temporary_);
    if (::rename(temporary_.c_str(), target_.c_str()) != 0) fail("renaming into place");
    temporary_.clear();
    // The rename is durable only once the folder's entry is on disk too. A folder that cannot be opened
    // for reading, or flushed at all (EINVAL: some network and FUSE file systems), is no failure of this
    // write; a disk that fails to flush it is.
    const int directory_fd = ::open(folder_of(target_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (directory_fd < 0) return;
    const int synced = ::fsync(directory_fd);
    const int saved = errno;
    ::close(directory_fd);
    if (synced != 0 && saved != EINVAL)
        throw Error(fmt::format("{}: written, but flushing its folder to disk failed ({}); a crash now could lose it",
                                target_.string(), std::strerror(saved)));
}

std::optional<std::string> file_of_temporary(std::string_view temporary_name) {
    const std::size_t mark = temporary_name.find(kTemporaryMark);
    if (!temporary_name.starts_with('.') || mark == std::string_view::npos || mark < 2) return std::nullopt;
    return std::string(temporary_name.substr(1, mark - 1));
}

void write_file_atomically(const std::filesystem::path& path, std::string_view bytes) {
    AtomicFile file(path);
    file.write(bytes);
    file.commit();
}

}  // namespace charlm
