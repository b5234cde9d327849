// Errors meant for the user: Error (exit 1) and UsageError (exit 2), and those that derive from them (the
// decoder's), each a message printed once by the CLI.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace charlm {

class Error : public std::runtime_error {
public:
    explicit Error(const std::string& message) : std::runtime_error(message) {}

    // Met by every process of a data-parallel run at the same point, with the same message (see
    // run_on_every_process): the first process alone prints it, and none needs to end the others.
    bool shared_by_every_process() const { return shared_by_every_process_; }
    void set_shared_by_every_process() { shared_by_every_process_ = true; }

private:
    bool shared_by_every_process_ = false;
};

// `error`, marked as met by every process: throw shared(Error("...")).
template <typename SomeError>
SomeError shared(SomeError error) {
    error.set_shared_by_every_process();
    return error;
}

// An error in what the user asked for (an option out of range, options that contradict each other),
// as opposed to what happened while doing it: the CLI exits 2 for it, as for a parse error.
class UsageError : public Error {
public:
    using Error::Error;
};

// Text as a user would type it into a shell, for the commands that messages suggest: as it is where
// that is safe, else in single quotes ("runs/my run" -> 'runs/my run').
std::string quoted_for_shell(std::string_view text);

}  // namespace charlm
