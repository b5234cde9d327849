// Draws a run's train and validation loss with gnuplot (Debian's gnuplot-nox), through a data file and a script.
#include "charlm/plot.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <regex>
#include <sstream>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "charlm/error.hpp"
#include "charlm/display.hpp"

extern char** environ;

namespace charlm {

namespace {

constexpr const char* kMetricsFile = "metrics.jsonl";  // what training writes (src/train/run_directory.hpp)

// A folder of our own under TMPDIR (mkdtemp: a random name, mode 0700) for the data, the script and
// gnuplot's messages, so that no other user can predict, read or replace them; removed with all it
// holds when this goes, whatever happened in between.
class PrivateDirectory {
public:
    PrivateDirectory() {
        std::error_code error;
        const auto temporary = std::filesystem::temp_directory_path(error);
        if (error) throw Error(fmt::format("no folder for temporary files ({}); set TMPDIR to one", error.message()));
        std::string pattern = (temporary / "charlm-plot-XXXXXX").string();
        if (::mkdtemp(pattern.data()) == nullptr)
            throw Error(fmt::format("{}: cannot create a temporary folder there ({})", temporary.string(), std::strerror(errno)));
        path_ = pattern;
    }
    ~PrivateDirectory() {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }
    PrivateDirectory(const PrivateDirectory&) = delete;
    PrivateDirectory& operator=(const PrivateDirectory&) = delete;

    // Creates `name` in the folder, exclusively and never through a symlink, open for writing.
    int create(const std::string& name) const {
        const auto file = path_ / name;
        const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0) throw Error(fmt::format("{}: cannot create ({})", file.string(), std::strerror(errno)));
        return fd;
    }
    void write(const std::string& name, const std::string& text) const {
        const int fd = create(name);
        std::size_t written = 0;
        while (written < text.size()) {
            const ssize_t count = ::write(fd, text.data() + written, text.size() - written);
            if (count < 0 && errno == EINTR) continue;
            if (count <= 0) {
                const std::string reason = count < 0 ? std::strerror(errno) : "nothing written";
                ::close(fd);
                throw Error(fmt::format("{}: cannot write ({})", (path_ / name).string(), reason));
            }
            written += static_cast<std::size_t>(count);
        }
        ::close(fd);
    }
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
};

// A gnuplot string: single quotes, in which only a doubled quote is special. A line break would end
// the command and start another, so it cannot be quoted at all.
std::string quoted(const std::string& text) {
    std::string result = "'";
    for (char c : text) result += c == '\'' ? std::string("''") : std::string(1, c);
    return result + "'";
}

// gnuplot's reason for failing, from what it wrote: `"script" line 3: unknown or ambiguous terminal
// type` (after an echo of the line and a caret), and the system's reason after it where there is one.
std::string gnuplot_reason(const std::string& messages) {
    static const std::regex located(R"(^".*" line [0-9]+: (.*)$)");
    std::istringstream lines(messages);
    std::string line, last;
    std::smatch match;
    while (std::getline(lines, line)) {
        if (std::regex_match(line, match, located)) {
            std::string reason = match[1].str();
            if (std::getline(lines, line) && line.starts_with("system error: ")) reason += " (" + line.substr(14) + ")";
            return reason;
        }
        if (line.find_first_not_of(" \t^") != std::string::npos) last = line;
    }
    return last;
}

// Runs gnuplot on `script` with stdin from /dev/null and its stdout and stderr both into a log in
// `directory`: gnuplot's chatter never reaches charlm's stdout, which carries only the PNG's path.
// No shell: the script's path is an argument as it is.
void run_gnuplot(const PrivateDirectory& directory, const std::filesystem::path& script) {
    const int log_fd = directory.create("gnuplot.log");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, log_fd, STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, log_fd, STDERR_FILENO);
    std::string program = "gnuplot", script_argument = script.string();
    char* arguments[] = {program.data(), script_argument.data(), nullptr};
    pid_t pid = 0;
    const int spawn_error = ::posix_spawnp(&pid, "gnuplot", &actions, nullptr, arguments, environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(log_fd);  // gnuplot holds its own copies
    if (spawn_error == ENOENT) throw Error("gnuplot is not installed (apt-get install gnuplot-nox)");
    if (spawn_error != 0) throw Error(fmt::format("cannot start gnuplot ({})", std::strerror(spawn_error)));
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) throw Error(fmt::format("lost track of gnuplot ({})", std::strerror(errno)));
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
    std::ifstream file(directory.path() / "gnuplot.log");
    const std::string messages((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    std::string reason = gnuplot_reason(messages);
    if (reason.empty())
        reason = WIFSIGNALED(status) ? fmt::format("killed by signal {}", WTERMSIG(status))
                                     : fmt::format("exit status {} and no message", WEXITSTATUS(status));
    throw Error(fmt::format("gnuplot failed: {}", displayable(reason)));
}

// Each record of a run's metrics.jsonl, given to `take`. A line that is none (not a JSON object with a
// step: a line cut short by a full disk, an edit) is left out, and a warning says which.
std::vector<std::string> for_each_record(const std::filesystem::path& run_directory,
                                         const std::function<void(const nlohmann::json&)>& take) {
    const auto metrics_path = run_directory / kMetricsFile;
    std::ifstream metrics(metrics_path);
    if (!metrics) throw Error(fmt::format("{}: no metrics.jsonl; give a run directory written by 'charlm train'", run_directory.string()));
    std::vector<std::size_t> unread;
    std::string line;
    for (std::size_t number = 1; std::getline(metrics, line); ++number) {
        if (line.empty()) continue;
        const auto record = nlohmann::json::parse(line, nullptr, false);
        if (record.is_object() && record.contains("step")) take(record);
        else unread.push_back(number);
    }
    if (unread.empty()) return {};
    return {fmt::format("{}: left out {} line{} that {} no metrics record (line {}{})", metrics_path.string(), unread.size(),
                        unread.size() == 1 ? "" : "s", unread.size() == 1 ? "is" : "are", unread.front(),
                        unread.size() > 1 ? fmt::format(" and {} more", unread.size() - 1) : std::string())};
}

// A curve of one point drawn with lines alone shows nothing, though its key names it.
std::string curve_style(std::size_t points, const std::string& style) {
    return points == 1 ? std::string("points pt 7 ps 1.2") : style;
}

void refuse_a_line_break(const std::filesystem::path& output) {
    if (output.string().find_first_of("\n\r") != std::string::npos)
        throw Error(fmt::format("{}: gnuplot cannot write to a path with a line break in it; choose another --output",
                                displayable(output.string())));
}

}  // namespace

std::filesystem::path run_directory_of(const std::filesystem::path& given) {
    std::error_code ignored;
    if (!std::filesystem::is_regular_file(given, ignored)) return given;
    const std::filesystem::path folder = given.parent_path().empty() ? std::filesystem::path(".") : given.parent_path();
    if (given.filename() == kMetricsFile) return folder;
    throw Error(fmt::format("{}: is a file; give the run directory that holds metrics.jsonl, such as {}", given.string(),
                            quoted_for_shell(folder.string())));
}

std::vector<std::string> plot_losses(const std::filesystem::path& given, const std::filesystem::path& output) {
    const std::filesystem::path run_directory = run_directory_of(given);
    const auto metrics_path = run_directory / kMetricsFile;
    refuse_a_line_break(output);
    std::string data;
    std::size_t points = 0, validation_points = 0, averaged_points = 0;
    const std::vector<std::string> warnings = for_each_record(run_directory, [&](const nlohmann::json& record) {
        if (!record.contains("train_loss")) return;  // the pass over all the held-out text at the end
        const auto validation = record.value("validation_loss", nlohmann::json(nullptr));
        const auto averaged = record.value("averaged_validation_loss", nlohmann::json(nullptr));
        data += record["step"].dump() + ' ' + record["train_loss"].dump() + ' ' + (validation.is_number() ? validation.dump() : "NaN") + ' ' +
                (averaged.is_number() ? averaged.dump() : "NaN") + '\n';
        averaged_points += averaged.is_number();
        validation_points += validation.is_number();
        ++points;
    });
    if (points == 0) throw Error(fmt::format("{}: has no metrics yet; train for at least one report first", metrics_path.string()));

    const PrivateDirectory directory;
    const auto data_path = directory.path() / "losses.dat";
    const auto script_path = directory.path() / "plot.gp";
    directory.write("losses.dat", data);
    // The title is shown, not parsed: any control character in the folder's name is shown escaped.
    const std::filesystem::path title = run_directory.filename().empty() ? run_directory : run_directory.filename();
    directory.write("plot.gp", "set terminal pngcairo size 900,540 enhanced font 'sans,11'\n"
                               "set output " + quoted(output.string()) + "\n"
                               "set title " + quoted(displayable(title.string())) + " noenhanced\n"
                               "set xlabel 'step'\nset ylabel 'loss (nats/char)'\nset grid\nset key top right\n"
                               "set datafile missing 'NaN'\n"
                               "plot " + quoted(data_path.string()) + " using 1:2 with " + curve_style(points, "lines lw 2") +
                               " title 'train', " + quoted(data_path.string()) + " using 1:3 with " +
                               curve_style(validation_points, "linespoints lw 2 pt 7 ps 0.6") + " title 'validation'" +
                               (averaged_points > 0 ? ", " + quoted(data_path.string()) + " using 1:4 with " +
                                                          curve_style(averaged_points, "linespoints lw 2 dt 2 pt 6 ps 0.6") +
                                                          " title 'validation, averaged'"
                                                    : std::string()) +
                               "\n");
    run_gnuplot(directory, script_path);
    return warnings;
}

std::vector<std::string> plot_validation_losses(const std::vector<std::filesystem::path>& given_runs,
                                                const std::filesystem::path& output, PlotAxis axis) {
    refuse_a_line_break(output);
    const PrivateDirectory directory;
    std::string plots;
    std::vector<std::string> warnings;
    for (std::size_t run = 0; run < given_runs.size(); ++run) {
        const std::filesystem::path run_directory = run_directory_of(given_runs[run]);
        const auto metrics_path = run_directory / kMetricsFile;
        std::string data;
        std::size_t points = 0, averaged_points = 0;
        double minutes_before = 0, last_minutes = 0;  // a resumed invocation's clock starts again at 0
        const std::vector<std::string> unread = for_each_record(run_directory, [&](const nlohmann::json& record) {
            const auto seconds = record.value("elapsed_seconds", nlohmann::json(nullptr));
            if (!seconds.is_number()) return;
            double minutes = seconds.get<double>() / 60;
            if (minutes + minutes_before < last_minutes) minutes_before = last_minutes;
            minutes += minutes_before;
            last_minutes = minutes;
            const auto validation = record.value("validation_loss", nlohmann::json(nullptr));
            if (!validation.is_number()) return;
            const auto averaged = record.value("averaged_validation_loss", nlohmann::json(nullptr));
            data += (axis == PlotAxis::step ? record["step"].dump() : fmt::format("{}", minutes)) + ' ' + validation.dump() + ' ' +
                    (averaged.is_number() ? averaged.dump() : "NaN") + '\n';
            averaged_points += averaged.is_number();
            ++points;
        });
        warnings.insert(warnings.end(), unread.begin(), unread.end());
        if (points == 0)
            throw Error(fmt::format("{}: has no validation losses yet; train it to its first --eval-every first", metrics_path.string()));
        const std::string name = fmt::format("run{}.dat", run);
        directory.write(name, data);
        const std::filesystem::path label = run_directory.filename().empty() ? run_directory.parent_path().filename() : run_directory.filename();
        const std::string data_path = quoted((directory.path() / name).string());
        plots += fmt::format("{}{} using 1:2 with linespoints lw 2 pt 7 ps 0.5 lc {} title {}", plots.empty() ? "" : ", ", data_path,
                             run + 1, quoted(displayable(label.string())));
        if (averaged_points > 0)
            plots += fmt::format(", {} using 1:3 with {} lc {} title {}", data_path, curve_style(averaged_points, "lines lw 2 dt 2"),
                                 run + 1, quoted(displayable(label.string()) + ", averaged"));
    }
    const auto script_path = directory.path() / "plot.gp";
    directory.write("plot.gp", "set terminal pngcairo size 900,540 enhanced font 'sans,11'\n"
                               "set output " + quoted(output.string()) + "\n"
                               "set xlabel '" + std::string(axis == PlotAxis::step ? "step" : "minutes of training") + "'\n"
                               "set ylabel 'validation loss (nats/char)'\nset grid\nset key top right noenhanced\n"
                               "set datafile missing 'NaN'\n"
                               "plot " + plots + "\n");
    run_gnuplot(directory, script_path);
    return warnings;
}

}  // namespace charlm
