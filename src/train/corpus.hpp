// A run's texts as ids: the vocabulary, the ids files of the run directory, and the train/validation split.
#pragma once

#include <cstddef>

#include "charlm/progress.hpp"
#include "charlm/text.hpp"
#include "charlm/train.hpp"

namespace charlm {

// The ids live in files of the run directory, corpus.ids (and validation.ids for a --val file), each
// encoded once and mapped, so that a corpus larger than memory trains with only the windows in use
// resident. The train and validation parts are views of them.
struct Corpus {
    Vocab vocab;
    MappedIds ids;             // the corpus file's
    MappedIds validation_ids;  // the --val file's, when there is one
    std::size_t train_size = 0;
    bool separate_validation = false;
    // For a fresh run, the held-out characters as load_corpus() counted them: what validation() will hold,
    // known before any ids are written, so that the checks that need it come first.
    std::size_t counted_validation_size = 0;

    TokenSpan train() const { return ids.span().subspan(0, train_size); }
    TokenSpan validation() const {
        return separate_validation ? validation_ids.span() : ids.span().subspan(train_size, ids.size() - train_size);
    }
};

// The part of a corpus of `characters` that trains; refused where it cannot fill one window (a usage
// error where the text would, but --val-fraction holds out too much of it).
std::size_t training_size(const TrainOptions& options, std::size_t characters);

// The held-out characters of the run's texts, counted in a pass over them, as load_corpus() counts a
// fresh run's: for a resume's checks that need them before the ids are mapped.
std::size_t count_held_out(const TrainOptions& options);

// The pass over the text before the run directory is touched: the vocabulary (a resumed run's is
// `vocab`; a run started from a checkpoint's weights extends its vocabulary, `extended`, by the
// text's), and for a fresh run the count that refuses a text too short to train. The files are
// streamed, never held whole; map_corpus() then gives the ids.
Corpus load_corpus(const TrainOptions& options, const Vocab* vocab, const Vocab* extended = nullptr);

// The ids of the run's texts, in the run directory: a file there is mapped where it holds this text's
// ids under this vocabulary (a resumed run's, or an earlier run's of the same text), else the text is
// encoded into it again, never trusted. With `resumed`, the text must hold no character outside the
// checkpoint's vocabulary. Of several processes, the first alone encodes: the others map what it wrote
// (`encoded_by_another`), and refuse where they cannot read it.
void map_corpus(Corpus& corpus, const TrainOptions& options, bool resumed, TrainingProgress& progress,
                bool encoded_by_another = false);

}  // namespace charlm
