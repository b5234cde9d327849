// Scores a text under a model: cross-entropy in nats per character, perplexity and bits per character.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <span>

#include <nlohmann/json.hpp>

#include "charlm/batches.hpp"
#include "charlm/communicator.hpp"
#include "charlm/model.hpp"
#include "charlm/vocab.hpp"

namespace charlm {

// Summed loss over every (input, target) pair of `ids`, read as B streams in windows of T steps, or
// over the part of them that `selection` names (see for_each_evaluation_window).
// `stop`, where given, is asked before each window: true ends the pass there, with the sum so far.
using EvaluationStop = std::function<bool()>;
LossSum evaluate_loss(Model<float>& model, TokenSpan ids, int seq_length = 100, int batch_size = 32,
                      const EvaluationSelection& selection = {}, const EvaluationStop& stop = {});

// The same pass shared by `processes`: each scores a block of its streams (a text with fewer streams than
// processes leaves the last ones idle), and the sums are added, so that every process gets the figure one
// process would, up to the order of the sums. `selection`'s own block of streams is set here. A stop ends
// this process's part early, and its caller should then discard the figure.
LossSum evaluate_loss(Model<float>& model, TokenSpan ids, int seq_length, int batch_size, EvaluationSelection selection,
                      const EvaluationStop& stop, const Communicator& processes);

// A loss summed over every process's share: every process gets the same figure. One process's is its own.
LossSum summed_across(const Communicator& processes, const LossSum& mine);

// Past this share of a text's characters outside the vocabulary, evaluation refuses unless allowed
// (EvalOptions::allow_unknown). A score of what is left says little about such a text: with a tenth
// of its characters cut out, the model reads spliced contexts it never saw, and a text that is mostly
// another script or encoding scores a few characters of punctuation. A few stray characters (curly
// quotes in a plain-ASCII model's text) stay well below it.
constexpr double kMostUnknownFraction = 0.10;

// Dynamic evaluation (Krause et al. 2018, "Dynamic Evaluation of Neural Sequence Models"): the text is
// read as one stream, a window at a time; each window is scored first, then the model takes a step on
// the gradients of that window's mean loss (truncated backpropagation through the window), each divided
// by the root of its mean square so far, so that it adapts to the text as it reads it, and its weights
// decay toward the trained ones (WeightAdaptation in optim.hpp).
struct AdaptOptions {
    double learning_rate = 2e-4;  // each weight's step per window, before the decay; 0 leaves the weights as trained
    double decay = 0;             // share of the distance to the trained weights taken back after each step, in [0, 1]
    int window = 50;              // characters per step: how far back gradients reach, and how often the weights change
    nlohmann::json to_json() const;
};
// Throws UsageError naming the option (--adapt-lr, --adapt-decay, --adapt-window) that is out of range.
void validate(const AdaptOptions& options);

// Where a dynamic evaluation stands after a window: the pairs scored so far and both sums over them.
struct AdaptProgress {
    std::size_t characters_scored = 0;
    std::size_t characters_total = 0;
    LossSum plain{};    // under the trained weights
    LossSum adapted{};  // each window under the weights adapted to the windows before it
};
using AdaptProgressCallback = std::function<void(const AdaptProgress&)>;

struct AdaptedLoss {
    LossSum plain;
    LossSum adapted;
};

// Both sums over every (input, target) pair of `ids` read as one stream in windows of options.window
// steps, the state carried from window to window: `plain` under the weights as given, `adapted` under
// weights that learn from each window after scoring it. Leaves `model` adapted to the whole text (a
// copy keeps the trained weights). Throws Error where adapting diverges (a weight that is not finite,
// a window's loss that is not, or is three times past both a uniform guess's and the trained weights');
// `progress`, where given, hears of each window.
AdaptedLoss evaluate_loss_adapting(Model<float>& model, TokenSpan ids, const AdaptOptions& options,
                                   const AdaptProgressCallback& progress = {});

struct EvalOptions {
    bool allow_unknown = false;  // score whatever share of the text is unknown (it is still counted)
    std::optional<AdaptOptions> adapt{};      // dynamic evaluation, as above, instead of the plain one
    AdaptProgressCallback adapt_progress{};  // where adapting: hears of each window
    std::filesystem::path ids_folder{};      // where evaluate_file() keeps the text's ids; empty: TMPDIR's
};

struct EvalResult {
    double nats_per_character = 0;
    double perplexity = 0;
    double bits_per_character = 0;
    std::size_t characters_scored = 0;    // predictions made: known characters minus one
    std::size_t unknown_characters = 0;   // dropped from the text before scoring
    double unknown_fraction = 0;          // unknown_characters over all the text's characters
    // Where the text was read adapting (EvalOptions::adapt): its settings. The figures above are then the
    // adapted ones, and this the same stream's under the trained weights, so that the difference is
    // adaptation's alone.
    std::optional<AdaptOptions> adaptation;
    double plain_nats_per_character = 0;
    // With "adapted" (false, or true with "plain"'s three figures and the settings under "adaptation").
    nlohmann::json to_json() const;
};

// Scores a file as `charlm eval` does. It is streamed into ids of one byte per character (for up to 256
// distinct ones) in a file of no name in `ids_folder` (the temporary folder, TMPDIR, where empty),
// mapped, and its pages let go as the scoring passes them: memory does not grow with the text.
// Characters outside the vocabulary are removed before scoring and counted. Throws Error for an
// unreadable or non-UTF-8 file, where fewer than two characters are known, and where more than
// kMostUnknownFraction of them are unknown unless options.allow_unknown.
// The text is read as up to 32 streams of at least ~1k characters each, in windows of 100 steps; where
// options.adapt, as one stream adapting (evaluate_loss_adapting), which leaves `model` adapted to it.
// Several `processes` (mpirun) each score a block of the streams and every one gets the summed figure:
// one process's, up to the order of the sums. Adapting reads one stream, on one process only.
EvalResult evaluate_file(Model<float>& model, const Vocab& vocab, const std::filesystem::path& path,
                         const EvalOptions& options = {}, const Communicator& processes = single_process());

}  // namespace charlm
