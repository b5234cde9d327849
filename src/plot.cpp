// Draws a run's train and validation loss with gnuplot (Debian's gnuplot-nox), through a data file and a script.
#include "charlm/plot.hpp"

#include <cstdlib>
#include <fstream>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "charlm/error.hpp"

namespace charlm {

static std::string quoted(const std::filesystem::path& path) {
    std::string text = "'";
    for (char c : path.string()) text += c == '\'' ? std::string("''") : std::string(1, c);
    return text + "'";
}

void plot_losses(const std::filesystem::path& run_directory, const std::filesystem::path& output) {
    const auto metrics_path = run_directory / "metrics.jsonl";
    std::ifstream metrics(metrics_path);
    if (!metrics) throw Error(fmt::format("{}: no metrics.jsonl; give a run directory written by 'charlm train'", run_directory.string()));
    const auto data_path = std::filesystem::temp_directory_path() / fmt::format("charlm-plot-{}.dat", ::getpid());
    const auto script_path = std::filesystem::temp_directory_path() / fmt::format("charlm-plot-{}.gp", ::getpid());
    std::size_t points = 0;
    {
        std::ofstream data(data_path);
        std::string line;
        while (std::getline(metrics, line)) {
            const auto record = nlohmann::json::parse(line, nullptr, false);
            if (record.is_discarded() || !record.contains("step") || !record.contains("train_loss")) continue;
            const auto validation = record.value("validation_loss", nlohmann::json(nullptr));
            data << record["step"].dump() << ' ' << record["train_loss"].dump() << ' '
                 << (validation.is_number() ? validation.dump() : "NaN") << '\n';
            ++points;
        }
    }
    if (points == 0) {
        std::filesystem::remove(data_path);
        throw Error(fmt::format("{}: has no metrics yet; train for at least one report first", metrics_path.string()));
    }
    {
        std::ofstream script(script_path);
        script << "set terminal pngcairo size 900,540 enhanced font 'sans,11'\n"
               << "set output " << quoted(output) << "\n"
               << "set title " << quoted(run_directory.filename().empty() ? run_directory : run_directory.filename()) << " noenhanced\n"
               << "set xlabel 'step'\nset ylabel 'loss (nats/char)'\nset grid\nset key top right\n"
               << "set datafile missing 'NaN'\n"
               << "plot " << quoted(data_path) << " using 1:2 with lines lw 2 title 'train', "
               << quoted(data_path) << " using 1:3 with linespoints lw 2 pt 7 ps 0.6 title 'validation'\n";
    }
    const int status = std::system(fmt::format("gnuplot {} 2>&1", quoted(script_path)).c_str());
    std::filesystem::remove(data_path);
    std::filesystem::remove(script_path);
    if (status != 0)
        throw Error("gnuplot failed or is not installed; install it with: apt-get install gnuplot-nox");
}

}  // namespace charlm
