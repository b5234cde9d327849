// Training options: their one table, as a checkpoint records them (JSON), their checks, and the merge of a resume's with the recorded.
#include "options.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iterator>
#include <type_traits>

#include <fmt/format.h>
#include <utf8.h>

#include "charlm/display.hpp"
#include "charlm/error.hpp"
#include "charlm/json_integer.hpp"

namespace charlm {

// ---- the table ----------------------------------------------------------------------------------------

namespace {

template <auto member>
auto& member_of(TrainOptions& options) {
    return options.*member;
}

const TrainOptionSpec kTrainOptions[] = {
    {"--cell", "Recurrent cell: lstm, gru or rnn (tanh)",
     TextOption{[](const TrainOptions& options) { return to_string(options.model.cell); },
                [](TrainOptions& options, const std::string& text) { options.model.cell = parse_cell_type(text); }},
     "/model/cell", OnResume::fixed},
    {"--layers", "Stacked recurrent layers", +[](TrainOptions& options) -> int& { return options.model.layers; }, "/model/layers",
     OnResume::fixed},
    {"--hidden", "Hidden units per layer", +[](TrainOptions& options) -> int& { return options.model.hidden_size; },
     "/model/hidden_size", OnResume::fixed},
    {"--embed", "Character embedding size", +[](TrainOptions& options) -> int& { return options.model.embed_size; },
     "/model/embed_size", OnResume::fixed},
    {"--seq", "Steps of backpropagation through time per window", &member_of<&TrainOptions::seq_length>, "/seq_length",
     OnResume::fixed},
    {"--batch", "Parallel streams of text per window", &member_of<&TrainOptions::batch_size>, "/batch_size", OnResume::fixed},
    {"--dropout", "Dropout of each layer's output while training, the top layer's included",
     +[](TrainOptions& options) -> double& { return options.model.dropout; }, "/model/dropout", OnResume::may_change},
    {"--ema",
     "Average the weights over training, with this decay per step once warmed up (the decay is "
     "min(DECAY, (1+step)/(10+step)), so 0.999 spans about the last 1000 steps, and fewer in a run of "
     "fewer steps); validation scores both, best.safetensors keeps the better; 0 turns it off",
     &member_of<&TrainOptions::average_decay>, "/ema", OnResume::may_change, /*when_absent=*/"0"},
    {"--embed-dropout", "Dropout of the character embeddings while training",
     +[](TrainOptions& options) -> double& { return options.model.embed_dropout; }, "/model/embed_dropout", OnResume::may_change},
    {"--weight-drop", "DropConnect on the recurrent weights W_hh while training, one mask per window (AWD-LSTM's weight drop)",
     +[](TrainOptions& options) -> double& { return options.model.weight_drop; }, "/model/weight_drop", OnResume::may_change},
    {"--dropout-mask",
     "How --dropout and --embed-dropout draw masks: locked (one per stream per window, variational) or step (new each step)",
     TextOption{[](const TrainOptions& options) { return to_string(options.model.dropout_mask); },
                [](TrainOptions& options, const std::string& text) { options.model.dropout_mask = parse_dropout_mask(text); }},
     "/model/dropout_mask", OnResume::may_change},
    {"--lr", "Adam learning rate (the peak, after warmup)",
     +[](TrainOptions& options) -> double& { return options.learning_rate_schedule.peak_learning_rate; }, "/learning_rate",
     OnResume::may_change},
    {"--lr-schedule", "constant; cosine: down to lr/10 at --steps; step: times --lr-decay every --lr-decay-every steps",
     TextOption{[](const TrainOptions& options) { return LearningRateSchedule::name(options.learning_rate_schedule.kind); },
                [](TrainOptions& options, const std::string& text) { options.learning_rate_schedule.kind = LearningRateSchedule::parse(text); },
                [](const TrainOptions& options) { return nlohmann::json(LearningRateSchedule::name(options.learning_rate_schedule.kind)); },
                [](TrainOptions& options, const nlohmann::json& value) {
                    const std::string name = value.get<std::string>();
                    try {
                        options.learning_rate_schedule.kind = LearningRateSchedule::parse(name);
                    } catch (const UsageError&) {  // the file's fault, not the user's options
                        throw Error(fmt::format("the checkpoint's training options name an unknown learning-rate schedule, '{}'", name));
                    }
                }},
     "/lr_schedule", OnResume::may_change},
    {"--warmup", "Steps of linear learning-rate warmup",
     +[](TrainOptions& options) -> std::int64_t& { return options.learning_rate_schedule.warmup_steps; }, "/warmup_steps",
     OnResume::may_change},
    {"--lr-decay-every", "Steps between decays of the step schedule",
     +[](TrainOptions& options) -> std::int64_t& { return options.learning_rate_schedule.decay_every_steps; }, "/lr_decay_every",
     OnResume::may_change},
    {"--lr-decay", "Factor of each decay of the step schedule",
     +[](TrainOptions& options) -> double& { return options.learning_rate_schedule.decay_factor; }, "/lr_decay_factor",
     OnResume::may_change},
    {"--clip", "Clip the global gradient norm to this; 0 turns clipping off", &member_of<&TrainOptions::clip>, "/clip",
     OnResume::may_change},
    {"--val-fraction",
     "Fraction of the corpus held out for validation (its end), or auto: 0.05, but at most 10M characters, which know the "
     "loss to about 0.001 nats/char",
     TextOption{[](const TrainOptions& options) { return validation_fraction_text(options); },
                [](TrainOptions& options, const std::string& text) {
                    if (text == "auto") return static_cast<void>(options.validation_fraction = std::nullopt);
                    try {
                        std::size_t used = 0;
                        options.validation_fraction = std::stod(text, &used);
                        if (used == text.size()) return;
                    } catch (const std::exception&) {
                    }
                    throw UsageError(fmt::format("--val-fraction wants auto or a fraction of at least 0 and below 1, not '{}'", text));
                },
                [](const TrainOptions& options) {
                    return options.validation_fraction ? nlohmann::json(*options.validation_fraction) : nlohmann::json("auto");
                },
                [](TrainOptions& options, const nlohmann::json& value) {
                    if (value == "auto") options.validation_fraction = std::nullopt;
                    else if (value.is_number()) options.validation_fraction = value.get<double>();
                    else throw Error(fmt::format("the checkpoint's training options hold a validation fraction of {}", value.dump()));
                }},
     "/validation_fraction", OnResume::fixed, {}, true, /*value_name=*/"auto|FRACTION"},
    {"--steps", "Stop after this many steps in all, resumed ones included [default: 2000 unless --minutes]",
     &member_of<&TrainOptions::steps>, "/steps", OnResume::may_change, {}, /*show_default=*/false},
    {"--minutes", "Stop after this many minutes of wall-clock time", &member_of<&TrainOptions::minutes>, "/minutes",
     OnResume::may_change, {}, /*show_default=*/false},
    {"--eval-every", "Validate and save checkpoints every N steps", &member_of<&TrainOptions::eval_every>, "/eval_every",
     OnResume::may_change},
    // Runs from before --val-chars validated on all the held-out text: the best loss they recorded
    // compares only with figures of all of it (0).
    {"--val-chars",
     "Held-out characters each validation scores, the same ones each time: auto (a quarter of the "
     "characters trained between validations, --eval-every x --seq x --batch / 4), 0 for all of them, or "
     "a count. The run's end scores them all",
     TextOption{[](const TrainOptions& options) {
                    return options.validation_characters ? std::to_string(*options.validation_characters) : std::string("auto");
                },
                [](TrainOptions& options, const std::string& text) {
                    if (text != "auto") options.validation_characters = std::stoull(text);
                },
                [](const TrainOptions& options) {
                    return options.validation_characters ? nlohmann::json(*options.validation_characters) : nlohmann::json("auto");
                },
                [](TrainOptions& options, const nlohmann::json& value) {
                    if (value != "auto") options.validation_characters = integer_value<std::uint64_t>(value);
                }},
     "/validation_characters", OnResume::may_change, /*when_absent=*/"0", true, /*value_name=*/"N",
     /*through_validation=*/"sets how many held-out characters each validation scores"},
    {"--final-val",
     "What the run's end scores of the held-out text with its last weights, where validations scored part of it: "
     "auto (all of it where that costs about a tenth of the training so far, else an evenly spread part that does), "
     "all, or none",
     TextOption{[](const TrainOptions& options) { return to_string(options.final_validation); },
                [](TrainOptions& options, const std::string& text) { options.final_validation = parse_final_validation(text); },
                [](const TrainOptions& options) { return nlohmann::json(to_string(options.final_validation)); },
                [](TrainOptions& options, const nlohmann::json& value) {
                    const std::string name = value.get<std::string>();
                    try {
                        options.final_validation = parse_final_validation(name);
                    } catch (const UsageError&) {  // the file's fault, not the user's options
                        throw Error(fmt::format("the checkpoint's training options name an unknown --final-val, '{}'", name));
                    }
                }},
     "/final_validation", OnResume::may_change, /*when_absent=*/"\"auto\"", true, /*value_name=*/"auto|all|none",
     /*through_validation=*/"sets what the run's end scores of the held-out text"},
    {"--patience", "Stop after N validations without a new best; 0 never", &member_of<&TrainOptions::patience>, "/patience",
     OnResume::may_change, {}, true, {}, /*through_validation=*/"waits for a better validation loss"},
    {"--keep-checkpoints",
     "At each validation, also keep its weights as RUN_DIR/step-001200-val-1.4822.safetensors (the step and "
     "the validation loss); given or not on each --resume",
     &member_of<&TrainOptions::keep_checkpoints>, /*json_pointer=*/{}, OnResume::may_change, {}, true, {},
     /*through_validation=*/"keeps a checkpoint per validation, named by its loss"},
    {"--seed", "Seed for the initial weights", &member_of<&TrainOptions::seed>, "/seed", OnResume::fixed},
};

// ModelConfig's JSON, "model" in the options', records the options under /model/.
bool recorded_by_model(const TrainOptionSpec& option) { return option.json_pointer.starts_with("/model/"); }

template <typename Value>
Value value_from_json(const nlohmann::json& value) {
    if constexpr (std::is_same_v<Value, bool> || std::is_floating_point_v<Value>) return value.get<Value>();
    else return integer_value<Value>(value);
}

}  // namespace

std::span<const TrainOptionSpec> train_option_table() { return kTrainOptions; }

const TrainOptionSpec* find_train_option(std::string_view flag) {
    const auto* option = std::find_if(std::begin(kTrainOptions), std::end(kTrainOptions),
                                      [&](const TrainOptionSpec& candidate) { return candidate.flag == flag; });
    return option == std::end(kTrainOptions) ? nullptr : option;
}

// ---- the options as a checkpoint records them -------------------------------------------------------

nlohmann::json TrainOptions::to_json() const {
    nlohmann::json json = {
        {"corpus", corpus.empty() ? std::string() : std::filesystem::absolute(corpus).string()},
        {"run_directory", run_directory.string()},
        {"model", model.to_json()},
        {"corpus_size_bytes", corpus_fingerprint.size_bytes},
        {"corpus_sha256", corpus_fingerprint.sha256},
        {"train_characters", train_characters},
        {"threads", threads},
        {"processes", processes},
        {"precision", to_string(precision)},
    };
    TrainOptions readable = *this;  // the fields' accessors take options they may write
    for (const TrainOptionSpec& option : kTrainOptions) {
        if (option.json_pointer.empty() || recorded_by_model(option)) continue;
        auto& value = json[nlohmann::json::json_pointer(std::string(option.json_pointer))];
        std::visit([&](auto binding) {
            if constexpr (std::is_same_v<decltype(binding), TextOption>) value = binding.record(readable);
            else value = binding(readable);
        }, option.binding);
    }
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
        for (const TrainOptionSpec& option : kTrainOptions) {
            if (option.json_pointer.empty() || recorded_by_model(option)) continue;
            const nlohmann::json::json_pointer pointer{std::string(option.json_pointer)};
            const nlohmann::json value = option.when_absent.empty() || json.contains(pointer)
                                             ? json.at(pointer)
                                             : nlohmann::json::parse(option.when_absent);
            std::visit([&](auto binding) {
                if constexpr (std::is_same_v<decltype(binding), TextOption>) binding.restore(options, value);
                else binding(options) = value_from_json<std::remove_reference_t<decltype(binding(options))>>(value);
            }, option.binding);
        }
        options.threads = json.contains("threads") ? integer_value<int>(json.at("threads")) : 0;
        options.processes = json.contains("processes") ? integer_value<int>(json.at("processes")) : 1;
        // Absent from checkpoints written before bf16 products: those trained in fp32.
        options.precision = json.contains("precision") ? parse_precision(json.at("precision").get<std::string>()) : Precision::fp32;
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

std::size_t held_out_size(const TrainOptions& options, std::size_t count) {
    if (options.validation_fraction) return validation_size(count, *options.validation_fraction);
    return std::min<std::size_t>(validation_size(count, kAutomaticValidationFraction), kMostAutomaticHeldOut);
}

std::string validation_fraction_text(const TrainOptions& options) {
    return options.validation_fraction ? fmt::format("{:g}", *options.validation_fraction) : std::string("auto");
}

std::string to_string(FinalValidation final_validation) {
    switch (final_validation) {
        case FinalValidation::all: return "all";
        case FinalValidation::none: return "none";
        default: return "auto";
    }
}

FinalValidation parse_final_validation(const std::string& text) {
    for (const FinalValidation choice : {FinalValidation::automatic, FinalValidation::all, FinalValidation::none})
        if (text == to_string(choice)) return choice;
    throw UsageError(fmt::format("--final-val must be auto, all or none, not '{}'", text));
}

std::uint64_t final_validation_characters(const TrainOptions& options, std::int64_t steps) {
    if (options.final_validation == FinalValidation::all) return 0;
    const double trained = static_cast<double>(std::max<std::int64_t>(steps, 0)) * options.seq_length * options.batch_size;
    return std::max(kFinalValidationFloor, static_cast<std::uint64_t>(kFinalValidationShare * trained));
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

void check_options_that_need_validation(const TrainOptions& options, const std::function<std::size_t()>& held_out,
                                        const std::vector<std::string>* given) {
    TrainOptions readable = options, unset;  // the fields' accessors take options they may write
    for (const TrainOptionSpec& option : kTrainOptions) {
        if (option.through_validation.empty()) continue;
        if (given && std::find(given->begin(), given->end(), option.flag) == given->end()) continue;
        std::string value;  // as the command line writes it; none for a switch
        bool set = false;
        std::visit([&](auto binding) {
            if constexpr (std::is_same_v<decltype(binding), TextOption>) {
                value = binding.show(readable);
                set = value != binding.show(unset);
            } else {
                set = binding(readable) != binding(unset);
                if constexpr (!std::is_same_v<decltype(binding), OptionField<bool>>) value = fmt::format("{}", binding(readable));
            }
        }, option.binding);
        if (set && held_out() < 2)
            throw UsageError(fmt::format("{}{}{} {}, and this run has no validation text; give --val-fraction above 0 or --val FILE, "
                                         "or leave {} out",
                                         option.flag, value.empty() ? "" : " ", value, option.through_validation, option.flag));
    }
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
    if (options.validation_fraction && !(*options.validation_fraction >= 0 && *options.validation_fraction < 1))
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
        const TrainOptionSpec* option = find_train_option(flag);
        if (!option) throw UsageError(fmt::format("{} cannot be given with --resume", flag));
        if (option->json_pointer.empty()) continue;  // this invocation's choice, given or not on each resume
        const nlohmann::json::json_pointer pointer(std::string(option->json_pointer));
        const nlohmann::json before = stored.contains(pointer) ? stored.at(pointer) : nlohmann::json(nullptr);
        const nlohmann::json& after = requested.at(pointer);
        if (before == after) continue;
        if (option->on_resume == OnResume::fixed)
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
