// One training step, and what the processes of a run do together around it: sums, the carried state, a checksum.
#include "step.hpp"

#include <cmath>
#include <cstdint>
#include <span>
#include <sstream>
#include <vector>

#include <fmt/format.h>

#include "charlm/batches.hpp"
#include "charlm/error.hpp"
#include "charlm/eval.hpp"
#include "charlm/optim.hpp"
#include "charlm/train.hpp"

namespace charlm {

StepOutcome train_step(Model<float>& model, Adam& optimizer, const Batch& batch, ModelState<float>& carried, double clip,
                       double learning_rate, const Communicator& processes) {
    StepOutcome outcome;
    if (batch.starts_streams) carried.reset();
    model.zero_gradients();
    model.forward(batch.inputs, batch.seq_length, batch.batch_size, carried);
    // The whole batch's loss, which every process then judges alike: one returning early alone would
    // leave the others waiting for its gradients.
    const LossSum loss = summed_across(processes, model.loss(batch.targets));
    outcome.loss = loss.mean();
    if (!std::isfinite(outcome.loss)) {
        outcome.finite = false;
        return outcome;
    }
    model.backward(loss.count);
    // Each process's gradient is its block's share of the whole batch's mean: summed, they are that
    // mean, identical everywhere, and so are the norm, the clipping and Adam's update that follow.
    if (processes.size() > 1)
        for (auto& parameter : model.parameters())
            processes.sum(std::span<float>(parameter.gradient.data(), static_cast<std::size_t>(parameter.gradient.size())));
    outcome.gradient_norm = clip_gradient_norm(model.parameters(), clip);
    if (!std::isfinite(outcome.gradient_norm)) {
        outcome.finite = false;
        return outcome;
    }
    outcome.finite = optimizer.step(model.parameters(), learning_rate);
    return outcome;
}

// The carried state of all the batch's streams, on process 0 (the others get it empty): each
// process's block of rows in rank order.
ModelState<float> gather_carried_state(const Model<float>& model, const ModelState<float>& mine, int batch_size,
                                       const Communicator& processes) {
    const int B = batch_size;
    ModelState<float> whole = processes.is_first() ? model.initial_state(B) : ModelState<float>{};
    auto gather = [&](const std::vector<Matrix<float>>& rows, std::vector<Matrix<float>>& all) {
        for (std::size_t layer = 0; layer < rows.size(); ++layer) {
            const Eigen::Index H = rows[layer].cols();
            std::vector<int> counts;
            for (int rank = 0; rank < processes.size(); ++rank)
                counts.push_back(stream_block(B, rank, processes.size()).count * static_cast<int>(H));
            std::span<float> destination = processes.is_first() ? std::span<float>(all[layer].data(), static_cast<std::size_t>(all[layer].size()))
                                                                 : std::span<float>();
            processes.gather(std::span<const float>(rows[layer].data(), static_cast<std::size_t>(rows[layer].size())), destination, counts);
        }
    };
    gather(mine.hidden, whole.hidden);
    gather(mine.cell, whole.cell);
    return whole;
}

// Every process updates its own copy of the parameters from the same summed gradient: they must stay
// identical. A cheap checksum at each validation tells, rather than let them drift apart unseen.
void check_parameters_agree(const Model<float>& model, std::int64_t step, const Communicator& processes) {
    if (processes.size() == 1) return;
    std::uint64_t checksum = 14695981039346656037ull;
    for (const auto& parameter : model.parameters()) {
        const auto* words = reinterpret_cast<const std::uint32_t*>(parameter.value.data());
        for (Eigen::Index i = 0; i < parameter.value.size(); ++i) checksum = (checksum ^ words[i]) * 1099511628211ull;
    }
    const std::vector<std::string> checksums = processes.gather_all(fmt::format("{:016x}", checksum));
    for (std::size_t rank = 1; rank < checksums.size(); ++rank)
        if (checksums[rank] != checksums[0])
            throw shared(Error(fmt::format("at step {} the parameters of process {} differ from process 0's (checksum {} against {}): "
                                           "the processes no longer train one model; resume from the last checkpoint",
                                           step, rank, checksums[rank], checksums[0])));
}

std::string rng_to_string(const std::mt19937_64& rng) {
    std::ostringstream out;
    out << rng;
    return out.str();
}

std::mt19937_64 rng_from_string(const std::string& text) {
    std::mt19937_64 rng;
    std::istringstream in(text);
    in >> rng;
    if (in.fail()) throw Error("the checkpoint's random generator state is corrupt");
    return rng;
}

}  // namespace charlm
