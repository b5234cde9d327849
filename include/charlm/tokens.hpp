// Token ids and a read-only view of them, whatever bytes each takes: what every module past the text sees of it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace charlm {

using TokenId = std::int32_t;

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

}  // namespace charlm
