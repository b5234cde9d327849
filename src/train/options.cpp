// Training options: as a checkpoint records them (JSON), their checks, and the merge of a resume's with the recorded.
#include "options.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iterator>

#include <fmt/format.h>
#include <utf8.h>

#include "charlm/display.hpp"
#include "charlm/error.hpp"
#include "charlm/json_integer.hpp"

namespace charlm {

// ---- the options as a checkpoint records them -------------------------------------------------------

nlohmann::json TrainOptions::to_json() const {
    nlohmann::json json = {
        {"corpus", corpus.empty() ? std::string() : std::filesystem::absolute(corpus).string()},
        {"run_directory", run_directory.string()},
        {"model", model.to_json()},
        {"seq_length", seq_length},
        {"batch_size", batch_size},
        {"learning_rate", learning_rate_schedule.peak_learning_rate},
        {"lr_schedule", LearningRateSchedule::name(learning_rate_schedule.kind)},
        {"warmup_steps", learning_rate_schedule.warmup_steps},
        {"lr_decay_every", learning_rate_schedule.decay_every_steps},
        {"lr_decay_factor", learning_rate_schedule.decay_factor},
        {"patience", patience},
        {"ema", average_decay},
        {"clip", clip},
        {"validation_fraction", validation_fraction},
        {"steps", steps},
        {"minutes", minutes},
        {"eval_every", eval_every},
        {"validation_characters", validation_characters ? nlohmann::json(*validation_characters) : nlohmann::json("auto")},
        {"seed", seed},
        {"corpus_size_bytes", corpus_fingerprint.size_bytes},
        {"corpus_sha256", corpus_fingerprint.sha256},
        {"train_characters", train_characters},
        {"threads", threads},
        {"processes", processes},
    };
    json["validation_file"] = validation_file ? nlohmann::json(std::filesystem::absolute(*validation_file).string()) : nlohmann::json(nullptr);
    json["validation_file_size_bytes"] = validation_fingerprint ? nlohmann::json(validation_fingerprint->size_bytes) : nlohmann::json(nullptr);
    json["validation_file_sha256"] = validation_fingerprint ? nlohmann::json(validation_fingerprint->sha256) : nlohmann::json(nullptr);
    json["init_from"] = init_from ? nlohmann::json{{"checkpoint", std::filesystem::absolute(init_from->checkpoint).string()},
                                                   {"step", init_from->step}}
                                  : nlohmann::json(nullptr);
    return json;
}

TrainOptions TrainOptions::from_json(const nlohmann::json& json) {
    TrainOptions options;
    try {
        options.corpus = json.at("corpus").get<std::string>();
        if (!json.at("validation_file").is_null()) options.validation_file = json.at("validation_file").get<std::string>();
        options.run_directory = json.at("run_directory").get<std::string>();
        options.model = ModelConfig::from_json(json.at("model"));
        options.seq_length = integer_value<int>(json.at("seq_length"));
        options.batch_size = integer_value<int>(json.at("batch_size"));
        LearningRateSchedule& schedule = options.learning_rate_schedule;
        schedule.peak_learning_rate = json.at("learning_rate").get<double>();
        options.clip = json.at("clip").get<double>();
        const std::string schedule_name = json.at("lr_schedule").get<std::string>();
        try {
            schedule.kind = LearningRateSchedule::parse(schedule_name);
        } catch (const UsageError&) {  // the file's fault, not the user's options
            throw Error(fmt::format("the checkpoint's training options name an unknown learning-rate schedule, '{}'", schedule_name));
        }
        schedule.warmup_steps = integer_value<std::int64_t>(json.at("warmup_steps"));
        schedule.decay_every_steps = integer_value<std::int64_t>(json.at("lr_decay_every"));
        schedule.decay_factor = json.at("lr_decay_factor").get<double>();
        options.patience = integer_value<int>(json.at("patience"));
        options.average_decay = json.value("ema", 0.0);
        options.validation_fraction = json.at("validation_fraction").get<double>();
        options.steps = integer_value<std::int64_t>(json.at("steps"));
        options.minutes = json.at("minutes").get<double>();
        options.eval_every = integer_value<int>(json.at("eval_every"));
        // Runs from before --val-chars validated on all the held-out text: the best loss they recorded
        // compares only with figures of all of it.
        const nlohmann::json validation_characters = json.value("validation_characters", nlohmann::json(0));
        if (validation_characters != "auto") options.validation_characters = integer_value<std::uint64_t>(validation_characters);
        options.seed = integer_value<std::uint64_t>(json.at("seed"));
        options.threads = json.contains("threads") ? integer_value<int>(json.at("threads")) : 0;
        options.processes = json.contains("processes") ? integer_value<int>(json.at("processes")) : 1;
        // Absent from checkpoints written before the corpus was fingerprinted.
        if (json.contains("corpus_sha256")) {
            options.corpus_fingerprint = {integer_value<std::uint64_t>(json.at("corpus_size_bytes")),
                                          json.at("corpus_sha256").get<std::string>()};
            options.train_characters = integer_value<std::uint64_t>(json.at("train_characters"));
            if (options.validation_file && !json.at("validation_file_sha256").is_null())
                options.validation_fingerprint = FileFingerprint{integer_value<std::uint64_t>(json.at("validation_file_size_bytes")),
                                                                 json.at("validation_file_sha256").get<std::string>()};
        }
        // Absent from checkpoints written before --init-from; null where the run started from scratch.
        if (json.contains("init_from") && !json.at("init_from").is_null())
            options.init_from = InitFrom{json.at("init_from").at("checkpoint").get<std::string>(), {},
                                         integer_value<std::int64_t>(json.at("init_from").at("step"))};
    } catch (const nlohmann::json::exception& error) {
        throw Error(fmt::format("the checkpoint's training options are incomplete ({})", error.what()));
    }
    return options;
}

// ---- checks, before anything is read or written -----------------------------------------------------

std::uint64_t periodic_validation_characters(const TrainOptions& options) {
    if (options.validation_characters) return *options.validation_characters;
    const double between_validations = static_cast<double>(options.eval_every) * options.seq_length * options.batch_size;
    return std::max<std::uint64_t>(1, static_cast<std::uint64_t>(kAutomaticValidationShare * between_validations));
}

void check_options_take_effect(const TrainOptions& options, const std::vector<std::string>& given) {
    const auto was_given = [&](const char* flag) { return std::find(given.begin(), given.end(), flag) != given.end(); };
    if (was_given("--dropout-mask") && options.model.dropout == 0 && options.model.embed_dropout == 0)
        throw UsageError("--dropout-mask says how --dropout and --embed-dropout draw their masks, and both are 0; give a rate, "
                         "or leave --dropout-mask out");
    const LearningRateSchedule& schedule = options.learning_rate_schedule;
    if (schedule.kind == LearningRateSchedule::Kind::step) return;
    for (const char* flag : {"--lr-decay-every", "--lr-decay"})
        if (std::find(given.begin(), given.end(), flag) != given.end())
            throw UsageError(fmt::format("{} sets the step schedule's decay, and this run's --lr-schedule is {}; add "
                                         "--lr-schedule step, or leave {} out",
                                         flag, LearningRateSchedule::name(schedule.kind), flag));
}

namespace {

// Training keeps about seven floats per parameter besides the activations: the weight, its gradient,
// Adam's two moments, a packed copy of the recurrent weights, and the bytes of a checkpoint being
// written (weights and moments). A model that would not fit is refused before a byte is allocated,
// rather than killed by the kernel part way.
void check_model_fits_in_memory(ModelConfig model) {
    model.vocab_size = std::max(model.vocab_size, 256);  // a fresh run's is not known yet: a typical text's
    const double needed = 28.0 * static_cast<double>(model.parameter_count());
    const double memory = static_cast<double>(::sysconf(_SC_PHYS_PAGES)) * static_cast<double>(::sysconf(_SC_PAGE_SIZE));
    if (memory > 0 && needed > 0.9 * memory)
        throw UsageError(fmt::format("a {}x{} model needs about {:.0f} GB for its parameters, gradients and optimizer "
                                     "state, and this machine has {:.0f} GB; make --hidden or --layers smaller",
                                     model.layers, model.hidden_size, needed / 1e9, memory / 1e9));
}

}  // namespace

void validate(const TrainOptions& options) {
    auto positive = [](const char* name, double value) {
        if (!(value > 0)) throw UsageError(fmt::format("{} must be positive, not {}", name, value));
    };
    positive("--seq", options.seq_length);
    positive("--batch", options.batch_size);
    const LearningRateSchedule& schedule = options.learning_rate_schedule;
    positive("--lr", schedule.peak_learning_rate);
    if (!std::isfinite(schedule.peak_learning_rate) || !std::isfinite(options.clip) || !std::isfinite(options.minutes))
        throw UsageError("--lr, --clip and --minutes must be finite numbers");
    positive("--eval-every", options.eval_every);
    positive("--lr-decay-every", static_cast<double>(schedule.decay_every_steps));
    try {
        ModelConfig model = options.model;
        model.vocab_size = std::max(model.vocab_size, 2);  // a fresh run's comes from the corpus, later
        model.validate();
    } catch (const UsageError&) {
        throw;
    } catch (const Error& error) {
        throw UsageError(error.what());  // a bad --hidden or --cell: the user's options
    }
    if (schedule.kind == LearningRateSchedule::Kind::cosine && options.steps == 0)
        throw UsageError("--lr-schedule cosine decays over the run's --steps; give --steps");
    if (schedule.warmup_steps < 0) throw UsageError(fmt::format("--warmup must be 0 or more steps, not {}", schedule.warmup_steps));
    if (!(options.average_decay >= 0 && options.average_decay < 1))
        throw UsageError(fmt::format("--ema must be at least 0 (off) and below 1, not {}; 0.999 averages over about the last 1000 steps",
                                     options.average_decay));
    if (options.patience < 0) throw UsageError(fmt::format("--patience must be 0 (off) or more validations, not {}", options.patience));
    if (!(schedule.decay_factor > 0 && schedule.decay_factor <= 1)) throw UsageError(fmt::format("--lr-decay must be in (0, 1], not {}", schedule.decay_factor));
    if (!(options.clip >= 0)) throw UsageError("--clip must be zero (off) or positive");
    if (!(options.validation_fraction >= 0 && options.validation_fraction < 1))
        throw UsageError("--val-fraction must be at least 0 and below 1");
    if (options.steps < 0 || !(options.minutes >= 0)) throw UsageError("--steps and --minutes must not be negative");
    // Checkpoints record these paths in JSON, which holds UTF-8 only: refused now, not at the first save.
    for (const auto* path : {&options.corpus, &options.run_directory, options.validation_file ? &*options.validation_file : nullptr,
                             options.init_from ? &options.init_from->checkpoint : nullptr}) {
        const std::string name = path ? path->string() : std::string();
        if (!utf8::is_valid(name.begin(), name.end()))
            throw UsageError(fmt::format("{}: the path is not UTF-8, and a checkpoint records it; rename it", displayable(name)));
    }
    if (static_cast<double>(options.seq_length) * options.batch_size * std::max(options.model.hidden_size, 1) > 2e9)
        throw UsageError("--seq x --batch x --hidden is too large to fit in memory; make one of them smaller");
    check_model_fits_in_memory(options.model);
}

// ---- resuming: the options given again over the recorded ones ---------------------------------------

namespace {

// How each training option behaves on --resume: given again, it takes effect, or it must match the checkpoint.
struct OptionOnResume {
    const char* flag;
    const char* json_pointer;  // into TrainOptions::to_json(); null for an option of the invocation, not the run
    bool may_change;
};
constexpr OptionOnResume kOptionsOnResume[] = {
    {"--lr", "/learning_rate", true},         {"--lr-schedule", "/lr_schedule", true},
    {"--warmup", "/warmup_steps", true},      {"--lr-decay-every", "/lr_decay_every", true},
    {"--lr-decay", "/lr_decay_factor", true}, {"--clip", "/clip", true},
    {"--steps", "/steps", true},              {"--minutes", "/minutes", true},
    {"--eval-every", "/eval_every", true},    {"--val-chars", "/validation_characters", true},
    {"--patience", "/patience", true},        {"--dropout", "/model/dropout", true},
    {"--embed-dropout", "/model/embed_dropout", true}, {"--weight-drop", "/model/weight_drop", true},
    {"--dropout-mask", "/model/dropout_mask", true},   {"--ema", "/ema", true},
    {"--cell", "/model/cell", false},         {"--layers", "/model/layers", false},
    {"--hidden", "/model/hidden_size", false}, {"--embed", "/model/embed_size", false},
    {"--seq", "/seq_length", false},          {"--batch", "/batch_size", false},
    {"--val-fraction", "/validation_fraction", false}, {"--seed", "/seed", false},
    {"--keep-checkpoints", nullptr, true},  // this invocation's choice, which the run does not record
};

// An option's value as the command line writes it: 0 and 0.25, not 0.0 and 0.25; step, not "step".
std::string option_value_text(const nlohmann::json& value) {
    if (value.is_number_float()) return fmt::format("{}", value.get<double>());
    if (value.is_string()) return value.get<std::string>();
    return value.dump();
}

}  // namespace

nlohmann::json options_for_resume(nlohmann::json stored, const ResumeRequest& request, std::vector<std::string>& changes) {
    const nlohmann::json requested = request.options.to_json();
    for (const std::string& flag : request.given) {
        const auto* option = std::find_if(std::begin(kOptionsOnResume), std::end(kOptionsOnResume),
                                          [&](const OptionOnResume& candidate) { return flag == candidate.flag; });
        if (option == std::end(kOptionsOnResume)) throw UsageError(fmt::format("{} cannot be given with --resume", flag));
        if (!option->json_pointer) continue;
        const nlohmann::json::json_pointer pointer(option->json_pointer);
        const nlohmann::json before = stored.contains(pointer) ? stored.at(pointer) : nlohmann::json(nullptr);
        const nlohmann::json& after = requested.at(pointer);
        if (before == after) continue;
        if (!option->may_change)
            throw UsageError(fmt::format("{} {} differs from the run's {}, which its checkpoint fixes; leave {} out to "
                                         "resume, or start a new run with --out",
                                         flag, option_value_text(after), option_value_text(before), flag));
        changes.push_back(fmt::format("{} {} (was {})", flag, option_value_text(after), option_value_text(before)));
        stored[pointer] = after;
    }
    return stored;
}

// ---- several processes ------------------------------------------------------------------------------

nlohmann::json options_to_share(const TrainOptions& options) {
    nlohmann::json json = options.to_json();
    for (const char* key : {"corpus", "validation_file", "threads", "corpus_size_bytes", "corpus_sha256", "train_characters",
                            "validation_file_size_bytes", "validation_file_sha256"})
        json.erase(key);
    // Where each finds --init-from's checkpoint may differ too; that they start from the same weights,
    // the check of the parameters at each validation tells.
    json["init_from"] = options.init_from.has_value();
    return json;
}

}  // namespace charlm
