// CLI11's parse errors in charlm's words: what a value should be, and where to read more. Not the commands' own checks.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>

namespace charlm::cli {

// Whole numbers in decimal only. CLI11 alone reads "010" as octal 8 and "0x10" as 16, wraps "-1" into
// 2^64 - 1 for an unsigned option, and saturates a number past 2^63 - 1 without a word; this check runs
// first, within the 64 bits CLI11 converts through, and hands CLI11 the number in plain decimal.
// Narrower options (int) are range-checked by CLI11 itself: see plain_parse_error's ConversionError.
// Returns what is wrong, worded to follow the option's name, or nothing.
std::string check_whole_number(std::string& value, bool may_be_negative);
std::string check_number(const std::string& value);

// Gives every option of `app` and its commands a check of its value's kind (from the type name CLI11
// gave it: INT, UINT, FLOAT), ahead of CLI11's own conversion, and replaces the messages of CLI11's
// NonNegativeNumber and PositiveNumber, which spell out their upper bound, DBL_MAX, in 309 digits.
// Call it once every option is declared.
void check_values_in_plain_words(CLI::App& app);

// Edit distance, for "did you mean": a typo of one or two letters is far more likely than a new word.
std::size_t edit_distance(std::string_view a, std::string_view b);
// " (did you mean CANDIDATE?)" for the candidate within a typo's distance of `word`, or nothing.
std::string closest_suggestion(const std::string& word, const std::vector<std::string>& candidates);

// One line for a parse error: what is wrong in words a user knows, without CLI11's type names.
// `command` is the subcommand given, or null.
std::string plain_parse_error(const CLI::ParseError& error, CLI::App& app, CLI::App* command);

}  // namespace charlm::cli
