// The training loop: windows -> forward -> loss -> backward -> clip -> Adam, with validation and checkpoints.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "charlm/communicator.hpp"
#include "charlm/model.hpp"
#include "charlm/optim.hpp"
#include "charlm/precision.hpp"
#include "charlm/progress.hpp"
#include "charlm/text.hpp"

namespace charlm {

// --final-val: what the run's end scores of the held-out text with its last weights, where the
// periodic validations scored part of it (--val-chars): automatic (all of it where that is cheap
// beside the training, else an evenly spread part that is; final_validation_characters()), all of
// it however long it takes, or none.
enum class FinalValidation { automatic, all, none };
std::string to_string(FinalValidation final_validation);
FinalValidation parse_final_validation(const std::string& text);  // throws UsageError

// A run's options. Those a user sets are each one row of train_option_table() (src/train/options.cpp),
// which the command line, the checkpoint's JSON and a resume read; a member's initializer is its default.
struct TrainOptions {
    std::filesystem::path corpus;
    std::optional<std::filesystem::path> validation_file;  // instead of holding out part of the corpus
    std::filesystem::path run_directory;
    ModelConfig model;                 // vocab_size comes from the corpus
    int seq_length = 100;
    int batch_size = 64;
    LearningRateSchedule learning_rate_schedule;  // --lr (its peak), --lr-schedule, --warmup, --lr-decay-every, --lr-decay
    double clip = 5.0;                 // global gradient norm; 0 turns clipping off
    // --val-fraction: the share of the corpus held out for validation (with no --val file); none:
    // automatic, kAutomaticValidationFraction of it up to kMostAutomaticHeldOut characters.
    std::optional<double> validation_fraction;
    std::int64_t steps = 0;            // total steps of the run, resumed ones included; 0 for no bound
    double minutes = 0;                // wall-clock bound of this invocation; 0 for no bound
    int eval_every = 200;
    // --val-chars: held-out characters that each periodic validation scores; the run's end scores
    // more of them (--final-val). None: automatic (periodic_validation_characters()); 0: all of them every time.
    std::optional<std::uint64_t> validation_characters;
    FinalValidation final_validation = FinalValidation::automatic;
    int patience = 0;                  // stop after this many evaluations without a new best; 0 never
    // --ema: the decay of an average of the parameters (ParameterAverage), 0 for none. Validations score
    // the averaged weights beside the last step's, and best.safetensors holds whichever scored lower.
    double average_decay = 0;
    std::uint64_t seed = 1;
    bool overwrite = false;            // start over in a run directory that already holds a run
    // At each validation, also keep the validated weights as step-001200-val-1.4822.safetensors
    // (kept_checkpoint_name()). This invocation's choice: not recorded, given or not on each --resume.
    bool keep_checkpoints = false;
    // --init-from: the run starts from a trained checkpoint's weights, with a fresh optimizer. The model's
    // shape is the checkpoint's, its vocabulary the checkpoint's extended by the texts' new characters.
    struct InitFrom {
        std::filesystem::path checkpoint;
        // The options given on the command line, by name: those of the model's shape (--cell, --layers,
        // --hidden, --embed) must agree with the checkpoint. Not recorded.
        std::vector<std::string> given;
        std::int64_t step = 0;  // the step the checkpoint had reached: train() reads it, and records it
    };
    std::optional<InitFrom> init_from;

    // Facts of the run that train() records beside the options, for --resume and `charlm info`.
    // Checkpoints older than these have no hash (empty sha256); a resume then cannot check the text.
    FileFingerprint corpus_fingerprint;
    std::optional<FileFingerprint> validation_fingerprint;  // with a validation file
    std::uint64_t train_characters = 0;                     // the part that trains, after the split
    int threads = 0;  // the thread count it trained with (each process's): the same seed and count give the same bits
    int processes = 1;  // the processes that shared each batch (mpirun -np N)
    // --precision: this invocation's choice (not recorded; a resume given auto keeps the run's), and
    // the products' precision it came to, recorded for `charlm info`. The weights are fp32 at either,
    // and any checkpoint trains or samples at either. The command line's default is auto; the
    // library's, fp32, so that a caller that does not ask gets the same bits on every machine.
    PrecisionChoice precision_choice = PrecisionChoice::fp32;
    Precision precision = Precision::fp32;

    nlohmann::json to_json() const;
    static TrainOptions from_json(const nlohmann::json& json);
};

// --val-fraction auto: 5% of the corpus, but at most 10M characters. The mean loss of n held-out
// characters has a standard error of about 3.4 / sqrt(n) nats/char on tinyshakespeare's held-out text
// (neighbouring characters' losses go together: measured over blocks of 2k and 5k characters,
// docs/scale.md), so 10M characters know the loss to about 0.001 nats/char, a tenth of the smallest
// difference worth reporting; 5% of a 10 GB corpus, 500M, would cost 50x as much to score.
constexpr double kAutomaticValidationFraction = 0.05;
constexpr std::uint64_t kMostAutomaticHeldOut = 10'000'000;

// The characters of a corpus of `count` that the run holds out (with no --val file) under `options`.
std::size_t held_out_size(const TrainOptions& options, std::size_t count);
// --val-fraction as the command line writes it: "auto", or the fraction ("0.1").
std::string validation_fraction_text(const TrainOptions& options);

// Validation scores about a quarter of the characters that training reads between two validations,
// and evaluation reads a character 3-4 times faster than training does: a validation then takes under
// a tenth of the run's time, whatever the size of the held-out text.
constexpr double kAutomaticValidationShare = 0.25;

// The held-out characters each periodic validation scores at most under `options`; 0 for all of them.
// --val-chars where given; automatically, kAutomaticValidationShare of eval_every x seq x batch.
std::uint64_t periodic_validation_characters(const TrainOptions& options);

// The run's end scores, automatically, at most this share of the characters trained so far (steps x
// --seq x --batch, resumed steps included): read 3-4 times faster than training reads them, they cost
// under a tenth of the training time. A count of characters, not a timing, so that the figure is the
// same on every machine and thread count. A short run still scores the floor: a second or two.
constexpr double kFinalValidationShare = 0.3;
constexpr std::uint64_t kFinalValidationFloor = 100'000;

// The held-out characters the run's end scores at most under `options` after `steps` steps in all: 0
// for all of them (--final-val all). Not called under --final-val none.
std::uint64_t final_validation_characters(const TrainOptions& options, std::int64_t steps);

// Throws UsageError where options given on the command line (`given`, their names) would do nothing:
// --lr-decay or --lr-decay-every with a schedule other than step. Every option is obeyed or refused.
void check_options_take_effect(const TrainOptions& options, const std::vector<std::string>& given);

// The name --keep-checkpoints gives a validation's checkpoint in the run directory, as char-rnn's users
// know it: step-001200-val-1.4822.safetensors (the step in six digits or more, the loss to four decimals).
std::string kept_checkpoint_name(std::int64_t step, double validation_loss);

// The model that a run started from a trained one (--init-from) begins with, for `vocab_size` characters
// of which the trained model's come first (Vocab::extended_by): the trained weights, and a row of the
// embedding and of the head (weight and bias) for each new character, drawn from `rng` as
// Model::initialize draws fresh ones. Its regularization (dropout, embed_dropout, weight_drop,
// dropout_mask) is `rates`'s, the new run's own.
Model<float> model_with_new_characters(const Model<float>& trained, int vocab_size, const ModelConfig& rates, std::mt19937_64& rng);

// Trains from scratch, or from the weights of options.init_from (read, and its shape checked against the
// options given, before the run directory is touched); the run directory gets last.safetensors,
// metrics.jsonl and, when there is validation text, best.safetensors. A corpus that cannot be read
// twice (a pipe, "-" for standard input) is first copied to RUN_DIR/corpus.txt, and that copy is the
// run's corpus. `progress` hears how it goes; metrics.jsonl holds the same reports.
//
// With several processes (mpirun -np N: `processes` is their communicator), every process calls it with
// the same options: each trains on its block of the batch's streams and the gradients are summed, so
// that the run follows the one-process run's path up to the order of floating-point sums. Process 0
// alone writes the run directory and tells `progress`; the others pass silent_progress(). Every process
// must see the same corpus (its SHA-256 is compared) and, on --resume, the same run directory. An error
// that every process meets is thrown on each, marked shared_by_every_process(); any other is this
// process's alone, and its caller must end the run (Communicator::abort) rather than leave the others
// waiting.
TrainResult train(const TrainOptions& options, TrainingProgress& progress = silent_progress(),
                  const Communicator& processes = single_process());

// A resumed run: its directory, and the options given again. Those a run may change (learning rate
// and schedule, steps, minutes, eval interval, validation characters, clip, dropout, patience) take
// effect and a note to the progress sink says so (--keep-checkpoints is this invocation's alone, given
// or not); those the checkpoint fixes (cell, sizes, seq, batch, validation split, seed) are refused
// where they differ. The corpus must be the one the run started on (size and SHA-256);
// `corpus` and `validation_file` say where it is now if it moved.
struct ResumeRequest {
    std::filesystem::path run_directory;
    TrainOptions options;              // the values of the options given; the others are not read
    std::vector<std::string> given;    // their command-line names, e.g. "--lr"
    std::optional<std::filesystem::path> corpus;
    std::optional<std::filesystem::path> validation_file;
};
TrainResult resume_training(const ResumeRequest& request, TrainingProgress& progress = silent_progress(),
                            const Communicator& processes = single_process());

// What one training step found. Where `finite` is false, the loss, the gradient or the updated
// parameters were not finite: the model is not to be used or saved.
struct StepOutcome {
    double loss = 0;           // the window's mean loss
    double gradient_norm = 0;  // before clipping
    bool finite = true;
};

// One training step on a window, as train() takes it: the carried state reset where the window starts
// the streams, forward, loss, backward, global-norm clipping to `clip` (0: none) and an Adam step.
// A loss or gradient that is not finite returns before the parameters are touched.
// With several processes, `batch` is this process's block of the batch's streams: the loss and the
// gradients are those of the whole batch, summed across `processes`, and the same on every process.
StepOutcome train_step(Model<float>& model, Adam& optimizer, const Batch& batch, ModelState<float>& carried, double clip,
                       double learning_rate, const Communicator& processes = single_process());

// Asks a running train() to save and return after the current step; safe to call from a signal
// handler. Returns false where no training loop is running yet (reading the corpus, say), where
// there is nothing to save: the caller should then stop the process itself.
bool request_training_stop();

}  // namespace charlm
