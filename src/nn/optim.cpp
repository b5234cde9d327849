// Adam (with PyTorch's bias correction), global-norm clipping, the parameters' average, dynamic evaluation's update.
#include "charlm/optim.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>

#include <fmt/format.h>

#include "charlm/error.hpp"
#include "kernels.hpp"

namespace charlm {

double LearningRateSchedule::at(std::int64_t step, std::int64_t total_steps) const {
    const double peak = peak_learning_rate;
    if (warmup_steps > 0 && step <= warmup_steps) return peak * static_cast<double>(step) / static_cast<double>(warmup_steps);
    switch (kind) {
        case Kind::constant: return peak;
        case Kind::cosine: {
            const double span = static_cast<double>(std::max<std::int64_t>(1, total_steps - warmup_steps));
            const double progress = std::clamp(static_cast<double>(step - warmup_steps) / span, 0.0, 1.0);
            return peak * (0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * progress)));
        }
        case Kind::step:
            return peak * std::pow(decay_factor, static_cast<double>((step - 1 - warmup_steps) / std::max<std::int64_t>(1, decay_every_steps)));
    }
    return peak;
}

LearningRateSchedule::Kind LearningRateSchedule::parse(const std::string& name) {
    if (name == "constant") return Kind::constant;
    if (name == "cosine") return Kind::cosine;
    if (name == "step") return Kind::step;
    throw UsageError(fmt::format("unknown learning-rate schedule '{}'; use constant, cosine or step", name));
}

std::string LearningRateSchedule::name(Kind kind) {
    switch (kind) {
        case Kind::constant: return "constant";
        case Kind::cosine: return "cosine";
        case Kind::step: return "step";
    }
    return "constant";
}

namespace {

// Runs body(first, count) over contiguous chunks of [0, size) in parallel: the optimizer's loops are
// elementwise, so the chunks are independent and the result does not depend on the thread count.
constexpr Eigen::Index kChunk = 16384;

template <typename Body>
void for_each_chunk(Eigen::Index size, const Body& body) {
    const Eigen::Index chunks = (size + kChunk - 1) / kChunk;
    if (chunks <= 1) {
        if (size > 0) body(0, size);
        return;
    }
#pragma omp parallel for schedule(static)
    for (Eigen::Index index = 0; index < chunks; ++index) body(index * kChunk, std::min(kChunk, size - index * kChunk));
}

}  // namespace

double clip_gradient_norm(std::vector<Parameter<float>>& parameters, double max_norm) {
    // Chunks summed in parallel, then in order: the norm does not depend on the thread count.
    double squared = 0;
    std::vector<double> chunk_sums;
    for (const auto& parameter : parameters) {
        const float* gradient = parameter.gradient.data();
        chunk_sums.assign(static_cast<std::size_t>((parameter.gradient.size() + kChunk - 1) / kChunk), 0.0);
        for_each_chunk(parameter.gradient.size(), [&](Eigen::Index first, Eigen::Index count) {
            chunk_sums[static_cast<std::size_t>(first / kChunk)] =
                Eigen::Map<const Eigen::ArrayXf>(gradient + first, count).cast<double>().square().sum();
        });
        for (const double sum : chunk_sums) squared += sum;
    }
    const double norm = std::sqrt(squared);
    if (max_norm > 0 && norm > max_norm) {
        const float scale = static_cast<float>(max_norm / (norm + 1e-6));
        for (auto& parameter : parameters) {
            float* gradient = parameter.gradient.data();
            for_each_chunk(parameter.gradient.size(), [&](Eigen::Index first, Eigen::Index count) {
                Eigen::Map<Eigen::ArrayXf>(gradient + first, count) *= scale;
            });
        }
    }
    return norm;
}

Adam::Adam(const std::vector<Parameter<float>>& parameters, AdamConfig config) : config_(config) {
    for (const auto& parameter : parameters) {
        first_moments_.push_back(Matrix<float>::Zero(parameter.value.rows(), parameter.value.cols()));
        second_moments_.push_back(Matrix<float>::Zero(parameter.value.rows(), parameter.value.cols()));
    }
}

bool Adam::step(std::vector<Parameter<float>>& parameters, double learning_rate) {
    ++step_count_;
    const auto beta1 = static_cast<float>(config_.beta1), beta2 = static_cast<float>(config_.beta2);
    const double correction1 = 1 - std::pow(config_.beta1, static_cast<double>(step_count_));
    const double correction2 = 1 - std::pow(config_.beta2, static_cast<double>(step_count_));
    const auto step_size = static_cast<float>(learning_rate / correction1);
    const auto root_correction2 = static_cast<float>(std::sqrt(correction2));
    const auto epsilon = static_cast<float>(config_.epsilon);
    // Each chunk checks what it wrote while it is still in cache: nearly free, where a pass of its own is not.
    std::atomic<bool> finite = true;
    const auto update = kernels().adam;
    for (std::size_t i = 0; i < parameters.size(); ++i) {
        float *value = parameters[i].value.data(), *gradient = parameters[i].gradient.data();
        float *first_moment = first_moments_[i].data(), *second_moment = second_moments_[i].data();
        for_each_chunk(parameters[i].value.size(), [&](Eigen::Index first, Eigen::Index count) {
            // In the kernels' level (kernels.hpp), as the products are: a portable build's own code is SSE2's.
            const AdamChunk chunk{value + first, first_moment + first, second_moment + first, gradient + first, count,
                                  beta1, beta2, step_size, root_correction2, epsilon};
            if (!update(chunk)) finite.store(false, std::memory_order_relaxed);
        });
    }
    return finite.load();
}

ParameterAverage::ParameterAverage(const std::vector<Parameter<float>>& parameters, double decay) : decay_(decay) {
    for (const auto& parameter : parameters) values_.push_back(parameter.value);
}

void ParameterAverage::update(const std::vector<Parameter<float>>& parameters, std::int64_t step) {
    const double warming = static_cast<double>(1 + step) / static_cast<double>(10 + step);
    const auto kept = static_cast<float>(std::min(decay_, warming)), taken = 1 - kept;
    for (std::size_t i = 0; i < parameters.size(); ++i) {
        const float* value = parameters[i].value.data();
        float* average = values_[i].data();
        for_each_chunk(parameters[i].value.size(), [&](Eigen::Index first, Eigen::Index count) {
            Eigen::Map<Eigen::ArrayXf> a(average + first, count);
            a = kept * a + taken * Eigen::Map<const Eigen::ArrayXf>(value + first, count);
        });
    }
}

void ParameterAverage::swap_with(std::vector<Parameter<float>>& parameters) {
    for (std::size_t i = 0; i < parameters.size(); ++i) parameters[i].value.swap(values_[i]);
}

WeightAdaptation::WeightAdaptation(const std::vector<Parameter<float>>& trained) : trained_(trained) {
    for (const auto& parameter : trained)
        mean_squares_.push_back(Matrix<float>::Zero(parameter.value.rows(), parameter.value.cols()));
}

bool WeightAdaptation::step(std::vector<Parameter<float>>& parameters, double learning_rate, double decay) {
    if (parameters.size() != trained_.size()) throw Error("adaptation: the trained weights are another model's");
    ++step_count_;
    const auto share = static_cast<float>(1.0 / static_cast<double>(step_count_));  // of the new gradient in the mean
    const auto step_size = static_cast<float>(learning_rate), kept = static_cast<float>(1 - decay);
    std::atomic<bool> finite = true;
    for (std::size_t i = 0; i < parameters.size(); ++i) {
        float *value = parameters[i].value.data(), *mean_square = mean_squares_[i].data();
        const float *gradient = parameters[i].gradient.data(), *trained_value = trained_[i].value.data();
        for_each_chunk(parameters[i].value.size(), [&](Eigen::Index first, Eigen::Index count) {
            const Eigen::Map<const Eigen::ArrayXf> g(gradient + first, count), w0(trained_value + first, count);
            Eigen::Map<Eigen::ArrayXf> w(value + first, count), ms(mean_square + first, count);
            ms += share * (g.square() - ms);
            w = w0 + kept * (w - step_size * g / (ms.sqrt() + 1e-8f) - w0);
            if (!w.isFinite().all()) finite.store(false, std::memory_order_relaxed);
        });
    }
    return finite.load();
}

}  // namespace charlm
