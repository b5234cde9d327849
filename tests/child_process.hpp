// A charlm process started by a test, its output in files, with signals, exit codes and CPU time.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace charlm::testing {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

inline std::string read_file(const fs::path& path) {
    std::ifstream file(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

// A running charlm process whose stdout and stderr go to files, so that nothing needs draining while
// the test sleeps before killing it. The destructor kills and reaps it if a failed assertion left it running.
class ChildProcess {
public:
    ChildProcess(const std::vector<std::string>& arguments, const fs::path& output_directory, const char* binary = CHARLM_BINARY)
        : stdout_path_(output_directory / "stdout.txt"), stderr_path_(output_directory / "stderr.txt") {
        // Everything the child needs is prepared before fork: after it, only async-signal-safe calls.
        std::vector<std::string> argv_strings = {binary};
        argv_strings.insert(argv_strings.end(), arguments.begin(), arguments.end());
        std::vector<char*> argv;
        for (auto& argument : argv_strings) argv.push_back(argument.data());
        argv.push_back(nullptr);
        const int out_fd = ::open(stdout_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        const int err_fd = ::open(stderr_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (out_fd < 0 || err_fd < 0 || null_fd < 0) {
            ADD_FAILURE() << "cannot open the child's output files: " << std::strerror(errno);
            return;
        }
        pid_ = ::fork();
        if (pid_ == 0) {
            if (::dup2(null_fd, STDIN_FILENO) < 0 || ::dup2(out_fd, STDOUT_FILENO) < 0 || ::dup2(err_fd, STDERR_FILENO) < 0)
                ::_exit(126);
            ::execv(argv[0], argv.data());
            ::_exit(127);
        }
        if (pid_ < 0) ADD_FAILURE() << "fork failed: " << std::strerror(errno);
        ::close(out_fd);
        ::close(err_fd);
        ::close(null_fd);
    }
    ChildProcess(const ChildProcess&) = delete;
    ChildProcess& operator=(const ChildProcess&) = delete;
    ~ChildProcess() {
        if (running()) {
            ::kill(pid_, SIGKILL);
            wait_for_exit(10);
        }
    }

    pid_t pid() const { return pid_; }
    bool running() const { return pid_ > 0 && !exit_code_; }
    void send(int signal_number) const {
        if (pid_ > 0) ::kill(pid_, signal_number);
    }

    // Polls rather than blocks, so that a process that has already exited is noticed at once.
    bool poll_exit() {
        if (exit_code_) return true;
        if (pid_ <= 0) return false;
        int status = 0;
        const pid_t result = ::waitpid(pid_, &status, WNOHANG);
        if (result == pid_) exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        return exit_code_.has_value();
    }
    // The exit status, or 128 + the signal's number for a process killed by a signal; nullopt on timeout.
    std::optional<int> wait_for_exit(double timeout_seconds) {
        const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_seconds);
        while (!poll_exit() && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        return exit_code_;
    }
    std::string err() const { return read_file(stderr_path_); }
    std::string out() const { return read_file(stdout_path_); }
    // CPU time the process has used (user + system, from /proc), or 0 once it is gone: unlike wall
    // time, a measure of how far it got that a busy machine does not stretch.
    double cpu_seconds() const {
        std::istringstream stat(read_file(fs::path("/proc") / std::to_string(pid_) / "stat"));
        std::string field;
        double ticks = 0;
        // Fields 14 and 15 are utime and stime; field 2, the command, is "(charlm)" without spaces.
        for (int index = 1; stat >> field && index <= 15; ++index)
            if (index >= 14) ticks += std::stod(field);
        return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
    }

private:
    fs::path stdout_path_, stderr_path_;
    pid_t pid_ = -1;
    std::optional<int> exit_code_;
};

}  // namespace charlm::testing
