// Checks terminal.cpp: when the log is coloured, how characters are shown for a person to read, the
// lines that show a training run's progress, and `charlm info`'s text.
#include <algorithm>
#include <regex>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "charlm/checkpoint.hpp"
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
    // 239 predictions of 240 held-out characters, as metrics.jsonl and the summary count them (it said 240).
    EXPECT_EQ(describe_run(run), fmt::format("training gru 2x16 ({} parameters) on 4560 characters, validating on 239, 71 "
                                             "windows of 16x4 per pass",
                                             run.model.parameter_count()));
    run.periodic_validation_characters = 239;  // all of them: predictions of 240 characters
    EXPECT_EQ(describe_run(run).find("each time"), std::string::npos);
    run.periodic_validation_characters = 40;
    EXPECT_EQ(describe_run(run), fmt::format("training gru 2x16 ({} parameters) on 4560 characters, validating on 239 (40 of "
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

// A checkpoint's description reads its config, vocabulary and training state, never its weights.
Checkpoint small_checkpoint() {
    Checkpoint checkpoint;
    checkpoint.config.vocab_size = 6;
    checkpoint.config.embed_size = 4;
    checkpoint.config.hidden_size = 8;
    checkpoint.config.layers = 2;
    checkpoint.vocab = Vocab::from_code_points({U'\n', U'a', U'b', U'c', U'd', U'é'});
    return checkpoint;
}

// charlm info: what reproducing a run takes, read from the options stored with it.
TEST(Terminal, CheckpointDescriptionShowsWhatReproducingARunTakes) {
    Checkpoint checkpoint = small_checkpoint();
    checkpoint.vocab = Vocab::from_code_points({U'\0', 0x01, U'\t', U'\n', U'\r', U'\\', U'a', 0x0301});
    checkpoint.config.vocab_size = 8;
    checkpoint.training.step = 30;
    checkpoint.training.best_validation_loss = 1.5;
    checkpoint.training.best_step = 20;
    checkpoint.training.options = {{"ema", 0.999}, {"clip", 0.0},
        {"corpus", "/data/shakespeare.txt"}, {"corpus_size_bytes", 1115394},
        {"corpus_sha256", "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"},
        {"validation_file", nullptr}, {"validation_file_size_bytes", nullptr}, {"validation_file_sha256", nullptr},
        {"train_characters", 1280}, {"seq_length", 16}, {"batch_size", 4}, {"learning_rate", 0.002},
        {"validation_fraction", 0.05}, {"lr_schedule", "cosine"},
        {"model", {{"cell", "gru"}, {"hidden_size", 8}, {"layers", 2}}},
        {"run_directory", "runs/a\x1b[31mb"}};
    const nlohmann::json description = describe_checkpoint(checkpoint);
    EXPECT_EQ(description.at("corpus"), "/data/shakespeare.txt");
    EXPECT_EQ(description.at("corpus_size_bytes"), 1115394);
    EXPECT_EQ(description.at("corpus_sha256"), "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed");
    EXPECT_TRUE(description.at("validation_file").is_null());
    EXPECT_EQ(description.at("train_characters"), 1280);
    EXPECT_DOUBLE_EQ(description.at("epochs").get<double>(), 30.0 * 16 * 4 / 1280);  // 1.5
    EXPECT_EQ(description.at("training_options"), checkpoint.training.options);
    EXPECT_EQ(description.at("steps_trained"), 30);

    const std::string text = format_checkpoint_description(description);
    for (const char* expected :
         {"trained     30 steps, 1.50 epochs\n",
          // which weights scored it, since the run averaged them
          "best val    1.5000 nats/char (perplexity 4.482) at step 20, of the step's own weights (not their average, --ema)\n",
          "corpus      /data/shakespeare.txt (1115394 bytes, sha256 86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed)\n",
          "validation  the corpus's last 5%\n", "train text  1280 characters\n",
          // the vocabulary with its control characters and its combining mark readable, never '?'
          "vocabulary  8 characters: \\0U+0001\\t\\n\\r\\\\aU+0301\n"})
        EXPECT_NE(text.find(expected), std::string::npos) << "missing: " << expected << "\nin:\n" << text;
    // Every stored option, nested ones by their dotted name, and none that can send the terminal an escape sequence.
    for (const auto& [name, value] : std::vector<std::pair<std::string, std::string>>{
             {"batch_size", "4"}, {"learning_rate", "0.002"}, {"clip", "0"}, {"ema", "0.999"}, {"lr_schedule", "cosine"}, {"model\\.cell", "gru"},
             {"model\\.hidden_size", "8"}, {"validation_file", "none"}, {"run_directory", "runs/aU\\+001B\\[31mb"}})
        EXPECT_TRUE(std::regex_search(text, std::regex("\n  " + name + " +" + value + "\n"))) << name << "\nin:\n" << text;
    EXPECT_EQ(text.find('?'), std::string::npos) << text;
    EXPECT_EQ(text.find('\x1b'), std::string::npos) << text;
    EXPECT_EQ(text.find('\r'), std::string::npos) << text;
    EXPECT_EQ(std::count(text.begin(), text.end(), '\0'), 0) << text;
}

// Older checkpoints lack the corpus's size and hash, and a crafted one may hold anything: info shows
// what there is and never fails.
TEST(Terminal, CheckpointDescriptionOfAnOlderOrOddCheckpointNeverFails) {
    Checkpoint checkpoint = small_checkpoint();
    checkpoint.training.step = 12;
    checkpoint.training.options = {{"corpus", "old.txt"}, {"seq_length", 16}, {"batch_size", 4}};
    nlohmann::json description = describe_checkpoint(checkpoint);
    EXPECT_TRUE(description.at("corpus_sha256").is_null());
    EXPECT_TRUE(description.at("epochs").is_null());
    std::string text = format_checkpoint_description(description);
    EXPECT_NE(text.find("corpus      old.txt (size and hash not recorded in this checkpoint)\n"), std::string::npos) << text;
    EXPECT_NE(text.find("trained     12 steps\n"), std::string::npos) << text;
    EXPECT_NE(text.find("best val    none yet\n"), std::string::npos) << text;

    for (const nlohmann::json& odd : {nlohmann::json(), nlohmann::json::array({1, 2}), nlohmann::json("text"),
                                      nlohmann::json{{"corpus", 5}, {"corpus_size_bytes", "big"}, {"train_characters", 0},
                                                     {"seq_length", -1}, {"batch_size", 1.5}, {"model", nlohmann::json::object()},
                                                     {"ema", "much"}}}) {
        checkpoint.training.options = odd;
        checkpoint.training.best_validation_loss = 2.0;  // so that the best's line reads the options too
        ASSERT_NO_THROW(description = describe_checkpoint(checkpoint)) << odd.dump();
        EXPECT_TRUE(description.at("corpus").is_null()) << odd.dump();
        EXPECT_TRUE(description.at("epochs").is_null()) << odd.dump();
        ASSERT_NO_THROW(text = format_checkpoint_description(description)) << odd.dump();
        EXPECT_NE(text.find("corpus      not recorded\n"), std::string::npos) << text;
    }
}

// A run started from another's weights (--init-from) says which checkpoint and the step it had reached;
// its own steps and epochs are the new run's.
TEST(Terminal, CheckpointDescriptionNamesTheCheckpointARunStartedFrom) {
    Checkpoint checkpoint = small_checkpoint();
    checkpoint.training.step = 40;
    checkpoint.training.options = {{"corpus", "new.txt"}, {"train_characters", 3200}, {"seq_length", 16}, {"batch_size", 4},
                                   {"init_from", {{"checkpoint", "/runs/kjv/best.safetensors"}, {"step", 2000}}}};
    nlohmann::json description = describe_checkpoint(checkpoint);
    EXPECT_EQ(description.at("init_from"), (nlohmann::json{{"checkpoint", "/runs/kjv/best.safetensors"}, {"step", 2000}}));
    std::string text = format_checkpoint_description(description);
    EXPECT_NE(text.find("trained     40 steps, 0.80 epochs\ninit from   /runs/kjv/best.safetensors (at its step 2000)\n"),
              std::string::npos)
        << text;
    // A run from scratch, and a crafted record of one of the wrong kinds: no line, and no failure.
    for (const nlohmann::json& odd : {nlohmann::json(nullptr), nlohmann::json("x"), nlohmann::json{{"checkpoint", 5}, {"step", 1}},
                                      nlohmann::json{{"checkpoint", "a\x1b[31m"}, {"step", -3}}}) {
        checkpoint.training.options["init_from"] = odd;
        ASSERT_NO_THROW(description = describe_checkpoint(checkpoint)) << odd.dump();
        EXPECT_TRUE(description.at("init_from").is_null()) << odd.dump();
        ASSERT_NO_THROW(text = format_checkpoint_description(description)) << odd.dump();
        EXPECT_EQ(text.find("init from"), std::string::npos) << text;
    }
}

}  // namespace
}  // namespace charlm
