// Starting a run: fresh, from a trained checkpoint's weights (--init-from), or where it stopped (--resume).
#include "charlm/train.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <omp.h>

#include "charlm/atomic_file.hpp"
#include "charlm/checkpoint.hpp"
#include "charlm/display.hpp"
#include "charlm/error.hpp"
#include "charlm/run_lock.hpp"
#include "corpus.hpp"
#include "init_from.hpp"
#include "loop.hpp"
#include "options.hpp"
#include "run_directory.hpp"
#include "step.hpp"

namespace charlm {

namespace {

// ---- checks that every process of a run shares ------------------------------------------------------

// Collective: each process's `facts` (a JSON object) against process 0's. Where any process's differ,
// every process throws the same error, naming the first such process and the first fact that differs,
// then `advice`.
void check_processes_agree(const Communicator& processes, const nlohmann::json& facts, const char* what, const char* advice) {
    if (processes.size() == 1) return;
    const std::vector<std::string> all = processes.gather_all(nlohmann::json{{"host", processes.host()}, {"facts", facts}}.dump());
    const nlohmann::json first = nlohmann::json::parse(all[0]);
    for (std::size_t rank = 1; rank < all.size(); ++rank) {
        const nlohmann::json theirs = nlohmann::json::parse(all[rank]);
        for (const auto& [key, value] : first.at("facts").items()) {
            const nlohmann::json their_value = theirs.at("facts").value(key, nlohmann::json(nullptr));
            if (their_value == value) continue;
            throw shared(UsageError(fmt::format("process {} of {} (on {}) {} than process 0 (on {}): its {} is {}, not {}; {}", rank,
                                                all.size(), theirs.at("host").get<std::string>(), what,
                                                first.at("host").get<std::string>(), key, their_value.dump(), value.dump(), advice)));
        }
    }
}

// What the processes must agree on about the text: the same bytes, hence the same vocabulary and ids.
nlohmann::json corpus_facts(const TrainOptions& options, const Corpus& corpus) {
    return {{"corpus SHA-256", options.corpus_fingerprint.sha256},
            {"validation file SHA-256", options.validation_fingerprint ? options.validation_fingerprint->sha256 : std::string()},
            {"vocabulary size", corpus.vocab.size()}};
}

constexpr const char* kSameCommandAdvice = "start every process with the same command";
constexpr const char* kSameCorpusAdvice =
    "every process must read the same text: copy it to each machine at the same path, or keep it on a filesystem they share";

// A pipe is read once, by one process: the others would wait for text that never comes. A shell's
// process substitution (/dev/fd/63) is not even passed on to them.
void check_text_can_be_shared(const TrainOptions& options, const Communicator& processes) {
    if (processes.size() == 1) return;
    for (const auto* path : {&options.corpus, options.validation_file ? &*options.validation_file : nullptr})
        if (path && (can_be_read_only_once(*path) || is_under_dev_or_proc(*path)))
            throw UsageError(fmt::format("{}: {} processes cannot all read a pipe or standard input; save the text to a file first",
                                         *path == "-" ? std::string("standard input") : path->string(), processes.size()));
}

// ---- a fresh run ------------------------------------------------------------------------------------

// Checkpoints that an earlier run in the directory kept (--keep-checkpoints) are the user's to keep, and
// --force leaves them; named as this run's are, they are worth a word.
void warn_about_earlier_kept_checkpoints(const std::filesystem::path& run_directory, TrainingProgress& progress) {
    std::size_t count = 0;
    std::error_code ignored;
    for (const auto& entry : std::filesystem::directory_iterator(run_directory, ignored))
        if (run_files::is_kept_checkpoint_name(entry.path().filename().string())) ++count;
    if (count > 0)
        progress.warning(fmt::format("{} holds {} checkpoint{} that an earlier run kept ({}); they stay beside this run's: "
                                     "move them away, or choose another directory with --out",
                                     run_directory.string(), count, count == 1 ? "" : "s", run_files::kKeptCheckpointPattern));
}

// A directory that holds what a run made (its checkpoints, kept ones, its metrics) is that run's, whether
// or not it can still be resumed: a fresh run there would replace them. The ids files are left out: they
// are the text's, encoded again whenever they do not fit, and a first run that failed before its first
// checkpoint leaves only them, which must not stand in the way of trying again.
void refuse_a_directory_that_holds_a_run(const std::filesystem::path& run_directory) {
    std::vector<std::string> held;
    std::size_t kept = 0;
    std::error_code ignored;
    for (const auto& entry : std::filesystem::directory_iterator(run_directory, ignored)) {
        const std::string name = entry.path().filename().string();
        if (name == run_files::kLastCheckpoint || name == run_files::kBestCheckpoint || name == run_files::kMetrics) held.push_back(name);
        else if (run_files::is_kept_checkpoint_name(name)) ++kept;
    }
    const std::string directory = quoted_for_shell(run_directory.string());
    if (std::ranges::find(held, run_files::kLastCheckpoint) != held.end())
        throw UsageError(fmt::format("{0} already holds a run; continue it with --resume {0}, start over with --force, "
                                     "or choose another directory with --out",
                                     directory));
    if (held.empty() && kept == 0) return;
    std::ranges::sort(held);
    if (kept > 0) held.push_back(fmt::format("{} kept checkpoint{}", kept, kept == 1 ? "" : "s"));
    throw UsageError(fmt::format("{} already holds a run ({}), though no {} to resume it from; start over there with --force, "
                                 "or choose another directory with --out",
                                 directory, fmt::join(held, ", "), run_files::kLastCheckpoint));
}

// A fresh run's text, read and checked, with its fingerprints in `options`; process 0 also takes the
// run directory (`lock`). A pipe is copied into the run directory, which `options` then names. A run
// started from a checkpoint's weights extends its vocabulary, `extended`.
Corpus prepare_fresh_run(TrainOptions& options, TrainingProgress& progress, const Communicator& processes,
                         run_files::CreatedDirectories& created, std::optional<RunLock>& lock, const Vocab* extended) {
    // A text that can be read again is checked before the run directory is touched; a pipe is read
    // once, into a copy in the run directory, which becomes the run's corpus once it proves good.
    const bool copy_corpus = can_be_read_only_once(options.corpus);
    const bool copy_validation = options.validation_file && can_be_read_only_once(*options.validation_file);
    std::optional<Corpus> corpus;
    // What the text decides (the validation that --patience needs, the vocabulary that sizes the model) is
    // checked before anything in the run directory is written or removed: a refusal changes nothing there.
    auto load_and_check = [&] {
        corpus = load_corpus(options, nullptr, extended);
        check_options_that_need_validation(options, [&] { return corpus->counted_validation_size; });
        options.model.vocab_size = static_cast<int>(corpus->vocab.size());
        options.model.validate();
    };
    if (!copy_corpus && !copy_validation) load_and_check();
    if (processes.is_first()) {  // the others never write there
        created.create(options.run_directory);
        lock.emplace(options.run_directory);
        if (!options.overwrite) refuse_a_directory_that_holds_a_run(options.run_directory);
    }
    std::optional<AtomicFile> corpus_copy, validation_copy;
    std::vector<std::pair<std::string, std::string>> copied;  // (temporary path, what it copies), for messages
    auto copy = [&](std::optional<AtomicFile>& file, std::filesystem::path& path, const char* name) {
        const std::string source = path == "-" ? std::string("standard input") : path.string();
        file.emplace(options.run_directory / name);
        spool_to_file(path, *file);
        path = file->temporary_path();
        copied.emplace_back(path.string(), source);
    };
    if (copy_corpus && copy_validation && options.corpus == "-" && *options.validation_file == "-")
        throw UsageError("CORPUS and --val cannot both read standard input");
    if (copy_corpus) copy(corpus_copy, options.corpus, run_files::kCorpusCopy);
    if (copy_validation) copy(validation_copy, *options.validation_file, run_files::kValidationCopy);
    if (!corpus) {
        try {
            load_and_check();
        } catch (const UsageError&) {
            throw;  // about an option, not the text: no path in it to rename
        } catch (const Error& error) {  // name what the user gave, not the copy's temporary name
            std::string message = error.what();
            for (const auto& [temporary, source] : copied)
                for (std::size_t at; (at = message.find(temporary)) != std::string::npos;) message.replace(at, temporary.size(), source);
            throw Error(message);
        }
    }
    options.corpus_fingerprint = fingerprint_file(options.corpus);
    if (options.validation_file) options.validation_fingerprint = fingerprint_file(*options.validation_file);
    if (processes.is_first()) warn_about_earlier_kept_checkpoints(options.run_directory, progress);
    for (const auto& [temporary, source] : copied)
        progress.note(fmt::format("copied {} into the run directory: the run reads its text more than once", source));
    if (corpus_copy) {
        corpus_copy->commit();
        options.corpus = options.run_directory / run_files::kCorpusCopy;
    }
    if (validation_copy) {
        validation_copy->commit();
        options.validation_file = options.run_directory / run_files::kValidationCopy;
    }
    return std::move(*corpus);
}

// The run's products' precision, decided by process 0 (auto's timing there, on one process's windows)
// and taken by all, so that every process multiplies alike. `recorded`: the precision the run trained
// at so far, where it resumes; auto then keeps it where this CPU runs it, so that a resume stays exact.
// Returns the log's clause saying which and why.
std::string decide_run_precision(TrainOptions& options, const Communicator& processes, std::optional<Precision> recorded) {
    PrecisionDecision decision;
    run_on_every_process(processes, [&] {
        if (!processes.is_first()) return;
        if (recorded && options.precision_choice == PrecisionChoice::automatic && (*recorded == Precision::fp32 || bf16_runs_here()))
            decision = {*recorded, fmt::format("{}, the run's so far (auto keeps it, so that the resumed run goes on as one)",
                                               to_string(*recorded))};
        else
            decision = decide_precision(options.precision_choice,
                                        product_shapes(options.model, stream_block(options.batch_size, 0, processes.size()).count,
                                                       options.seq_length));
    });
    options.precision = parse_precision(processes.gather_all(processes.is_first() ? to_string(decision.precision) : "fp32").front());
    return decision.reason;
}

}  // namespace

TrainResult train(const TrainOptions& options_in, TrainingProgress& progress, const Communicator& processes) {
    TrainOptions options = options_in;
    options.threads = omp_get_max_threads();
    options.processes = processes.size();
    std::optional<Checkpoint> trained;  // --init-from's: its shape is the run's, and validate() judges that
    run_on_every_process(processes, [&] {
        if (options.init_from) trained = load_checkpoint_to_start_from(options);
        validate(options);
        check_text_can_be_shared(options, processes);
        static_cast<void>(stream_block(options.batch_size, processes.rank(), processes.size()));  // enough streams for all
    });
    const std::string precision_reason = decide_run_precision(options, processes, std::nullopt);
    check_processes_agree(processes, options_to_share(options), "was given other training options", kSameCommandAdvice);
    std::optional<RunLock> lock;
    run_files::CreatedDirectories created;  // after the lock: a failure removes them while it is held
    std::optional<Corpus> corpus;
    run_on_every_process(processes, [&] {
        corpus = prepare_fresh_run(options, progress, processes, created, lock, trained ? &trained->vocab : nullptr);
    });
    check_processes_agree(processes, corpus_facts(options, *corpus), "reads another text", kSameCorpusAdvice);
    // Every check has passed: the ids go into the run directory, written by process 0, then mapped by the others.
    run_on_every_process(processes, [&] {
        if (processes.is_first()) map_corpus(*corpus, options, false, progress);
    });
    run_on_every_process(processes, [&] {
        if (!processes.is_first()) map_corpus(*corpus, options, false, progress, /*encoded_by_another=*/true);
        options.train_characters = corpus->train_size;
    });

    if (trained) progress.note(describe_start(*options.init_from, trained->vocab, corpus->vocab));
    Session session{options, std::move(*corpus), Model<float>(options.model), {}, {}, {}, std::mt19937_64(options.seed)};
    if (trained) session.model = model_with_new_characters(*trained->model, options.model.vocab_size, options.model, session.rng);
    else session.model.initialize(session.rng);
    session.model.set_precision(options.precision);
    session.precision_note = "products in " + precision_reason;
    trained.reset();  // its weights are the session's now, and its optimizer's moments are not this run's
    session.optimizer = Adam(session.model.parameters());
    if (options.average_decay > 0) session.average.emplace(session.model.parameters(), options.average_decay);
    session.processes = &processes;
    session.streams = stream_block(options.batch_size, processes.rank(), processes.size());
    session.carried = session.model.initial_state(session.streams.count);
    session.fresh = true;
    created.keep();
    return run_training_loop(session, progress);
}

// ---- --resume: a run where it stopped ---------------------------------------------------------------

namespace {

// The file a resumed run reads for its corpus (or validation text): where it was, or where the user
// says it moved. Its size and SHA-256 must be the ones recorded, so neither an edited text nor a
// path in a crafted checkpoint feeds the run anything but the text it started on.
std::filesystem::path locate_recorded_file(const char* what, const char* flag, const std::filesystem::path& recorded_path,
                                           const FileFingerprint& recorded, const std::optional<std::filesystem::path>& moved_to,
                                           TrainingProgress& progress) {
    const std::filesystem::path path = moved_to.value_or(recorded_path);
    const std::string hint = moved_to ? std::string()
                                      : fmt::format("; if it moved, give its new place with --resume RUN_DIR {} PATH", flag);
    std::error_code error;
    if (!std::filesystem::exists(path, error))
        throw Error(fmt::format("{}: the run's {} is not there{}", path.string(), what, hint));
    if (recorded.sha256.empty()) {
        progress.warning(fmt::format("{}: the checkpoint predates corpus hashes, so the {} cannot be checked against the one "
                                     "the run started on",
                                     path.string(), what));
        return path;
    }
    const FileFingerprint now = fingerprint_file(path);
    if (now != recorded)
        throw Error(fmt::format("{}: not the {} the run started on ({} bytes, SHA-256 {:.12}..., where the run recorded {} "
                                "bytes, {:.12}...){}",
                                path.string(), what, now.size_bytes, now.sha256, recorded.size_bytes, recorded.sha256, hint));
    return path;
}

// A resume that changes what each validation scores (--val-chars, or --eval-every where it is automatic)
// makes figures that compare neither with the earlier ones nor with the best so far, which still decides
// whether best.safetensors is replaced.
void warn_if_validations_change(const TrainOptions& before, const TrainOptions& after, TokenSpan held_out,
                                double best_validation_loss, TrainingProgress& progress) {
    if (!std::isfinite(best_validation_loss)) return;  // no validation yet: nothing to compare with
    const std::size_t now = periodic_validation_pairs(held_out, after), earlier = periodic_validation_pairs(held_out, before);
    if (now == earlier) return;
    const std::size_t all = held_out.size() - 1;
    progress.warning(fmt::format("each validation now scores {} of the {} held-out characters, not {}: its figures do not compare "
                                 "with the earlier ones, nor with the best so far ({:.4f}), which a new best must still beat; "
                                 "give --val-chars {} to keep them as they were",
                                 now, all, earlier, best_validation_loss, earlier == all ? 0 : periodic_validation_characters(before)));
}

// The run's last.safetensors, which a resume goes on from. Where it is missing or cannot be read, the
// message says what the directory still offers: a new run from its best weights, or a start over.
Checkpoint load_checkpoint_to_resume(const std::filesystem::path& run_directory) {
    const std::filesystem::path last = run_directory / run_files::kLastCheckpoint, best = run_directory / run_files::kBestCheckpoint;
    const std::string directory = quoted_for_shell(run_directory.string());
    std::error_code ignored;
    const std::string instead =
        std::filesystem::is_regular_file(best, ignored)
            ? fmt::format("start a new run from its best weights with charlm train CORPUS --init-from {} --out NEW_RUN, or start "
                          "over with charlm train CORPUS --out {} --force",
                          quoted_for_shell(best.string()), directory)
            : fmt::format("start over with charlm train CORPUS --out {} --force", directory);
    if (!std::filesystem::exists(last, ignored)) {
        bool holds_a_run = false;
        for (const auto& entry : std::filesystem::directory_iterator(run_directory, ignored)) {
            const std::string name = entry.path().filename().string();
            holds_a_run = holds_a_run || name == run_files::kMetrics || run_files::is_kept_checkpoint_name(name);
        }
        if (!holds_a_run && !std::filesystem::exists(best, ignored))
            throw Error(fmt::format("{}: holds no run to resume (no {}); start one with charlm train CORPUS --out {}",
                                    run_directory.string(), run_files::kLastCheckpoint, directory));
        throw Error(fmt::format("{}: no {} to resume the run from; {}", run_directory.string(), run_files::kLastCheckpoint, instead));
    }
    try {
        return load_checkpoint(last);
    } catch (const UsageError&) {
        throw;
    } catch (const Error& error) {
        throw Error(fmt::format("{}; the run cannot be resumed from it: {}", error.what(), instead));
    }
}

}  // namespace

TrainResult resume_training(const ResumeRequest& request, TrainingProgress& progress, const Communicator& processes) {
    const auto& run_directory = request.run_directory;
    const auto last_path = run_directory / run_files::kLastCheckpoint;
    std::optional<RunLock> lock;
    std::optional<Checkpoint> checkpoint;
    std::optional<Corpus> corpus;
    TrainOptions options;
    std::vector<std::string> changes;
    int threads_before = 0, processes_before = 1;
    Precision precision_before = Precision::fp32;
    run_on_every_process(processes, [&] {
        std::error_code error;
        if (std::filesystem::is_regular_file(run_directory, error))
            throw UsageError(fmt::format("{}: --resume takes the run's directory, not a file in it: --resume {}", run_directory.string(),
                                         quoted_for_shell(run_directory.parent_path().empty() ? "." : run_directory.parent_path().string())));
        if (!std::filesystem::is_directory(run_directory, error))
            throw Error(fmt::format("{}: no such run directory; give the --out of an earlier 'charlm train'", run_directory.string()));
        if (processes.is_first()) lock.emplace(run_directory);
        checkpoint = load_checkpoint_to_resume(run_directory);
        if (!checkpoint->optimizer || !checkpoint->carried_state)
            throw Error(fmt::format("{}: has no optimizer state to resume from; it was not written by 'charlm train'", last_path.string()));
        options = TrainOptions::from_json(options_for_resume(checkpoint->training.options, request, changes));
        // The model is the checkpoint's: its tensors' shapes, not what its options JSON says, size the run.
        options.model = with_regularization_of(checkpoint->config, options.model);
        options.run_directory = run_directory;
        options.keep_checkpoints = request.options.keep_checkpoints;
        threads_before = options.threads;
        processes_before = options.processes;
        precision_before = options.precision;
        options.precision_choice = request.options.precision_choice;
        options.threads = omp_get_max_threads();
        options.processes = processes.size();
        validate(options);
        check_options_take_effect(options, request.given);
        static_cast<void>(stream_block(options.batch_size, processes.rank(), processes.size()));  // enough streams for all
        if (request.validation_file && !options.validation_file)
            throw UsageError("--val names where a moved validation file is now, and this run validates on part of its corpus; leave --val out");
        options.corpus = locate_recorded_file("corpus", "--corpus", options.corpus, options.corpus_fingerprint, request.corpus, progress);
        if (options.validation_file)
            options.validation_file = locate_recorded_file("validation file", "--val", *options.validation_file,
                                                           options.validation_fingerprint.value_or(FileFingerprint{}),
                                                           request.validation_file, progress);
        check_text_can_be_shared(options, processes);
        corpus = load_corpus(options, &checkpoint->vocab);
        // As a fresh run's, before the ids are mapped (or written again).
        check_options_that_need_validation(options, [&] { return count_held_out(options); }, &request.given);
        if (processes.is_first()) map_corpus(*corpus, options, true, progress);
        if (checkpoint->carried_state->hidden.front().rows() != options.batch_size)
            throw Error(fmt::format("{}: carried state does not match the run's batch size", last_path.string()));
    });
    const std::string precision_reason = decide_run_precision(options, processes, precision_before);
    nlohmann::json shared_options = options_to_share(options);
    shared_options["checkpoint step"] = checkpoint->training.step;  // each process read the same last.safetensors
    check_processes_agree(processes, shared_options, "resumes another run or with other options", kSameCommandAdvice);
    check_processes_agree(processes, corpus_facts(options, *corpus), "reads another text", kSameCorpusAdvice);
    run_on_every_process(processes, [&] {  // the ids are in the run directory now
        if (!processes.is_first()) map_corpus(*corpus, options, true, progress, /*encoded_by_another=*/true);
    });

    Session session{options,
                    std::move(*corpus),
                    std::move(*checkpoint->model),
                    std::move(*checkpoint->optimizer),
                    checkpoint->training,
                    {},
                    rng_from_string(checkpoint->training.rng_state)};
    session.model.set_regularization(options.model);
    session.model.set_precision(options.precision);
    if (options.average_decay > 0) {
        // A run that averaged goes on from its average; one that starts averaging now, from its weights.
        if (checkpoint->average) {
            session.average.emplace();
            session.average->values() = std::move(*checkpoint->average);
            session.average->set_decay(options.average_decay);
        } else {
            session.average.emplace(session.model.parameters(), options.average_decay);
            progress.note(fmt::format("--ema {}: the average of the parameters starts at step {}", options.average_decay,
                                      checkpoint->training.step));
        }
    }
    session.processes = &processes;
    session.streams = stream_block(options.batch_size, processes.rank(), processes.size());
    // This process's streams' rows of the whole batch's carried state.
    const ModelState<float>& whole = *checkpoint->carried_state;
    for (const auto& hidden : whole.hidden) session.carried.hidden.emplace_back(hidden.middleRows(session.streams.first, session.streams.count));
    for (const auto& cell : whole.cell) session.carried.cell.emplace_back(cell.middleRows(session.streams.first, session.streams.count));
    // Warnings only now, once every check has passed: a refusal is one line.
    warn_if_validations_change(TrainOptions::from_json(checkpoint->training.options), options, session.corpus.validation(),
                               session.state.best_validation_loss, progress);
    if (threads_before > 0 && threads_before != options.threads)
        progress.warning(fmt::format("the run trained with --threads {} and goes on with {}: its numbers will differ in the "
                                     "last bits from one uninterrupted run (give --threads {} to keep them the same)",
                                     threads_before, options.threads, threads_before));
    if (precision_before != options.precision)
        progress.warning(fmt::format("the run trained with {} products and goes on with {}: its numbers will differ from one "
                                     "uninterrupted run (give --precision {} to keep them the same)",
                                     to_string(precision_before), to_string(options.precision), to_string(precision_before)));
    session.precision_note = "products in " + precision_reason;
    if (processes_before != options.processes)
        progress.warning(fmt::format("the run trained on {} process{} and goes on with {}: {}", processes_before,
                                     processes_before == 1 ? "" : "es", options.processes,
                                     session.model.regularized() ? "with dropout each process draws its own masks, so the run "
                                                                 "takes another path from here than one uninterrupted run "
                                                                 "(of the same kind)"
                                                               : "the same path, but its numbers will differ in the last "
                                                                 "bits from one uninterrupted run"));
    const std::int64_t steps_before = checkpoint->training.options.value("steps", options.steps);
    if (options.learning_rate_schedule.kind == LearningRateSchedule::Kind::cosine && options.steps != steps_before) {
        const std::int64_t next_step = checkpoint->training.step + 1;
        progress.warning(fmt::format("the cosine schedule now decays over {} steps, not {}: the learning rate moves from {:.3g} "
                                     "to {:.3g}",
                                     options.steps, steps_before, options.learning_rate_schedule.at(next_step, steps_before),
                                     options.learning_rate_schedule.at(next_step, options.steps)));
    }
    progress.note(fmt::format("resuming {} at step {}{}", run_directory.string(), session.state.step,
                              changes.empty() ? std::string() : fmt::format("; changed: {}", fmt::join(changes, ", "))));
    if (options.steps > 0 && session.state.step >= options.steps)
        progress.warning(fmt::format("the run is already at step {}, not below --steps {}; nothing to do", session.state.step,
                                     options.steps));
    return run_training_loop(session, progress);
}

}  // namespace charlm
