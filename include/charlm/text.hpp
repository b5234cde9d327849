// Text in, ids out: UTF-8 decoding, the code-point vocabulary and the train/validation split.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace charlm {

using TokenId = std::int32_t;

// Reads a whole file as UTF-8 and decodes it into code points.
// Throws Error naming the file for a missing, unreadable or empty file, or the byte offset of invalid UTF-8.
std::u32string read_text_file(const std::filesystem::path& path);

// Decodes UTF-8 bytes; `source_name` appears in the error for invalid input.
std::u32string decode_utf8(const std::string& bytes, const std::string& source_name);
std::string encode_utf8(const std::u32string& code_points);
std::string encode_utf8(char32_t code_point);

// The sorted set of distinct code points in a text; a code point's id is its rank.
class Vocab {
public:
    Vocab() = default;
    static Vocab from_text(const std::u32string& text);
    static Vocab from_code_points(std::vector<char32_t> code_points);  // validates: sorted, distinct

    std::size_t size() const { return code_points_.size(); }
    bool contains(char32_t code_point) const;
    TokenId id_of(char32_t code_point) const;  // throws Error for an unknown code point
    char32_t code_point_of(TokenId id) const { return code_points_.at(static_cast<std::size_t>(id)); }
    const std::vector<char32_t>& code_points() const { return code_points_; }

    std::vector<TokenId> encode(const std::u32string& text) const;  // throws Error on unknown code points
    std::u32string decode(const std::vector<TokenId>& ids) const;

    // Keeps the known code points and counts the others, for evaluating text the model never saw.
    std::vector<TokenId> encode_known(const std::u32string& text, std::size_t& unknown_count) const;

private:
    std::vector<char32_t> code_points_;
};

// The first part of the ids trains, the last `validation_fraction` validates.
struct Split {
    std::vector<TokenId> train;
    std::vector<TokenId> validation;
};
Split split_for_validation(const std::vector<TokenId>& ids, double validation_fraction);

// A printable description of a code point for error messages: 'x' (U+0078).
std::string describe_code_point(char32_t code_point);

}  // namespace charlm
