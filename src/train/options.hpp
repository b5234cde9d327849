// The training options' one table (flag, help, JSON key, resume rule, binding), their checks and the resume merge.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "charlm/train.hpp"

namespace charlm {

// ---- the table: each training option declared once ------------------------------------------------
//
// The command line declares the options by walking it (src/cli/train_command.cpp), TrainOptions::to_json
// and from_json record and read them by it, and a resume applies or refuses them by it; `info` lists the
// recorded JSON. Adding an option is one row here and a member in TrainOptions, whose initializer is the
// default that --help shows.

// A number or a switch, read and written in place.
template <typename Value>
using OptionField = Value& (*)(TrainOptions&);

// An option whose text the row parses: a name (--cell lstm) or a word beside numbers (--val-chars auto).
struct TextOption {
    std::string (*show)(const TrainOptions&);          // as the command line writes it: the default in --help
    void (*parse)(TrainOptions&, const std::string&);  // from the command line; throws UsageError
    // As the checkpoint's JSON holds it; null under /model, where ModelConfig writes and reads it.
    nlohmann::json (*record)(const TrainOptions&) = nullptr;
    void (*restore)(TrainOptions&, const nlohmann::json&) = nullptr;  // throws Error for a value no run writes
};

using OptionBinding = std::variant<OptionField<bool>, OptionField<int>, OptionField<std::int64_t>, OptionField<std::uint64_t>,
                                   OptionField<double>, TextOption>;

enum class OnResume { may_change, fixed };

struct TrainOptionSpec {
    std::string_view flag;  // "--lr"
    std::string_view help;
    OptionBinding binding;
    // Where TrainOptions::to_json() records it ("/learning_rate"; under "/model/", ModelConfig's JSON);
    // empty for this invocation's choice, which the run does not record.
    std::string_view json_pointer;
    OnResume on_resume;
    // What a checkpoint from before the option meant, as JSON text, where its key is absent; empty where
    // every checkpoint records it.
    std::string_view when_absent = {};
    bool show_default = true;     // --help shows the default ("[default: 2000 unless --minutes]" says it itself)
    std::string_view value_name = {};  // in --help, for a value CLI11's type name does not describe
    // What the option does through validation ("waits for a better validation loss"), where it does
    // nothing else: set in a run without validation text, it is refused with these words.
    std::string_view through_validation = {};
};

// Every training option, in --help's order.
std::span<const TrainOptionSpec> train_option_table();
// The row of `flag` ("--lr"), or null.
const TrainOptionSpec* find_train_option(std::string_view flag);

// ---- checks and the resume merge ------------------------------------------------------------------

// Refuses (UsageError) options that cannot make a run: sizes, rates and bounds out of range, paths
// that a checkpoint's JSON cannot record, a model too large for this machine's memory.
void validate(const TrainOptions& options);

// Refuses (UsageError) an option that acts only through validation (its row's through_validation),
// set to other than the library's default, in a run whose held-out text has fewer than the two
// characters that a validation scores one prediction of. `held_out` counts them, called only where
// such an option is set (a resume counts them in a pass over its texts). With `given` (a resume's),
// only the options given now: the recorded ones were checked when the run began.
void check_options_that_need_validation(const TrainOptions& options, const std::function<std::size_t()>& held_out,
                                        const std::vector<std::string>* given = nullptr);

// The stored options with the request's given ones laid over them, each change described in
// `changes`; refuses any option that the checkpoint fixes.
nlohmann::json options_for_resume(nlohmann::json stored, const ResumeRequest& request, std::vector<std::string>& changes);

// The options every process of a run must share: all but where each finds the text (which may
// differ from machine to machine, so long as the text is the same) and its own thread count.
nlohmann::json options_to_share(const TrainOptions& options);

}  // namespace charlm
