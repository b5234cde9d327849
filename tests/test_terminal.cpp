// Checks terminal.cpp: when the log is coloured, how characters are shown for a person to read, and the
// lines that show a training run's progress.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "charlm/display.hpp"
#include "cli/terminal.hpp"

namespace charlm {
namespace {

// https://no-color.org: set and not empty turns colour off, whatever the terminal; empty is as unset.
TEST(Terminal, NoColorAndAPipeTurnTheLogsColourOff) {
    EXPECT_EQ(log_color_mode(nullptr, true), spdlog::color_mode::automatic);
    EXPECT_EQ(log_color_mode("", true), spdlog::color_mode::automatic);
    EXPECT_EQ(log_color_mode("1", true), spdlog::color_mode::never);
    EXPECT_EQ(log_color_mode("0", true), spdlog::color_mode::never) << "any value counts, even 0";
    EXPECT_EQ(log_color_mode(nullptr, false), spdlog::color_mode::never);
    EXPECT_EQ(log_color_mode("1", false), spdlog::color_mode::never);
}

TEST(Terminal, ControlCharactersAreEscapedNeverAQuestionMark) {
    EXPECT_EQ(displayable(U'\n'), "\\n");
    EXPECT_EQ(displayable(U'\t'), "\\t");
    EXPECT_EQ(displayable(U'\r'), "\\r");
    EXPECT_EQ(displayable(U'\0'), "\\0");
    EXPECT_EQ(displayable(U'\\'), "\\\\") << "a backslash escaped, or 'n' after it would read as a newline";
    EXPECT_EQ(displayable(char32_t{0x01}), "U+0001");
    EXPECT_EQ(displayable(char32_t{0x1B}), "U+001B") << "an escape character would drive the terminal";
    EXPECT_EQ(displayable(char32_t{0x7F}), "U+007F");
    EXPECT_EQ(displayable(char32_t{0x85}), "U+0085");
    EXPECT_EQ(displayable(char32_t{0x110000}), "U+110000");
}

TEST(Terminal, MarksFormatCharactersAndOddSpacesAreShownByNumber) {
    EXPECT_EQ(displayable(char32_t{0x0301}), "U+0301");    // combining acute accent
    EXPECT_EQ(displayable(char32_t{0x05B0}), "U+05B0");    // Hebrew point sheva
    EXPECT_EQ(displayable(char32_t{0x20DD}), "U+20DD");    // combining enclosing circle
    EXPECT_EQ(displayable(char32_t{0x202E}), "U+202E");    // right-to-left override
    EXPECT_EQ(displayable(char32_t{0x200D}), "U+200D");    // zero-width joiner
    EXPECT_EQ(displayable(char32_t{0xFEFF}), "U+FEFF");    // byte order mark
    EXPECT_EQ(displayable(char32_t{0x00A0}), "U+00A0");    // no-break space, which looks like a space
    EXPECT_EQ(displayable(char32_t{0x2028}), "U+2028");    // line separator
    EXPECT_EQ(displayable(char32_t{0xE000}), "U+E000");    // private use
}

TEST(Terminal, PrintableCharactersAreThemselves) {
    EXPECT_EQ(displayable(U'a'), "a");
    EXPECT_EQ(displayable(U' '), " ");
    EXPECT_EQ(displayable(U'é'), "é");
    EXPECT_EQ(displayable(U'日'), "日");
    EXPECT_EQ(displayable(U'→'), "→");
    EXPECT_EQ(displayable(char32_t{0x0915}), "\u0915");  // Devanagari ka
    EXPECT_EQ(displayable(char32_t{0x1F600}), "\U0001F600");
}

TEST(Terminal, TextIsShownCharacterByCharacterAndBadBytesAsHex) {
    EXPECT_EQ(displayable(std::string_view("caf\xc3\xa9 \xe2\x86\x92 x")), "café → x");
    EXPECT_EQ(displayable(std::string_view("e\xcc\x81")), "eU+0301");
    EXPECT_EQ(displayable(std::string_view("a\nb\x1b[31mc")), "a\\nbU+001B[31mc");
    EXPECT_EQ(displayable(std::string_view("bad\xff\xc3")), "bad\\xFF\\xC3");
    EXPECT_EQ(displayable(std::string_view("")), "");
}

TEST(Terminal, DurationsReadAsSecondsMinutesOrHours) {
    EXPECT_EQ(format_duration(0), "0s");
    EXPECT_EQ(format_duration(42.4), "42s");
    EXPECT_EQ(format_duration(59.6), "1m00s");
    EXPECT_EQ(format_duration(187), "3m07s");
    EXPECT_EQ(format_duration(7500), "2h05m");
}

TEST(Terminal, CountsReadToThreeDigits) {
    EXPECT_EQ(format_count(0), "0");
    EXPECT_EQ(format_count(999), "999");
    EXPECT_EQ(format_count(1234), "1.23k");
    EXPECT_EQ(format_count(320'000), "320k");
    EXPECT_EQ(format_count(999'999), "1M");
    EXPECT_EQ(format_count(5'500'000), "5.5M");
    EXPECT_EQ(format_count(1'230'000'000), "1.23G");
}

TEST(Terminal, ARunIsDescribedInOneLine) {
    RunDescription run;
    run.model.cell = CellType::gru;
    run.model.layers = 2;
    run.model.hidden_size = 16;
    run.model.embed_size = 8;
    run.model.vocab_size = 30;
    run.train_characters = 4560;
    run.validation_characters = 240;
    run.windows_per_pass = 71;
    run.seq_length = 16;
    run.batch_size = 4;
    EXPECT_EQ(describe_run(run), fmt::format("training gru 2x16 ({} parameters) on 4560 characters, validating on 240, 71 "
                                             "windows of 16x4 per pass",
                                             run.model.parameter_count()));
    run.periodic_validation_characters = 239;  // all of them: predictions of 240 characters
    EXPECT_EQ(describe_run(run).find("each time"), std::string::npos);
    run.periodic_validation_characters = 40;
    EXPECT_EQ(describe_run(run), fmt::format("training gru 2x16 ({} parameters) on 4560 characters, validating on 240 (40 of "
                                             "them each time, all at the end), 71 windows of 16x4 per pass",
                                             run.model.parameter_count()));
    run.validation_characters = 1;  // nothing to predict
    EXPECT_NE(describe_run(run).find("on 4560 characters, with no validation, 71 windows"), std::string::npos) << describe_run(run);
}

TEST(Terminal, TheStatusLineAndTheReportLineShowTheSameFigures) {
    ProgressReport report;
    report.step = 120;
    report.total_steps = 2000;
    report.epoch = 2.3125;  // beside the step, to two decimals
    report.train_loss = 1.98771;
    report.learning_rate = 0.002;
    report.chars_per_second = 41234;
    report.elapsed_seconds = 62;
    report.remaining_seconds = 970;
    EXPECT_EQ(format_status_line(report), "step 120/2000 | epoch 2.31 | train 1.9877 | 41.2k chars/s | 1m02s | ETA 16m10s");
    EXPECT_EQ(format_report_line(report), "step 120/2000 | epoch 2.31 | train 1.9877 | lr 2.00e-03 | 41.2k chars/s | 1m02s | ETA 16m10s");
    report.evaluated = true;
    report.validation_loss = 2.0123;
    EXPECT_EQ(format_report_line(report), "step 120/2000 | epoch 2.31 | train 1.9877 | val 2.0123 | lr 2.00e-03 | 41.2k chars/s | 1m02s | ETA 16m10s");
    report.new_best = true;
    EXPECT_EQ(format_report_line(report),
              "step 120/2000 | epoch 2.31 | train 1.9877 | val 2.0123 (best) | lr 2.00e-03 | 41.2k chars/s | 1m02s | ETA 16m10s");
    // A validation of part of the held-out text says how much it covers; one of all of it, nothing more.
    report.validation_characters = 320'000;
    report.held_out_characters = 5'500'000;
    EXPECT_EQ(format_report_line(report), "step 120/2000 | epoch 2.31 | train 1.9877 | val 2.0123 (best, on 320k of 5.5M held-out chars) | "
                                          "lr 2.00e-03 | 41.2k chars/s | 1m02s | ETA 16m10s");
    report.new_best = false;
    EXPECT_EQ(format_report_line(report), "step 120/2000 | epoch 2.31 | train 1.9877 | val 2.0123 (on 320k of 5.5M held-out chars) | "
                                          "lr 2.00e-03 | 41.2k chars/s | 1m02s | ETA 16m10s");
    // With averaged weights (--ema), "(best)" follows whichever figure was the best, and the part scored follows the last.
    report.averaged_validation_loss = 2.0456;
    report.new_best = true;
    EXPECT_EQ(format_report_line(report), "step 120/2000 | epoch 2.31 | train 1.9877 | val 2.0123 (best), averaged 2.0456 (on 320k of "
                                          "5.5M held-out chars) | lr 2.00e-03 | 41.2k chars/s | 1m02s | ETA 16m10s");
    report.averaged_validation_loss = 2.0012;
    report.best_is_averaged = true;
    EXPECT_EQ(format_report_line(report), "step 120/2000 | epoch 2.31 | train 1.9877 | val 2.0123, averaged 2.0012 (best, on 320k of "
                                          "5.5M held-out chars) | lr 2.00e-03 | 41.2k chars/s | 1m02s | ETA 16m10s");
    report.averaged_validation_loss.reset();
    report.new_best = report.best_is_averaged = false;
    report.validation_characters = report.held_out_characters;
    EXPECT_EQ(format_report_line(report), "step 120/2000 | epoch 2.31 | train 1.9877 | val 2.0123 | lr 2.00e-03 | 41.2k chars/s | 1m02s | ETA 16m10s");
    // A run bounded by --minutes alone has no step total, and no time left to tell.
    report.total_steps = 0;
    report.remaining_seconds.reset();
    report.validation_loss.reset();
    report.new_best = false;
    EXPECT_EQ(format_status_line(report), "step 120 | epoch 2.31 | train 1.9877 | 41.2k chars/s | 1m02s");
    EXPECT_EQ(format_report_line(report), "step 120 | epoch 2.31 | train 1.9877 | lr 2.00e-03 | 41.2k chars/s | 1m02s");
}

}  // namespace
}  // namespace charlm
