// Text in, ids out: UTF-8 decoding, the code-point vocabulary, ids in memory or in a mapped file, and the validation split.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
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
    TokenSpan(const void* data, std::size_t size, int width, bool mapped = false)
        : data_(data), size_(size), width_(width), mapped_(mapped) {}

    std::size_t size() const { return size_; }
    TokenId operator[](std::size_t index) const {
        switch (width_) {
            case 1: return static_cast<const std::uint8_t*>(data_)[index];
            case 2: return static_cast<const std::uint16_t*>(data_)[index];
            default: return static_cast<const TokenId*>(data_)[index];
        }
    }
    TokenSpan subspan(std::size_t first, std::size_t count) const {
        return {static_cast<const char*>(data_) + first * static_cast<std::size_t>(width_), count, width_, mapped_};
    }
    std::vector<TokenId> to_vector() const;
    // Where the ids are a file's mapping (MappedIds), lets the pages behind ids [first, first + count)
    // leave the process's resident memory, all but the page of the id after them, which is read next:
    // read again, they come back from the page cache or the disk. Ids in memory stay as they are.
    void release(std::size_t first, std::size_t count) const;

private:
    const void* data_ = nullptr;
    std::size_t size_ = 0;
    int width_ = sizeof(TokenId);
    bool mapped_ = false;
};

// Decodes UTF-8 bytes; `source_name` appears in the error for invalid input.
std::u32string decode_utf8(const std::string& bytes, const std::string& source_name);
std::string encode_utf8(const std::u32string& code_points);
std::string encode_utf8(char32_t code_point);

// The distinct code points of a text, each with its id: its place in the list. A text's vocabulary is
// sorted (a code point's id is its rank); one extended for fine-tuning (extended_by) keeps the ids it
// had and gives the new characters the next ones.
class Vocab {
public:
    Vocab() = default;
    static Vocab from_text(const std::u32string& text);
    // Streams them (see for_each_text_piece); `character_counts`, given, gets each file's count of characters.
    static Vocab from_files(const std::vector<std::filesystem::path>& paths, std::vector<std::size_t>* character_counts = nullptr);
    static Vocab from_code_points(std::vector<char32_t> code_points);  // in id order; validates: Unicode scalars, distinct
    // This vocabulary's code points at their ids, then those of `other` that it lacks, in code-point
    // order: a model trained further on a new text (--init-from) keeps every id it knew.
    Vocab extended_by(const Vocab& other) const;

    std::size_t size() const { return code_points_.size(); }
    bool contains(char32_t code_point) const;
    TokenId id_of(char32_t code_point) const;  // throws Error for an unknown code point
    char32_t code_point_of(TokenId id) const { return code_points_.at(static_cast<std::size_t>(id)); }
    const std::vector<char32_t>& code_points() const { return code_points_; }

    std::vector<TokenId> encode(const std::u32string& text) const;  // throws Error on unknown code points
    std::u32string decode(const std::vector<TokenId>& ids) const;
    // SHA-256 of the code points (4 bytes each, little-endian), in 64 hex digits: the vocabulary's identity.
    std::string sha256() const;

    // Keeps the known code points and counts the others, for evaluating text the model never saw.
    std::vector<TokenId> encode_known(const std::u32string& text, std::size_t& unknown_count) const;

private:
    void index();                          // builds by_code_point_ from code_points_
    TokenId find(char32_t code_point) const;  // its id, or -1 where it is not here

    std::vector<char32_t> code_points_;                       // in id order
    std::vector<std::pair<char32_t, TokenId>> by_code_point_;  // the same, sorted by code point, for lookups
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

// Token ids in a file, mapped read-only, so that a corpus larger than memory trains: the pages that the
// windows read come and go (TokenSpan::release), the rest stay on disk. The file is a 256-byte header,
// then the ids, `width` bytes each as in CompactIds, little-endian. The header: "CHARLMID", u32 format
// version (1), u32 id width, u64 id count, u64 source size, u64 vocabulary size, then 64 hex digits
// each of the SHA-256 of the source, of the vocabulary (Vocab::sha256) and of the ids, then zeros.
class MappedIds {
public:
    // Encodes `source`, streamed, into `destination` (atomically: an encoding that fails leaves no
    // file), recording `source_fingerprint` and `vocab` as what it holds, and maps it. A character
    // outside the vocabulary throws Error naming it.
    static MappedIds encode(const std::filesystem::path& destination, const std::filesystem::path& source,
                            const FileFingerprint& source_fingerprint, const Vocab& vocab);
    // Maps `path` where it holds the ids of the source with `source_fingerprint` under `vocab`: its
    // header says so, its length is the header's count of ids, and the ids match their checksum.
    // Otherwise (missing, short, corrupt, another text's) returns nothing and, given `why_not`, says why there.
    static std::optional<MappedIds> open(const std::filesystem::path& path, const FileFingerprint& source_fingerprint,
                                         const Vocab& vocab, std::string* why_not = nullptr);

    MappedIds() = default;
    MappedIds(MappedIds&& other) noexcept;
    MappedIds& operator=(MappedIds&& other) noexcept;
    ~MappedIds();  // unmaps

    std::size_t size() const { return size_; }
    TokenSpan span() const;

private:
    static MappedIds map(const std::filesystem::path& path, int fd, std::uint64_t file_bytes, std::size_t size, int width);

    void* mapping_ = nullptr;
    std::size_t mapping_bytes_ = 0;
    std::size_t size_ = 0;
    int width_ = 1;
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
