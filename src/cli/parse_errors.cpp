// CLI11's parse errors in charlm's words: what a value should be, and where to read more. Not the commands' own checks.
#include "cli/parse_errors.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <regex>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "charlm/error.hpp"

namespace charlm::cli {

std::string check_whole_number(std::string& value, bool may_be_negative) {
    std::string_view digits = value;
    if (digits.starts_with('+')) digits.remove_prefix(1);
    const bool negative = digits.starts_with('-');
    const std::string_view magnitude = digits.substr(negative ? 1 : 0);
    if (magnitude.empty() || !std::all_of(magnitude.begin(), magnitude.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return fmt::format("wants a whole number, not '{}'", value);
    if (negative && !may_be_negative) return fmt::format("wants a whole number of 0 or more, not '{}'", value);
    const char* end = digits.data() + digits.size();
    long long signed_number = 0;
    unsigned long long unsigned_number = 0;
    const bool fits = may_be_negative ? std::from_chars(digits.data(), end, signed_number).ec == std::errc()
                                      : std::from_chars(digits.data(), end, unsigned_number).ec == std::errc();
    if (!fits) return fmt::format("cannot take {}: it is out of range", value);
    value = may_be_negative ? std::to_string(signed_number) : std::to_string(unsigned_number);
    return {};
}

std::string check_number(const std::string& value) {
    std::string_view text = value;
    if (!text.empty() && text.front() == '+') text.remove_prefix(1);
    double number = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), number);
    if (error == std::errc::result_out_of_range) return fmt::format("cannot take {}: it is out of range", value);
    if (error != std::errc() || end != text.data() + text.size()) return fmt::format("wants a number, not '{}'", value);
    return {};
}

void check_values_in_plain_words(CLI::App& app) {
    for (CLI::App* command : app.get_subcommands([](CLI::App*) { return true; })) check_values_in_plain_words(*command);
    for (CLI::Option* option : app.get_options()) {
        const std::string type = option->get_type_name().substr(0, option->get_type_name().find(':'));
        if (type == "INT" || type == "UINT")
            option->transform(CLI::Validator([unsigned_only = type == "UINT"](std::string& value) {
                return check_whole_number(value, !unsigned_only);
            }, ""));
        else if (type == "FLOAT")
            option->transform(CLI::Validator([](std::string& value) { return check_number(value); }, ""));
        // Range keeps the name it is given as its description, not its name: found by that.
        for (int index = 0;; ++index) {
            CLI::Validator* validator = nullptr;
            try {
                validator = option->get_validator(index);
            } catch (const CLI::OptionNotFound&) {
                break;
            }
            const bool positive = validator->get_description() == "POSITIVE";
            if (!positive && validator->get_description() != "NONNEGATIVE") continue;
            validator->operation([positive](std::string& value) {
                const double number = std::strtod(value.c_str(), nullptr);
                if (positive ? number > 0 : number >= 0) return std::string();
                return fmt::format("must be {} 0, not {}", positive ? "above" : "at least", value);
            });
        }
    }
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        std::size_t diagonal = row[0];
        row[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            const std::size_t above = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
            diagonal = above;
        }
    }
    return row[b.size()];
}

std::string closest_suggestion(const std::string& word, const std::vector<std::string>& candidates) {
    std::string best;
    std::size_t best_distance = std::max<std::size_t>(2, word.size() / 3) + 1;
    for (const auto& candidate : candidates) {
        const std::size_t distance = edit_distance(word, candidate);
        if (distance < best_distance) best = candidate, best_distance = distance;
    }
    return best.empty() ? std::string() : fmt::format(" (did you mean {}?)", best);
}

namespace {

// The commands --help lists: not those hidden from it (an empty group: charlm generate, for packagers).
std::vector<std::string> command_names(CLI::App& app) {
    std::vector<std::string> names;
    for (CLI::App* command : app.get_subcommands([](CLI::App* each) { return !each->get_group().empty(); }))
        names.push_back(command->get_name());
    return names;
}

// The text after CLI11's "NAME: " or before " is required", split off; CLI11 2.x words its messages so.
std::pair<std::string, std::string> name_and_rest(const std::string& message, const std::string& separator) {
    const auto at = message.find(separator);
    if (at == std::string::npos) return {"", message};
    return {message.substr(0, at), message.substr(at + separator.size())};
}

}  // namespace

std::string plain_parse_error(const CLI::ParseError& error, CLI::App& app, CLI::App* command) {
    const std::string message = error.what();
    const std::string command_name = command ? "charlm " + command->get_name() : std::string("charlm");
    if (dynamic_cast<const CLI::RequiredError*>(&error)) {
        if (!command) {
            const auto remaining = app.remaining();
            const auto names = command_names(app);
            if (remaining.empty()) return fmt::format("give a command: {}", fmt::join(names, ", "));
            if (remaining.front().starts_with("-"))
                return fmt::format("unknown option {}; give a command first: {}", remaining.front(), fmt::join(names, ", "));
            return fmt::format("unknown command '{}'{}; the commands are {}", remaining.front(),
                               closest_suggestion(remaining.front(), names), fmt::join(names, ", "));
        }
        const auto [name, rest] = name_and_rest(message, " is required");
        const CLI::Option* option = command->get_option_no_throw(name);
        if (option && rest.empty()) {
            std::string description = option->get_description();
            if (description.size() > 1 && !std::isupper(static_cast<unsigned char>(description[1])))  // "A file", not "UTF-8"
                description[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(description[0])));
            return fmt::format("{} needs {}: {}", command_name, name, description);
        }
    }
    if (dynamic_cast<const CLI::ExtrasError*>(&error)) {
        const auto remaining = app.remaining(true);
        if (!remaining.empty()) {
            const std::string& first = remaining.front();
            if (first.starts_with("-") && first.size() > 1 && !std::isdigit(static_cast<unsigned char>(first[1]))) {
                std::vector<std::string> names;
                for (const CLI::Option* option : (command ? command : &app)->get_options())
                    for (const auto& long_name : option->get_lnames()) names.push_back("--" + long_name);
                const std::string word = first.substr(0, first.find('='));
                // A file whose name starts with -, as a shell passes it: said how to give it.
                std::error_code ignored;
                if (std::filesystem::exists(first, ignored))
                    return fmt::format("{} has no option {}; to give the file of that name, write it {}", command_name, first,
                                       quoted_for_shell("./" + first));
                return fmt::format("{} has no option {}{}", command_name, word, closest_suggestion(word, names));
            }
            std::vector<std::string> positionals;
            for (const CLI::Option* option : (command ? command : &app)->get_options())
                if (option->get_positional()) positionals.push_back(option->get_name());
            return fmt::format("unexpected argument '{}'; {} takes {}", first, command_name,
                               positionals.empty() ? std::string("options only") : fmt::format("{} and options", fmt::join(positionals, ", ")));
        }
    }
    if (dynamic_cast<const CLI::ConversionError*>(&error)) {
        // Only a number out of the option's range gets here: check_values_in_plain_words refused every other.
        const auto [prefix, assignment] = name_and_rest(message, "Could not convert: ");
        const auto [name, value] = name_and_rest(assignment, " = ");
        const CLI::Option* option = name.empty() ? nullptr : (command ? command : &app)->get_option_no_throw(name);
        if (option && option->get_expected_max() == 0) return fmt::format("{} is a flag; give it without a value", name);
        if (option) return fmt::format("{} cannot take {}: it is out of range", name, value);
    }
    if (dynamic_cast<const CLI::ValidationError*>(&error)) {
        const auto [name, rest] = name_and_rest(message, ": ");
        // CLI11's Range says "Value 7 not in range 0 to 5".
        const std::regex range(R"(^Value (.*) not in range (.*) to (.*)$)");
        std::smatch match;
        if (std::regex_match(rest, match, range))
            return fmt::format("{} must be between {} and {}, not {}", name, match[2].str(), match[3].str(), match[1].str());
        // check_values_in_plain_words words its messages to follow the option's name.
        for (const char* verb : {"wants ", "must ", "cannot "})
            if (rest.starts_with(verb)) return fmt::format("{} {}", name, rest);
    }
    if (dynamic_cast<const CLI::ArgumentMismatch*>(&error)) {
        const auto [name, rest] = name_and_rest(message, ": ");
        if (rest.find("required") != std::string::npos && rest.ends_with("missing")) return fmt::format("{} needs a value", name);
        // An option given again (the options that take one value refuse a second, main.cpp): CLI11's
        // "At Most 1 required but received 2".
        const std::regex repeated(R"(^At Most 1 required but received (\d+)$)");
        std::smatch match;
        if (std::regex_match(rest, match, repeated)) {
            const std::string times = match[1].str() == "2" ? std::string("twice") : match[1].str() + " times";
            return fmt::format("{} was given {}; give it once", name, times);
        }
    }
    if (dynamic_cast<const CLI::ExcludesError*>(&error)) {
        const auto [first, second] = name_and_rest(message, " excludes ");
        if (!second.empty()) return fmt::format("give {} or {}, not both", first, second);
    }
    std::string plain = message;
    std::replace(plain.begin(), plain.end(), '\n', ' ');
    if (!plain.empty()) plain[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(plain[0])));
    return plain;
}

}  // namespace charlm::cli
