// The one error type: a message meant for the user, printed once by the CLI (exit 1; a UsageError, exit 2).
#pragma once

#include <stdexcept>
#include <string>

namespace charlm {

class Error : public std::runtime_error {
public:
    explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// An error in what the user asked for (an option out of range, options that contradict each other),
// as opposed to what happened while doing it: the CLI exits 2 for it, as for a parse error.
class UsageError : public Error {
public:
    using Error::Error;
};

}  // namespace charlm
