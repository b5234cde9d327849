// Adam, gradient clipping, the parameters' average and dynamic evaluation's update over a model's parameters.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "charlm/tensor.hpp"

namespace charlm {

// Scales all gradients so that their joint L2 norm is at most max_norm; returns the norm before.
double clip_gradient_norm(std::vector<Parameter<float>>& parameters, double max_norm);

struct AdamConfig {
    double beta1 = 0.9;
    double beta2 = 0.999;
    double epsilon = 1e-8;
};

// Learning rate by step: linear warmup to the peak, then constant, cosine decay to a tenth of the peak
// at the run's last step, or step decay. The run's length is not part of it: TrainOptions holds it as
// `steps`, which a resume may change, and one number in two places could disagree.
struct LearningRateSchedule {
    enum class Kind { constant, cosine, step };
    Kind kind = Kind::constant;
    double peak_learning_rate = 2e-3;
    std::int64_t warmup_steps = 0;
    std::int64_t decay_every_steps = 1000;  // step decay multiplies by decay_factor this often
    double decay_factor = 0.5;

    // step counts from 1; total_steps, where cosine reaches a tenth of the peak, is read by cosine alone
    double at(std::int64_t step, std::int64_t total_steps) const;
    static Kind parse(const std::string& name);  // throws UsageError for an unknown name, listing the names
    static std::string name(Kind kind);
};

class Adam {
public:
    Adam() = default;
    Adam(const std::vector<Parameter<float>>& parameters, AdamConfig config = {});

    // Returns false where the step left a parameter or a second moment that is not finite (a learning
    // rate far too high, a gradient whose square overflows): the caller must stop and save nothing.
    [[nodiscard]] bool step(std::vector<Parameter<float>>& parameters, double learning_rate);

    std::int64_t step_count() const { return step_count_; }
    void set_step_count(std::int64_t steps) { step_count_ = steps; }
    // first and second moments, one pair per parameter, for checkpoints
    std::vector<Matrix<float>>& first_moments() { return first_moments_; }
    std::vector<Matrix<float>>& second_moments() { return second_moments_; }
    const std::vector<Matrix<float>>& first_moments() const { return first_moments_; }
    const std::vector<Matrix<float>>& second_moments() const { return second_moments_; }

private:
    AdamConfig config_;
    std::int64_t step_count_ = 0;
    std::vector<Matrix<float>> first_moments_;
    std::vector<Matrix<float>> second_moments_;
};

// An exponential moving average of the parameters, updated after each step: weights averaged over the
// last 1/(1 - decay) steps or so, which lie nearer the floor of the valley that the steps scatter
// around than any one step's (Polyak and Juditsky 1992; the EMA of TensorFlow and timm). The decay
// warms up as min(decay, (1 + step) / (10 + step)), so that early averages do not weigh the random start.
class ParameterAverage {
public:
    ParameterAverage() = default;
    ParameterAverage(const std::vector<Parameter<float>>& parameters, double decay);  // starts at the values

    // After the update of `step` (counting from 1).
    void update(const std::vector<Parameter<float>>& parameters, std::int64_t step);
    // Exchanges the averages with the parameters' values: a second call puts them back.
    void swap_with(std::vector<Parameter<float>>& parameters);

    double decay() const { return decay_; }
    void set_decay(double decay) { decay_ = decay; }
    std::vector<Matrix<float>>& values() { return values_; }  // one per parameter, for checkpoints
    const std::vector<Matrix<float>>& values() const { return values_; }

private:
    double decay_ = 0;
    std::vector<Matrix<float>> values_;
};

// Dynamic evaluation's update (Krause et al. 2018, "Dynamic Evaluation of Neural Sequence Models"), in
// their RMS-normalised form: each gradient is divided by the root of its mean square, then the weights
// take a step and decay toward the trained ones w0:
//     w <- w0 + (1 - decay) (w - learning_rate g / (sqrt(mean g^2) + 1e-8) - w0)
// Their mean square comes from gradients on training data, which evaluation does not have: here it is
// the mean over the steps so far, of the text read so far. They decay before the step (w - lr g' +
// decay (w0 - w)), which is this rule at a learning rate lr / (1 - decay); decaying after it makes
// decay 1 exactly the trained weights and learning rate 0 exactly no change, so that a test can ask
// for the plain figure bit for bit. Elementwise: the result does not depend on the thread count.
class WeightAdaptation {
public:
    // `trained`: the weights w0, which must outlive this.
    explicit WeightAdaptation(const std::vector<Parameter<float>>& trained);

    // Returns false where a weight stopped being finite: the caller must stop.
    [[nodiscard]] bool step(std::vector<Parameter<float>>& parameters, double learning_rate, double decay);
    std::int64_t step_count() const { return step_count_; }

private:
    const std::vector<Parameter<float>>& trained_;
    std::vector<Matrix<float>> mean_squares_;  // of each weight's gradient over the steps so far
    std::int64_t step_count_ = 0;
};

}  // namespace charlm
