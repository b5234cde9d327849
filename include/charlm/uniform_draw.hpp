// The one uniform draw charlm makes from a generator: weights, samples and completions all take it, so
// that a seed means the same numbers on every platform. Not a distribution library.
#pragma once

#include <random>

namespace charlm {

// A uniform draw in [0, 1) from the generator's top 53 bits, the same on every platform (unlike
// std::uniform_real_distribution, whose algorithm each standard library chooses).
inline double uniform_draw(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

}  // namespace charlm
