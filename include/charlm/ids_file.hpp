// A corpus's token ids stored compactly, in memory (CompactIds) or in a mapped file (MappedIds), and how many validate.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "charlm/file_identity.hpp"
#include "charlm/tokens.hpp"
#include "charlm/vocab.hpp"

namespace charlm {

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

    // Encodes `source`, streamed, into a file of no name in `folder` (removed from the start: nothing is
    // left behind, however the process ends), and maps it: evaluation of a text larger than memory. A
    // character outside the vocabulary is left out and counted in `unknown_count`. Throws Error naming
    // the folder where it cannot be written (full, read-only), with what to do.
    static MappedIds encode_unnamed(const std::filesystem::path& source, const Vocab& vocab, std::size_t& unknown_count,
                                    const std::filesystem::path& folder);

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

}  // namespace charlm
