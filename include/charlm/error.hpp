// The one error type: a message meant for the user, printed once by the CLI.
#pragma once

#include <stdexcept>
#include <string>

namespace charlm {

class Error : public std::runtime_error {
public:
    explicit Error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace charlm
