// Checks checkpoint.cpp: round trips, the safetensors layout, atomic writes and refusal of bad files.
#include <sys/inotify.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstring>
#include <random>
#include <regex>
#include <thread>

#include <gtest/gtest.h>

#include "charlm/checkpoint.hpp"
#include "charlm/error.hpp"
#include "test_helpers.hpp"
#include "text_helpers.hpp"

namespace charlm {
namespace {

using testing::read_bytes;
using testing::TemporaryDirectory;

struct Saved {
    Vocab vocab = testing::vocab_of_text(U"abcdé\n");
    Model<float> model;
    Saved() : model(config()) {
        std::mt19937_64 rng(5);
        model.initialize(rng);
    }
    static ModelConfig config() {
        ModelConfig config;
        config.vocab_size = 6;
        config.embed_size = 4;
        config.hidden_size = 8;
        config.layers = 2;
        return config;
    }
    Matrix<float> logits(Model<float>& m) const {
        ModelState<float> state = m.initial_state(2);
        std::vector<TokenId> inputs{0, 1, 2, 3, 4, 5};
        m.forward(inputs, 3, 2, state);
        return m.logits();
    }
};

TEST(Checkpoint, SaveThenLoadGivesIdenticalLogits) {
    TemporaryDirectory directory;
    Saved saved;
    TrainingState training;
    training.step = 42;
    training.best_validation_loss = 1.25;
    training.options = {{"note", "kept"}};
    const auto path = directory.path() / "model.safetensors";
    save_checkpoint(path, saved.model, saved.vocab, training, nullptr, nullptr);
    Checkpoint loaded = load_checkpoint(path);
    EXPECT_EQ(loaded.vocab.code_points(), saved.vocab.code_points());
    EXPECT_EQ(loaded.training.step, 42);
    EXPECT_DOUBLE_EQ(loaded.training.best_validation_loss, 1.25);
    EXPECT_EQ(loaded.training.options["note"], "kept");
    EXPECT_FALSE(loaded.optimizer.has_value());
    const Matrix<float> expected = saved.logits(saved.model);
    const Matrix<float> actual = saved.logits(*loaded.model);
    EXPECT_EQ(expected, actual);  // bit for bit
}

TEST(Checkpoint, OptimizerAndCarriedStateRoundTrip) {
    TemporaryDirectory directory;
    Saved saved;
    Adam adam(saved.model.parameters());
    // A gradient of its own for every element of every parameter, over two steps: a moment stored under
    // another parameter's name, or transposed, or one step old, differs somewhere.
    std::mt19937_64 rng(5);
    std::normal_distribution<float> normal;
    for (int step = 0; step < 2; ++step) {
        for (auto& parameter : saved.model.parameters())
            parameter.gradient = parameter.gradient.unaryExpr([&](float) { return normal(rng); });
        ASSERT_TRUE(adam.step(saved.model.parameters(), 0.01));
    }
    ModelState<float> state = saved.model.initial_state(3);
    for (auto* layers : {&state.hidden, &state.cell})
        for (auto& matrix : *layers) matrix = matrix.unaryExpr([&](float) { return normal(rng); });
    const auto path = directory.path() / "last.safetensors";
    save_checkpoint(path, saved.model, saved.vocab, {}, &adam, &state);
    Checkpoint loaded = load_checkpoint(path);
    ASSERT_TRUE(loaded.optimizer.has_value());
    ASSERT_TRUE(loaded.carried_state.has_value());
    EXPECT_EQ(loaded.optimizer->step_count(), 2);
    ASSERT_EQ(loaded.optimizer->first_moments().size(), adam.first_moments().size());
    ASSERT_EQ(loaded.optimizer->second_moments().size(), adam.second_moments().size());
    for (std::size_t i = 0; i < adam.first_moments().size(); ++i) {
        EXPECT_EQ(loaded.optimizer->first_moments()[i], adam.first_moments()[i]) << "first moment " << i;
        EXPECT_EQ(loaded.optimizer->second_moments()[i], adam.second_moments()[i]) << "second moment " << i;
    }
    ASSERT_EQ(loaded.carried_state->hidden.size(), state.hidden.size());
    ASSERT_EQ(loaded.carried_state->cell.size(), state.cell.size());
    for (std::size_t l = 0; l < state.hidden.size(); ++l) {
        EXPECT_EQ(loaded.carried_state->hidden[l], state.hidden[l]) << "hidden state " << l;
        EXPECT_EQ(loaded.carried_state->cell[l], state.cell[l]) << "cell state " << l;
    }
}

TEST(Checkpoint, CellsWithoutACellStateCarryOnlyTheirHiddenState) {
    // A GRU carries no c: its checkpoints hold no state.cell_l* tensors, and those of earlier versions,
    // which wrote zeros there, still load.
    TemporaryDirectory directory;
    const Vocab vocab = testing::vocab_of_text(U"abc");
    ModelConfig config = Saved::config();
    config.cell = CellType::gru;
    config.vocab_size = 3;
    Model<float> model(config);
    ModelState<float> state = model.initial_state(2);
    ASSERT_TRUE(state.cell.empty());
    state.hidden[0].setConstant(0.5f);
    const auto path = directory.path() / "gru.safetensors";
    save_checkpoint(path, model, vocab, {}, nullptr, &state);
    EXPECT_EQ(read_bytes(path).find("state.cell_l"), std::string::npos);
    EXPECT_EQ(load_checkpoint(path).carried_state->hidden[0], state.hidden[0]);

    ModelState<float> earlier = state;  // as an earlier version kept it
    earlier.cell.assign(2, Matrix<float>::Zero(2, config.hidden_size));
    save_checkpoint(path, model, vocab, {}, nullptr, &earlier);
    ASSERT_NE(read_bytes(path).find("state.cell_l1"), std::string::npos);
    const Checkpoint loaded = load_checkpoint(path);
    EXPECT_EQ(loaded.carried_state->hidden[0], state.hidden[0]);
    EXPECT_TRUE(loaded.carried_state->cell.empty());
}

TEST(Checkpoint, FileIsSafetensorsWithPyTorchNames) {
    TemporaryDirectory directory;
    Saved saved;
    const auto path = directory.path() / "model.safetensors";
    save_checkpoint(path, saved.model, saved.vocab, {}, nullptr, nullptr);
    const std::string bytes = read_bytes(path);
    std::uint64_t header_length = 0;
    std::memcpy(&header_length, bytes.data(), 8);
    EXPECT_EQ((8 + header_length) % 8, 0u);
    const auto header = nlohmann::json::parse(bytes.substr(8, header_length));
    EXPECT_EQ(header["rnn.weight_ih_l1"]["shape"], nlohmann::json({32, 8}));
    EXPECT_EQ(header["rnn.bias_hh_l0"]["dtype"], "F32");
    EXPECT_EQ(header["embedding.weight"]["shape"], nlohmann::json({6, 4}));
    EXPECT_TRUE(header.contains("head.weight"));
    EXPECT_TRUE(header["__metadata__"].contains("vocab"));
}

// Every way a file can be wrong must be an Error naming the problem, never a crash.
TEST(Checkpoint, RefusesDamagedFiles) {
    TemporaryDirectory directory;
    Saved saved;
    const auto path = directory.path() / "good.safetensors";
    save_checkpoint(path, saved.model, saved.vocab, {}, nullptr, nullptr);
    const std::string good = read_bytes(path);
    auto expect_refused = [&](const std::string& bytes, const std::string& fragment) {
        try {
            parse_checkpoint(bytes, "bad.safetensors");
            ADD_FAILURE() << "accepted a file that should mention: " << fragment;
        } catch (const Error& error) {
            EXPECT_NE(std::string(error.what()).find(fragment), std::string::npos) << error.what();
            EXPECT_NE(std::string(error.what()).find("bad.safetensors"), std::string::npos) << error.what();
        }
    };
    expect_refused("", "too short");
    expect_refused(good.substr(0, good.size() / 2), "outside");
    expect_refused(good.substr(0, 20), "header length");
    std::mt19937_64 rng(1);
    std::string random_bytes(4096, '\0');
    for (auto& byte : random_bytes) byte = static_cast<char>(rng());
    expect_refused(random_bytes, "header length");

    std::uint64_t header_length = 0;
    std::memcpy(&header_length, good.data(), 8);
    auto header = nlohmann::json::parse(good.substr(8, header_length));
    const std::string data = good.substr(8 + header_length);
    auto with_header = [&](const nlohmann::json& changed) {
        std::string text = changed.dump();
        std::string bytes(8, '\0');
        const std::uint64_t length = text.size();
        std::memcpy(bytes.data(), &length, 8);
        return bytes + text + data;
    };
    auto changed = header;
    changed["head.bias"]["shape"] = {5};
    expect_refused(with_header(changed), "head.bias");
    changed = header;
    changed["head.bias"]["dtype"] = "F16";
    expect_refused(with_header(changed), "F16");
    changed = header;
    changed["rnn.bias_ih_l0"]["data_offsets"] = changed["rnn.weight_hh_l0"]["data_offsets"];
    changed["rnn.bias_ih_l0"]["shape"] = changed["rnn.weight_hh_l0"]["shape"];
    expect_refused(with_header(changed), "overlap");
    changed = header;
    changed.erase("rnn.weight_hh_l1");
    expect_refused(with_header(changed), "rnn.weight_hh_l1' is missing");
    changed = header;
    changed["__metadata__"].erase("format");
    expect_refused(with_header(changed), "not a charlm checkpoint");
    changed = header;
    changed["__metadata__"]["vocab"] = "[97, 98]";
    expect_refused(with_header(changed), "vocabulary has 2 entries");
    changed = header;
    changed["__metadata__"]["config"] = R"({"cell":"lstm","vocab_size":6,"embed_size":4,"hidden_size":9,"layers":2})";
    expect_refused(with_header(changed), "shape");
    expect_refused(with_header(nlohmann::json::array()), "not a valid JSON object");
    expect_refused(with_header(nlohmann::json::parse(std::string(500, '[') + std::string(500, ']'))), "nested too deeply");

    // Found by fuzzing: a float where an integer belongs (undefined behaviour in a plain cast),
    // an integer that wraps, and a tiny file that claims a model of many gigabytes.
    changed = header;
    changed["__metadata__"]["config"] = R"({"cell":"lstm","vocab_size":6,"embed_size":4,"hidden_size":8,"layers":1e10})";
    expect_refused(with_header(changed), "wrong types");
    changed["__metadata__"]["config"] = R"({"cell":"lstm","vocab_size":6,"embed_size":4,"hidden_size":8,"layers":4294967298})";
    expect_refused(with_header(changed), "wrong types");
    changed = header;
    changed["__metadata__"]["training"] = R"({"step":1e300,"best_validation_loss":null,"data_position":0,"rng_state":"","options":{}})";
    expect_refused(with_header(changed), "training");
    changed = header;
    changed["__metadata__"]["config"] = R"({"cell":"lstm","vocab_size":6,"embed_size":16000,"hidden_size":16384,"layers":1})";
    expect_refused(with_header(changed), "truncated or corrupt");

    // A NaN weight.
    std::string nan_file = good;
    const auto offset = header["head.bias"]["data_offsets"][0].get<std::size_t>();
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::memcpy(nan_file.data() + 8 + header_length + offset, &nan, 4);
    expect_refused(nan_file, "non-finite");
}

// The training state steers a resumed run: Adam's bias correction takes its step count as an exponent and
// the data cursor picks the next window. A count below 0 or above 10^15 is refused, naming the field;
// and a bad model config in a file is a bad file (exit 1), never the user's usage error (exit 2).
TEST(Checkpoint, RefusesNonsenseTrainingCounts) {
    TemporaryDirectory directory;
    Saved saved;
    Adam adam(saved.model.parameters());
    ModelState<float> state = saved.model.initial_state(2);
    TrainingState training;
    training.step = 10;
    const auto path = directory.path() / "last.safetensors";
    save_checkpoint(path, saved.model, saved.vocab, training, &adam, &state);
    const std::string good = read_bytes(path);
    std::uint64_t header_length = 0;
    std::memcpy(&header_length, good.data(), 8);
    const auto header = nlohmann::json::parse(good.substr(8, header_length));
    const auto training_json = nlohmann::json::parse(header["__metadata__"]["training"].get<std::string>());
    auto with_metadata = [&](const std::string& key, const std::string& value) {
        auto changed = header;
        changed["__metadata__"][key] = value;
        const std::string text = changed.dump();
        std::string bytes(8, '\0');
        const std::uint64_t length = text.size();
        std::memcpy(bytes.data(), &length, 8);
        return bytes + text + good.substr(8 + header_length);
    };
    auto with_training = [&](const std::string& field, const nlohmann::json& value) {
        auto changed = training_json;
        changed[field] = value;
        return with_metadata("training", changed.dump());
    };
    auto expect_refused = [&](const std::string& bytes, const std::vector<std::string>& fragments) {
        try {
            parse_checkpoint(bytes, "bad.safetensors");
            ADD_FAILURE() << "accepted a file that should mention: " << fragments.front();
        } catch (const UsageError& error) {
            ADD_FAILURE() << "a bad file is not a usage error: " << error.what();
        } catch (const Error& error) {
            const std::string message = error.what();
            EXPECT_EQ(message.rfind("bad.safetensors: ", 0), 0u) << message;
            EXPECT_EQ(message.find('\n'), std::string::npos) << message;
            for (const auto& fragment : fragments) EXPECT_NE(message.find(fragment), std::string::npos) << message;
        }
    };
    ASSERT_NO_THROW(parse_checkpoint(good, "good.safetensors"));
    const std::int64_t too_many = 10'000'000'000'000'000;
    expect_refused(with_training("step", -1), {"step -1"});
    expect_refused(with_training("step", too_many), {"step 10000000000000000"});
    expect_refused(with_training("optimizer_steps", -5), {"optimizer_steps -5"});
    expect_refused(with_training("optimizer_steps", too_many), {"optimizer_steps 10000000000000000"});
    expect_refused(with_training("optimizer_steps", 1.5), {"optimizer_steps 1.5"});
    expect_refused(with_training("optimizer_steps", "7"), {"optimizer_steps \"7\""});
    expect_refused(with_training("evaluations_since_best", -3), {"evaluations_since_best -3"});
    expect_refused(with_training("data_position", -1), {"data_position -1"});
    expect_refused(with_training("best_validation_loss", -0.5), {"best_validation_loss -0.5"});
    expect_refused(with_metadata("training", "[1, 2]"), {"training"});

    // The largest count accepted is 10^15, and an Adam step count of that size is carried over as it is.
    auto largest = training_json;
    largest["step"] = 1'000'000'000'000'000;
    largest["optimizer_steps"] = 1'000'000'000'000'000;
    const Checkpoint loaded = parse_checkpoint(with_metadata("training", largest.dump()), "large.safetensors");
    EXPECT_EQ(loaded.training.step, 1'000'000'000'000'000);
    EXPECT_EQ(loaded.optimizer->step_count(), 1'000'000'000'000'000);

    expect_refused(with_metadata("config", R"({"cell":"lstm","vocab_size":6,"embed_size":4,"hidden_size":0,"layers":2})"),
                   {"hidden size must be between 1 and 16384, not 0"});
    expect_refused(with_metadata("config", R"({"cell":"transformer","vocab_size":6,"embed_size":4,"hidden_size":8,"layers":2})"),
                   {"unknown cell type 'transformer'"});
}

TEST(Checkpoint, MissingFileOrDirectoryIsAnError) {
    TemporaryDirectory directory;
    EXPECT_THROW(load_checkpoint(directory.path() / "none.safetensors"), Error);
    EXPECT_THROW(load_checkpoint(directory.path()), Error);
}

TEST(Checkpoint, FailedWriteLeavesThePreviousFileIntact) {
    TemporaryDirectory directory;
    Saved saved;
    const auto path = directory.path() / "last.safetensors";
    save_checkpoint(path, saved.model, saved.vocab, {}, nullptr, nullptr);
    const std::string before = read_bytes(path);

    // A full disk, simulated by a file-size limit smaller than the checkpoint.
    struct rlimit old_limit {};
    getrlimit(RLIMIT_FSIZE, &old_limit);
    auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
    struct rlimit small_limit = old_limit;
    small_limit.rlim_cur = 1000;
    setrlimit(RLIMIT_FSIZE, &small_limit);
    saved.model.parameters()[0].value.setConstant(7.0f);
    EXPECT_THROW(save_checkpoint(path, saved.model, saved.vocab, {}, nullptr, nullptr), Error);
    setrlimit(RLIMIT_FSIZE, &old_limit);
    std::signal(SIGXFSZ, old_handler);

    EXPECT_EQ(read_bytes(path), before);
    std::size_t files = 0;
    for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator(directory.path())) ++files;
    EXPECT_EQ(files, 1u) << "the temporary file was left behind";
}

// A temporary at a name known in advance (.NAME.tmp-PID, as it once was) lets anyone who can write to the
// folder plant a symlink there and have the checkpoint's bytes written through it into another file.
TEST(Checkpoint, WriteNeverFollowsASymlinkPlantedAtATemporaryName) {
    TemporaryDirectory directory;
    Saved saved;
    const auto path = directory.path() / "last.safetensors";
    const auto victim = directory.write("victim.txt", "precious");
    const auto planted = directory.path() / (".last.safetensors.tmp-" + std::to_string(::getpid()));
    std::filesystem::create_symlink(victim, planted);
    save_checkpoint(path, saved.model, saved.vocab, {}, nullptr, nullptr);
    EXPECT_EQ(read_bytes(victim), "precious");
    EXPECT_FALSE(std::filesystem::is_symlink(path)) << "the checkpoint must be a file of its own";
    EXPECT_TRUE(std::filesystem::is_symlink(planted)) << "someone else's file is left alone";
    EXPECT_NO_THROW(load_checkpoint(path));
}

// Each write creates its own temporary, so two writers of one path (two threads here; two processes are
// the same to the file system) never write into each other's file, and the result is one of them whole.
TEST(Checkpoint, ConcurrentWritesToOnePathNeverShareATemporary) {
    TemporaryDirectory directory;
    const auto path = directory.path() / "last.safetensors";
    const std::string first(1 << 18, 'a'), second(1 << 18, 'b');
    std::atomic<int> failures{0};
    auto writer = [&](const std::string& bytes) {
        for (int round = 0; round < 20; ++round) {
            try {
                write_file_atomically(path, bytes);
            } catch (const Error&) {
                ++failures;
            }
        }
    };
    std::thread one(writer, std::cref(first)), two(writer, std::cref(second));
    one.join();
    two.join();
    EXPECT_EQ(failures.load(), 0);
    const std::string result = read_bytes(path);
    EXPECT_TRUE(result == first || result == second) << "a mixture of both writes";
    std::size_t files = 0;
    for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator(directory.path())) ++files;
    EXPECT_EQ(files, 1u) << "a temporary file was left behind";
}

// The temporary's name is random, and keeps the prefix that train() sweeps after a killed run.
TEST(Checkpoint, TemporaryNamesAreRandomWithThePrefixThatTrainingSweeps) {
    TemporaryDirectory directory;
    const int watch = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    ASSERT_GE(watch, 0);
    ASSERT_GE(::inotify_add_watch(watch, directory.path().c_str(), IN_CREATE), 0);
    const auto path = directory.path() / "best.safetensors";
    write_file_atomically(path, "one");
    write_file_atomically(path, "two");
    std::vector<std::string> created;
    alignas(inotify_event) char buffer[4096];
    const ssize_t length = ::read(watch, buffer, sizeof buffer);
    ::close(watch);
    for (ssize_t offset = 0; offset < length;) {
        const auto* event = reinterpret_cast<const inotify_event*>(buffer + offset);
        if (event->len > 0) created.emplace_back(event->name);
        offset += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
    }
    ASSERT_EQ(created.size(), 2u);
    const std::regex pattern(R"(^\.best\.safetensors\.tmp-[A-Za-z0-9]{6}$)");
    for (const auto& name : created) {
        EXPECT_TRUE(std::regex_match(name, pattern)) << name;
        EXPECT_NE(name, ".best.safetensors.tmp-" + std::to_string(::getpid())) << "a name anyone could predict";
    }
    EXPECT_NE(created[0], created[1]);
    EXPECT_EQ(read_bytes(path), "two");
}

}  // namespace
}  // namespace charlm
