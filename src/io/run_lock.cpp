// The run directory's lock: flock(2) on a file that stays, holding the pid of the run that has it.
#include "charlm/run_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include <fmt/format.h>

#include "charlm/error.hpp"

namespace charlm {

RunLock::RunLock(const std::filesystem::path& run_directory) {
    const auto path = run_directory / kFileName;
    // The file is never removed: unlinking a lock file lets a third process lock a new file of the
    // same name while a second still holds the old one.
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd_ < 0)
        throw Error(fmt::format("{}: cannot open the run's lock file ({})", path.string(), std::strerror(errno)));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
        const int reason = errno;
        char pid[32] = {};
        const ssize_t count = ::pread(fd_, pid, sizeof pid - 1, 0);
        ::close(fd_);
        fd_ = -1;
        if (reason != EWOULDBLOCK)
            throw Error(fmt::format("{}: cannot lock the run directory ({})", run_directory.string(), std::strerror(reason)));
        std::string holder = count > 0 ? std::string(pid, static_cast<std::size_t>(count)) : std::string();
        holder = holder.substr(0, holder.find_first_not_of("0123456789"));
        throw Error(fmt::format("{} is in use by another training (pid {}); wait for it to finish, or choose another "
                                "directory with --out",
                                run_directory.string(), holder.empty() ? std::string("unknown") : holder));
    }
    const std::string pid = std::to_string(::getpid());
    if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
        // The lock holds all the same; only the message of a refused second run loses the pid.
    }
}

RunLock::~RunLock() {
    if (fd_ >= 0) ::close(fd_);  // closing the last descriptor releases the flock
}

}  // namespace charlm
