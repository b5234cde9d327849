// Reading integers from JSON without undefined behaviour: nlohmann's get<int>() casts a float such as 1e300.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

namespace charlm {

// Throws nlohmann::json::type_error (which the readers already turn into Error) for a value that is
// not an integer or does not fit `Integer`.
template <typename Integer>
Integer integer_value(const nlohmann::json& value) {
    if (value.is_number_unsigned()) {
        const auto number = value.get<std::uint64_t>();
        if (std::in_range<Integer>(number)) return static_cast<Integer>(number);
    } else if (value.is_number_integer()) {
        const auto number = value.get<std::int64_t>();
        if (std::in_range<Integer>(number)) return static_cast<Integer>(number);
    }
    throw nlohmann::json::type_error::create(302, "expected an integer in range, not " + value.dump(), &value);
}

}  // namespace charlm
