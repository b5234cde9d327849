// Text in, ids out: UTF-8 decoding, the code-point vocabulary and the train/validation split.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace charlm {

class AtomicFile;

using TokenId = std::int32_t;

// Reads a whole file as UTF-8 and decodes it into code points.
// Throws Error naming the file for a missing, unreadable or empty file, or the byte offset of invalid UTF-8.
std::u32string read_text_file(const std::filesystem::path& path);

// Reads a UTF-8 file a megabyte at a time and hands each decoded piece to `visit` (a byte order mark
// left out), so that memory does not grow with the file. Throws Error as read_text_file() does.
void for_each_text_piece(const std::filesystem::path& path, const std::function<void(std::u32string_view)>& visit);

// A file's size and SHA-256: what a resumed run checks to know that its corpus is the one it started on.
struct FileFingerprint {
    std::uint64_t size_bytes = 0;
    std::string sha256;  // 64 lowercase hex digits
    bool operator==(const FileFingerprint&) const = default;
};
// Reads the file once, streamed. Throws Error naming the file where it cannot be read.
FileFingerprint fingerprint_file(const std::filesystem::path& path);

// True for standard input ("-") and for a path that cannot be read twice from the start, now and by
// a later process: a pipe, a FIFO, anything under /dev or /proc (/dev/stdin, a process substitution's
// /dev/fd/63). Training copies these first (spool_to_file). False for a regular file, and for a path
// that is missing or a directory, which reading then refuses with the reason.
bool can_be_read_only_once(const std::filesystem::path& path);
// Copies `source` ("-" for standard input) into `destination`, which the caller commits once it has
// checked the text (through destination.temporary_path()). Throws Error naming what failed.
void spool_to_file(const std::filesystem::path& source, AtomicFile& destination);

// A read-only view of token ids stored 1, 2 or 4 bytes each (see CompactIds). A std::vector<TokenId>
// converts to one implicitly.
class TokenSpan {
public:
    TokenSpan() = default;
    TokenSpan(std::span<const TokenId> ids) : data_(ids.data()), size_(ids.size()), width_(sizeof(TokenId)) {}
    TokenSpan(const std::vector<TokenId>& ids) : TokenSpan(std::span<const TokenId>(ids)) {}
    TokenSpan(const void* data, std::size_t size, int width) : data_(data), size_(size), width_(width) {}

    std::size_t size() const { return size_; }
    TokenId operator[](std::size_t index) const {
        switch (width_) {
            case 1: return static_cast<const std::uint8_t*>(data_)[index];
            case 2: return static_cast<const std::uint16_t*>(data_)[index];
            default: return static_cast<const TokenId*>(data_)[index];
        }
    }
    TokenSpan subspan(std::size_t first, std::size_t count) const {
        return {static_cast<const char*>(data_) + first * static_cast<std::size_t>(width_), count, width_};
    }
    std::vector<TokenId> to_vector() const;

private:
    const void* data_ = nullptr;
    std::size_t size_ = 0;
    int width_ = sizeof(TokenId);
};

// Decodes UTF-8 bytes; `source_name` appears in the error for invalid input.
std::u32string decode_utf8(const std::string& bytes, const std::string& source_name);
std::string encode_utf8(const std::u32string& code_points);
std::string encode_utf8(char32_t code_point);

// The sorted set of distinct code points in a text; a code point's id is its rank.
class Vocab {
public:
    Vocab() = default;
    static Vocab from_text(const std::u32string& text);
    static Vocab from_files(const std::vector<std::filesystem::path>& paths);  // streams them; see for_each_text_piece
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

// Token ids in as few bytes each as the vocabulary needs: 1 for up to 256 characters, 2 for up to
// 65536, else 4. A corpus of 1 GB of English text takes 1 GB of ids, not 4.
class CompactIds {
public:
    explicit CompactIds(std::size_t vocab_size = 1);
    // Encodes a file, streamed. A character outside the vocabulary throws Error naming it, or, given
    // `unknown_count`, is left out and counted there (evaluating text the model never saw).
    static CompactIds encode_file(const std::filesystem::path& path, const Vocab& vocab, std::size_t* unknown_count = nullptr);

    std::size_t size() const { return bytes_.size() / static_cast<std::size_t>(width_); }
    TokenSpan span() const { return {bytes_.data(), size(), width_}; }

private:
    int width_;
    std::vector<std::uint8_t> bytes_;
};

// How many of `count` ids the last `validation_fraction` holds; throws Error outside [0, 1).
std::size_t validation_size(std::size_t count, double validation_fraction);

// The first part of the ids trains, the last `validation_fraction` validates.
struct Split {
    std::vector<TokenId> train;
    std::vector<TokenId> validation;
};
Split split_for_validation(const std::vector<TokenId>& ids, double validation_fraction);

// A printable description of a code point for error messages: 'x' (U+0078), '\n' (U+000A), or just U+0301 for a
// control or invisible mark (see displayable()).
std::string describe_code_point(char32_t code_point);

}  // namespace charlm
