// Time as the library measures it: a steady clock, and the seconds since a moment of it.
#pragma once

#include <chrono>

namespace charlm {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace charlm
