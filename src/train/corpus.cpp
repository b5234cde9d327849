// A run's texts read once for their vocabulary, then encoded into (or mapped from) the run directory's ids files.
#include "corpus.hpp"

#include <cmath>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "charlm/display.hpp"
#include "charlm/error.hpp"
#include "run_directory.hpp"

namespace charlm {

std::size_t training_size(const TrainOptions& options, std::size_t characters) {
    const std::size_t held_out = options.validation_file ? 0 : held_out_size(options, characters);
    const std::size_t size = characters - held_out, window = static_cast<std::size_t>(options.seq_length) + 1;
    if (size < window && characters >= window)  // the text would do: the share held out leaves too little
        throw UsageError(fmt::format("--val-fraction {} holds out {} of the {} characters of {}, which leaves {} to train on, shorter "
                                     "than one window of --seq {} plus one; give a smaller --val-fraction",
                                     validation_fraction_text(options), held_out, characters, options.corpus.string(), size,
                                     options.seq_length));
    if (size < window)
        throw Error(fmt::format("{}: the training text has {} characters, shorter than one window of --seq {} plus one; "
                                "use a longer text or a smaller --seq",
                                options.corpus.string(), size, options.seq_length));
    return size;
}

namespace {

// The held-out characters of a fresh run whose texts have `character_counts` (the corpus's, then a
// --val file's). Validation predicts each held-out character from the one before, so fewer than two
// are none: a --val-fraction or a --val file that asks for validation and gives none is refused.
std::size_t held_out_size(const TrainOptions& options, const std::vector<std::size_t>& character_counts) {
    if (options.validation_file) {
        const std::size_t held_out = character_counts.back();
        if (held_out < 2)
            throw Error(fmt::format("{}: the validation text has {} character{}, and a validation needs at least 2 (it predicts "
                                    "each from the one before); give a longer --val file",
                                    options.validation_file->string(), held_out, held_out == 1 ? "" : "s"));
        return held_out;
    }
    const std::size_t characters = character_counts.front(), held_out = characters - training_size(options, characters);
    if (held_out < 2 && options.validation_fraction.value_or(kAutomaticValidationFraction) > 0) {
        // The least fraction that holds out two, rounded up to two digits.
        const double least = 1.5 / static_cast<double>(characters);
        const double scale = std::pow(10.0, std::floor(std::log10(least)) - 1);
        throw UsageError(fmt::format("--val-fraction {} holds out {} of the {} characters of {}, and a validation needs at least 2 "
                                     "(it predicts each from the one before); give --val-fraction {:g} or more, or 0 for no "
                                     "validation",
                                     validation_fraction_text(options), held_out, characters, options.corpus.string(),
                                     std::ceil(least / scale) * scale));
    }
    return held_out;
}

}  // namespace

std::size_t count_held_out(const TrainOptions& options) {
    std::vector<std::filesystem::path> files{options.corpus};
    if (options.validation_file) files.push_back(*options.validation_file);
    std::vector<std::size_t> character_counts;
    static_cast<void>(Vocab::from_files(files, &character_counts));
    return held_out_size(options, character_counts);
}

Corpus load_corpus(const TrainOptions& options, const Vocab* vocab, const Vocab* extended) {
    Corpus corpus;
    std::vector<std::filesystem::path> files{options.corpus};
    if (options.validation_file) files.push_back(*options.validation_file);
    std::vector<std::size_t> character_counts;
    corpus.vocab = vocab ? *vocab : Vocab::from_files(files, &character_counts);
    if (corpus.vocab.size() == 0)
        throw Error(fmt::format("{}: the text has no characters; give a longer text", options.corpus.string()));
    if (corpus.vocab.size() < 2)
        throw Error(fmt::format("{}: the text has only one distinct character, {}; there is nothing to learn",
                                options.corpus.string(), describe_code_point(corpus.vocab.code_point_of(0))));
    if (!vocab) corpus.counted_validation_size = held_out_size(options, character_counts);
    if (extended) corpus.vocab = extended->extended_by(corpus.vocab);
    return corpus;
}

void map_corpus(Corpus& corpus, const TrainOptions& options, bool resumed, TrainingProgress& progress, bool encoded_by_another) {
    auto map = [&](const std::filesystem::path& text, FileFingerprint fingerprint, const char* name) {
        const std::filesystem::path path = options.run_directory / name;
        if (fingerprint.sha256.empty()) fingerprint = fingerprint_file(text);  // a checkpoint older than corpus hashes
        std::string why_not;
        if (std::optional<MappedIds> ids = MappedIds::open(path, fingerprint, corpus.vocab, &why_not)) return std::move(*ids);
        if (encoded_by_another)
            throw Error(fmt::format("{}: {}; process 0 wrote it there, and every machine must see the run directory (a "
                                    "filesystem they share)",
                                    path.string(), why_not));
        std::error_code missing;
        if (std::filesystem::exists(path, missing) && !std::filesystem::is_regular_file(path, missing))
            throw Error(fmt::format("{}: is not a file, and the run keeps the corpus's ids there; move it away", path.string()));
        if (std::filesystem::exists(path, missing))
            progress.note(fmt::format("{}: {}; encoding {} again", path.string(), why_not, text.string()));
        try {
            return MappedIds::encode(path, text, fingerprint, corpus.vocab);
        } catch (const Error& error) {
            if (!resumed) throw;
            throw Error(fmt::format("{}: {} of the checkpoint being resumed", text.string(), error.what()));
        }
    };
    corpus.ids = map(options.corpus, options.corpus_fingerprint, run_files::kCorpusIds);
    if (options.validation_file) {
        corpus.validation_ids = map(*options.validation_file, options.validation_fingerprint.value_or(FileFingerprint{}), run_files::kValidationIds);
        corpus.separate_validation = true;
    } else if (!encoded_by_another) {  // an earlier run's (--force), validated on a file of its own: nobody's now
        std::error_code ignored;
        if (std::filesystem::is_regular_file(options.run_directory / run_files::kValidationIds, ignored))
            std::filesystem::remove(options.run_directory / run_files::kValidationIds, ignored);
    }
    corpus.train_size = training_size(options, corpus.ids.size());
}

}  // namespace charlm
