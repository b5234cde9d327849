// Checks plot.cpp: gnuplot run without a shell, its temporary files private and removed, its failures told apart.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <optional>
#include <regex>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "charlm/error.hpp"
#include "charlm/plot.hpp"
#include "test_helpers.hpp"

namespace charlm {
namespace {

using testing::read_bytes;
using testing::ScopedEnvironment;
using testing::TemporaryDirectory;

// A run directory with three reports, and an empty folder for the temporary files.
struct PlotFixture {
    TemporaryDirectory directory;
    std::filesystem::path run = directory.path() / "run";
    std::filesystem::path temporary = directory.path() / "tmp";
    std::filesystem::path bin = directory.path() / "bin";
    PlotFixture() {
        std::filesystem::create_directories(run);
        std::filesystem::create_directories(temporary);
        std::filesystem::create_directories(bin);
        directory.write("run/metrics.jsonl", R"({"step":10,"train_loss":3.1,"validation_loss":3.2}
{"step":20,"train_loss":2.5}
{"step":30,"train_loss":2.1,"validation_loss":2.4}
)");
    }
    // A stand-in for gnuplot on PATH, written as a shell script.
    void fake_gnuplot(const std::string& script) const {
        const auto path = bin / "gnuplot";
        directory.write("bin/gnuplot", "#!/bin/sh\n" + script);
        std::filesystem::permissions(path, std::filesystem::perms::owner_all);
    }
    bool temporary_is_empty() const { return std::filesystem::is_empty(temporary); }
};

std::string error_of(const std::function<void()>& action) {
    try {
        action();
    } catch (const Error& error) {
        return error.what();
    }
    return "(no error)";
}

TEST(Plot, NotInstalledIsToldApartFromFailedWithGnuplotsReason) {
    PlotFixture fixture;
    const ScopedEnvironment temporary("TMPDIR", fixture.temporary.string());
    {
        const ScopedEnvironment path("PATH", fixture.bin.string());  // no gnuplot there
        EXPECT_EQ(error_of([&] { plot_losses(fixture.run, fixture.run / "loss.png"); }),
                  "gnuplot is not installed (apt-get install gnuplot-nox)");
    }
    EXPECT_TRUE(fixture.temporary_is_empty()) << "temporary files left behind";
    fixture.fake_gnuplot(R"(echo "chatter"
printf '\nplot x\n     ^\n"%s" line 7: unrecognized plot type\nmore\n' "$1" >&2
exit 1
)");
    const ScopedEnvironment path("PATH", fixture.bin.string() + ":/usr/bin:/bin");
    EXPECT_EQ(error_of([&] { plot_losses(fixture.run, fixture.run / "loss.png"); }), "gnuplot failed: unrecognized plot type");
    EXPECT_TRUE(fixture.temporary_is_empty()) << "temporary files left behind after a failure";
    fixture.fake_gnuplot("kill -9 $$\n");
    EXPECT_EQ(error_of([&] { plot_losses(fixture.run, fixture.run / "loss.png"); }), "gnuplot failed: killed by signal 9");
    EXPECT_TRUE(fixture.temporary_is_empty());
}

// The data and the script live in a folder only this user can enter, under a name nobody can predict
// (not /tmp/charlm-plot-PID.gp, where another user could plant a symlink first), and go afterwards.
TEST(Plot, TemporaryFilesArePrivateUnpredictableAndRemoved) {
    PlotFixture fixture;
    const ScopedEnvironment temporary("TMPDIR", fixture.temporary.string());
    const auto record = fixture.directory.path() / "record";
    // gnuplot's stand-in notes where its script is and how that folder is protected, then writes the PNG.
    fixture.fake_gnuplot("dir=$(dirname \"$1\")\n"
                         "{ echo \"$1\"; stat -c %a \"$dir\"; stat -c %a \"$1\"; ls \"$dir\"; } > '" + record.string() + "'\n"
                         "sed -n \"s/^set output '\\(.*\\)'$/\\1/p\" \"$1\" | { read out; echo png > \"$out\"; }\n");
    const ScopedEnvironment path("PATH", fixture.bin.string() + ":/usr/bin:/bin");
    plot_losses(fixture.run, fixture.run / "loss.png");
    EXPECT_EQ(read_bytes(fixture.run / "loss.png"), "png\n");
    std::istringstream lines(read_bytes(record));
    std::string script, folder_mode, script_mode, listing, name;
    std::getline(lines, script);
    std::getline(lines, folder_mode);
    std::getline(lines, script_mode);
    while (std::getline(lines, name)) listing += name + " ";
    const std::filesystem::path script_path(script);
    EXPECT_EQ(script_path.parent_path().parent_path(), fixture.temporary) << script;
    EXPECT_TRUE(std::regex_match(script_path.parent_path().filename().string(), std::regex("charlm-plot-[A-Za-z0-9]{6}"))) << script;
    EXPECT_EQ(script_path.parent_path().filename().string().find(std::to_string(::getpid())), std::string::npos) << script;
    EXPECT_EQ(folder_mode, "700");
    EXPECT_EQ(script_mode, "600");
    EXPECT_EQ(listing, "gnuplot.log losses.dat plot.gp ");
    EXPECT_TRUE(fixture.temporary_is_empty()) << "temporary files left behind";
}

// Runs compared: each run's validation losses by minutes of training, a resumed invocation's minutes
// going on from the last one's, and the averaged weights' where a run has them.
TEST(Plot, ComparesRunsByMinutesOrStep) {
    PlotFixture fixture;
    const ScopedEnvironment temporary("TMPDIR", fixture.temporary.string());
    std::filesystem::create_directories(fixture.directory.path() / "other");
    std::filesystem::create_directories(fixture.directory.path() / "none");
    fixture.directory.write("other/metrics.jsonl",
                            R"({"step":10,"train_loss":3.0,"validation_loss":3.0,"averaged_validation_loss":2.9,"elapsed_seconds":60}
{"step":20,"train_loss":2.0,"elapsed_seconds":90}
{"step":30,"train_loss":2.0,"validation_loss":2.5,"averaged_validation_loss":2.2,"elapsed_seconds":30}
)");
    fixture.directory.write("run/metrics.jsonl", R"({"step":10,"train_loss":3.1,"validation_loss":3.2,"elapsed_seconds":120}
)");
    const auto copies = fixture.directory.path() / "copies";
    std::filesystem::create_directories(copies);
    fixture.fake_gnuplot("cp \"$(dirname \"$1\")\"/*.dat \"$1\" '" + copies.string() + "'\n");
    const ScopedEnvironment path("PATH", fixture.bin.string() + ":/usr/bin:/bin");
    const std::vector<std::filesystem::path> runs = {fixture.run, fixture.directory.path() / "other"};
    plot_validation_losses(runs, fixture.directory.path() / "both.png", PlotAxis::minutes);
    EXPECT_EQ(read_bytes(copies / "run0.dat"), "2 3.2 NaN\n");
    EXPECT_EQ(read_bytes(copies / "run1.dat"), "1 3.0 2.9\n2 2.5 2.2\n") << "30 s after a resume at 1.5 minutes";
    const std::string script = read_bytes(copies / "plot.gp");
    EXPECT_NE(script.find("title 'run'"), std::string::npos) << script;
    EXPECT_NE(script.find("title 'other'"), std::string::npos) << script;
    EXPECT_NE(script.find("title 'other, averaged'"), std::string::npos) << script;
    EXPECT_EQ(script.find("run, averaged"), std::string::npos) << script;
    EXPECT_NE(script.find("minutes of training"), std::string::npos) << script;

    plot_validation_losses(runs, fixture.directory.path() / "both.png", PlotAxis::step);
    EXPECT_EQ(read_bytes(copies / "run1.dat"), "10 3.0 2.9\n30 2.5 2.2\n");
    fixture.directory.write("none/metrics.jsonl", R"({"step":10,"train_loss":3.1,"elapsed_seconds":5}
)");
    EXPECT_NE(error_of([&] { plot_validation_losses({fixture.directory.path() / "none"}, "x.png", PlotAxis::step); })
                  .find("has no validation losses yet"),
              std::string::npos);
    EXPECT_TRUE(fixture.temporary_is_empty());
}

// `plot r/metrics.jsonl` said "r/metrics.jsonl: no metrics.jsonl"; a garbage line was left out without a
// word; a run of one report had a train curve in the key but none drawn (lines need two points).
TEST(Plot, TakesARunsMetricsFileWarnsOfLinesLeftOutAndDrawsACurveOfOnePoint) {
    PlotFixture fixture;
    const ScopedEnvironment temporary("TMPDIR", fixture.temporary.string());
    const auto copies = fixture.directory.path() / "copies";
    std::filesystem::create_directories(copies);
    fixture.fake_gnuplot("cp \"$(dirname \"$1\")\"/*.dat \"$1\" '" + copies.string() + "'\n");
    const ScopedEnvironment path("PATH", fixture.bin.string() + ":/usr/bin:/bin");
    fixture.directory.write("run/metrics.jsonl", R"({"step":10,"train_loss":3.1,"validation_loss":3.2,"averaged_validation_loss":3.3,"elapsed_seconds":6}
{"step":20,"train_lo
not json at all
{"step":20,"final_validation_loss":3.0,"validation_characters":99}
)");
    const auto metrics = fixture.run / "metrics.jsonl";
    EXPECT_EQ(run_directory_of(metrics), fixture.run);
    EXPECT_EQ(run_directory_of(fixture.run), fixture.run);
    fixture.directory.write("run/last.safetensors", "x");
    EXPECT_EQ(error_of([&] { run_directory_of(fixture.run / "last.safetensors"); }),
              (fixture.run / "last.safetensors").string() + ": is a file; give the run directory that holds metrics.jsonl, such as " +
                  fixture.run.string());
    const std::vector<std::string> warnings = plot_losses(metrics, fixture.directory.path() / "one.png");
    ASSERT_EQ(warnings.size(), 1u);
    EXPECT_EQ(warnings[0], metrics.string() + ": left out 2 lines that are no metrics record (line 2 and 1 more)");
    EXPECT_EQ(read_bytes(copies / "losses.dat"), "10 3.1 3.2 3.3\n");
    const std::string script = read_bytes(copies / "plot.gp");
    EXPECT_NE(script.find("using 1:2 with points pt 7 ps 1.2 title 'train'"), std::string::npos) << script;
    EXPECT_NE(script.find("using 1:4 with points pt 7 ps 1.2 title 'validation, averaged'"), std::string::npos) << script;
    EXPECT_EQ(script.find("with lines lw"), std::string::npos) << "a line of one point draws nothing\n" << script;
    // Compared, each run's file is taken too, its warnings said, and an averaged curve of one point drawn.
    const std::vector<std::string> compared = plot_validation_losses({metrics}, fixture.directory.path() / "both.png", PlotAxis::step);
    EXPECT_EQ(compared, warnings);
    EXPECT_EQ(read_bytes(copies / "plot.gp").find("with lines lw"), std::string::npos) << read_bytes(copies / "plot.gp");
    EXPECT_TRUE(fixture.temporary_is_empty());
}

TEST(Plot, WritesAPngWithTheRealGnuplot) {
    if (std::system("command -v gnuplot > /dev/null 2>&1") != 0) GTEST_SKIP() << "gnuplot is not installed";
    PlotFixture fixture;
    const ScopedEnvironment temporary("TMPDIR", fixture.temporary.string());
    const auto output = fixture.directory.path() / "it's a plot.png";  // a quote, as gnuplot's strings need it doubled
    plot_losses(fixture.run, output);
    EXPECT_EQ(read_bytes(output).substr(0, 8), "\x89PNG\r\n\x1a\n");
    EXPECT_TRUE(fixture.temporary_is_empty());
    EXPECT_EQ(error_of([&] { plot_losses(fixture.run, fixture.directory.path() / "missing" / "loss.png"); }),
              "gnuplot failed: cannot open file; output not changed (No such file or directory)");
    EXPECT_TRUE(fixture.temporary_is_empty());
}

TEST(Plot, RefusesAMissingRunEmptyMetricsAndAnOutputWithALineBreak) {
    PlotFixture fixture;
    EXPECT_NE(error_of([&] { plot_losses(fixture.directory.path() / "none", "x.png"); }).find("no metrics.jsonl"), std::string::npos);
    fixture.directory.write("run/metrics.jsonl", "");
    EXPECT_NE(error_of([&] { plot_losses(fixture.run, "x.png"); }).find("has no metrics yet"), std::string::npos);
    fixture.directory.write("run/metrics.jsonl", R"({"step":10,"train_loss":3.1})" "\n");
    // A line break would end gnuplot's 'set output' and start a command of the path's choosing.
    EXPECT_NE(error_of([&] { plot_losses(fixture.run, "x\nsystem('touch hacked')\n.png"); }).find("line break"), std::string::npos);
}

}  // namespace
}  // namespace charlm
