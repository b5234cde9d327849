// A corpus's token ids stored compactly: in memory (CompactIds), in a mapped ids file (MappedIds, IdsHeader), and how many of them validate.
#include "charlm/ids_file.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <functional>
#include <string_view>
#include <utility>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include "charlm/atomic_file.hpp"
#include "charlm/error.hpp"
#include "charlm/utf8.hpp"
#include "text/sha256.hpp"

namespace charlm {

void TokenSpan::release(std::size_t first, std::size_t count) const {
    if (!mapped_ || first >= size_) return;
    count = std::min(count, size_ - first);
    static const auto page_bytes = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
    const auto page_of = [&](std::size_t index) {
        return (reinterpret_cast<std::uintptr_t>(data_) + index * static_cast<std::size_t>(width_)) / page_bytes * page_bytes;
    };
    // A mapping starts on a page and its ids after the header, so the first page is the mapping's own. Its
    // pages are the file's, read-only: dropped, they are read again, never lost.
    const std::uintptr_t begin = page_of(first), end = page_of(first + count);
    if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

namespace {

int id_width(std::size_t vocab_size) { return vocab_size <= 256 ? 1 : vocab_size <= 65536 ? 2 : 4; }

// Encodes a file, streamed, `width` bytes an id, and hands each piece's ids to `write`. A character
// outside the vocabulary throws Error naming it, or, given `unknown_count`, is left out and counted there.
void encode_file_ids(const std::filesystem::path& path, const Vocab& vocab, int width, std::size_t* unknown_count,
                     const std::function<void(std::string_view)>& write) {
    // A table from code point to id: constant time per character over a gigabyte.
    std::vector<TokenId> id_of(0x110000, -1);
    for (std::size_t id = 0; id < vocab.size(); ++id) id_of[vocab.code_point_of(static_cast<TokenId>(id))] = static_cast<TokenId>(id);
    std::string bytes;
    for_each_text_piece(path, [&](std::u32string_view piece) {
        bytes.resize(piece.size() * static_cast<std::size_t>(width));
        char* out = bytes.data();
        for (char32_t c : piece) {
            const TokenId id = id_of[c];
            if (id < 0) {
                if (!unknown_count) vocab.id_of(c);  // throws, naming the character
                else ++*unknown_count;
                continue;
            }
            std::memcpy(out, &id, static_cast<std::size_t>(width));  // little-endian: the low bytes
            out += width;
        }
        write(std::string_view(bytes.data(), static_cast<std::size_t>(out - bytes.data())));  // less any left out
    });
}

}  // namespace

CompactIds::CompactIds(std::size_t vocab_size) : width_(id_width(vocab_size)) {}

CompactIds CompactIds::encode_file(const std::filesystem::path& path, const Vocab& vocab, std::size_t* unknown_count) {
    CompactIds ids(vocab.size());
    std::error_code error;
    const auto file_size = std::filesystem::file_size(path, error);
    if (!error) ids.bytes_.reserve(static_cast<std::size_t>(file_size) * static_cast<std::size_t>(ids.width_));  // chars <= bytes
    encode_file_ids(path, vocab, ids.width_, unknown_count,
                    [&](std::string_view piece) { ids.bytes_.insert(ids.bytes_.end(), piece.begin(), piece.end()); });
    return ids;
}

namespace {

constexpr std::size_t kIdsHeaderBytes = 256;
constexpr std::string_view kIdsMagic = "CHARLMID";
constexpr std::uint32_t kIdsFormatVersion = 1;

// An ids file's header (see MappedIds): fixed fields, then the three hashes in hex.
struct IdsHeader {
    std::uint32_t version = kIdsFormatVersion;
    std::uint32_t width = 0;
    std::uint64_t count = 0, source_size = 0, vocab_size = 0;
    std::string source_sha256, vocab_sha256, ids_sha256;

    std::string to_bytes() const {
        std::string bytes(kIdsHeaderBytes, '\0');
        bytes.replace(0, kIdsMagic.size(), kIdsMagic);
        std::size_t at = kIdsMagic.size();
        const auto put = [&](const auto& value) {  // little-endian, as the ids
            std::memcpy(bytes.data() + at, &value, sizeof value);
            at += sizeof value;
        };
        put(version);
        put(width);
        put(count);
        put(source_size);
        put(vocab_size);
        for (const std::string* hash : {&source_sha256, &vocab_sha256, &ids_sha256}) {
            std::memcpy(bytes.data() + at, hash->data(), std::min<std::size_t>(hash->size(), 64));
            at += 64;
        }
        return bytes;
    }
    // Nothing where the bytes are not an ids file's header at all.
    static std::optional<IdsHeader> from_bytes(std::string_view bytes) {
        if (bytes.size() < kIdsHeaderBytes || !bytes.starts_with(kIdsMagic)) return std::nullopt;
        IdsHeader header;
        std::size_t at = kIdsMagic.size();
        const auto get = [&](auto& value) {
            std::memcpy(&value, bytes.data() + at, sizeof value);
            at += sizeof value;
        };
        get(header.version);
        get(header.width);
        get(header.count);
        get(header.source_size);
        get(header.vocab_size);
        for (std::string* hash : {&header.source_sha256, &header.vocab_sha256, &header.ids_sha256}) {
            *hash = std::string(bytes.substr(at, 64));
            at += 64;
        }
        return header;
    }
};

struct FileCloser {
    int fd;
    ~FileCloser() { ::close(fd); }
};

// Reads `size` bytes at `offset`, or fewer where the file ends first.
std::size_t read_at(int fd, char* data, std::size_t size, std::uint64_t offset) {
    std::size_t done = 0;
    while (done < size) {
        const ssize_t count = ::pread(fd, data + done, size - done, static_cast<off_t>(offset + done));
        if (count < 0 && errno == EINTR) continue;
        if (count <= 0) break;
        done += static_cast<std::size_t>(count);
    }
    return done;
}

}  // namespace

MappedIds MappedIds::encode(const std::filesystem::path& destination, const std::filesystem::path& source,
                            const FileFingerprint& source_fingerprint, const Vocab& vocab) {
    IdsHeader header;
    header.width = static_cast<std::uint32_t>(id_width(vocab.size()));
    header.source_size = source_fingerprint.size_bytes;
    header.source_sha256 = source_fingerprint.sha256;
    header.vocab_size = vocab.size();
    header.vocab_sha256 = vocab.sha256();
    {
        AtomicFile file(destination);
        file.write(std::string(kIdsHeaderBytes, '\0'));  // the header goes there once the count and checksum are known
        Sha256 ids_sha256;
        encode_file_ids(source, vocab, static_cast<int>(header.width), nullptr, [&](std::string_view ids) {
            file.write(ids);
            ids_sha256.add(ids.data(), ids.size());
            header.count += ids.size() / header.width;
        });
        header.ids_sha256 = ids_sha256.hex();
        file.write_at(0, header.to_bytes());
        file.commit();
    }
    const int fd = ::open(destination.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw Error(fmt::format("{}: cannot open what was just written ({})", destination.string(), std::strerror(errno)));
    const FileCloser closer{fd};
    return map(destination, fd, kIdsHeaderBytes + header.count * header.width, header.count, static_cast<int>(header.width));
}

MappedIds MappedIds::encode_unnamed(const std::filesystem::path& source, const Vocab& vocab, std::size_t& unknown_count,
                                    const std::filesystem::path& folder) {
    const auto cannot_write = [&](int error) {
        return Error(fmt::format("cannot write the ids of {} in {} ({}), which evaluation maps to keep its memory small; set TMPDIR "
                                 "to a folder with room for a byte or two per character",
                                 source.string(), folder.string(), std::strerror(error)));
    };
    // O_TMPFILE: a file with no name from the start. Where the file system has none, a named one, unlinked at once.
    int fd = ::open(folder.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
        std::string name = (folder / "charlm-ids-XXXXXX").string();
        fd = ::mkostemp(name.data(), O_CLOEXEC);
        if (fd >= 0) ::unlink(name.c_str());
    }
    if (fd < 0) throw cannot_write(errno);
    const FileCloser closer{fd};
    const int width = id_width(vocab.size());
    std::uint64_t written = 0;
    const auto write_all = [&](std::string_view bytes) {
        for (std::size_t done = 0; done < bytes.size();) {
            const ssize_t count = ::write(fd, bytes.data() + done, bytes.size() - done);
            if (count < 0 && errno == EINTR) continue;
            if (count < 0) throw cannot_write(errno);
            done += static_cast<std::size_t>(count);
        }
        written += bytes.size();
    };
    write_all(std::string(kIdsHeaderBytes, '\0'));  // the layout of an ids file, so that span() reads it alike
    encode_file_ids(source, vocab, width, &unknown_count, write_all);
    const std::uint64_t count = (written - kIdsHeaderBytes) / static_cast<std::uint64_t>(width);
    return map(folder, fd, written, static_cast<std::size_t>(count), width);
}

MappedIds MappedIds::map(const std::filesystem::path& path, int fd, std::uint64_t file_bytes, std::size_t size, int width) {
    struct stat status {};
    if (::fstat(fd, &status) != 0 || static_cast<std::uint64_t>(status.st_size) != file_bytes)
        throw Error(fmt::format("{}: changed size while it was being opened; is another process writing it?", path.string()));
    void* mapping = ::mmap(nullptr, file_bytes, PROT_READ, MAP_SHARED, fd, 0);
    if (mapping == MAP_FAILED)
        throw Error(fmt::format("{}: cannot map it into memory ({}); a limit on address space (ulimit -v) must leave room for "
                                "the whole file",
                                path.string(), std::strerror(errno)));
    MappedIds ids;
    ids.mapping_ = mapping;
    ids.mapping_bytes_ = file_bytes;
    ids.size_ = size;
    ids.width_ = width;
    return ids;
}

std::optional<MappedIds> MappedIds::open(const std::filesystem::path& path, const FileFingerprint& source_fingerprint,
                                         const Vocab& vocab, std::string* why_not) {
    const auto refuse = [&](std::string reason) -> std::optional<MappedIds> {
        if (why_not) *why_not = std::move(reason);
        return std::nullopt;
    };
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return refuse(errno == ENOENT ? "not there" : fmt::format("cannot be opened ({})", std::strerror(errno)));
    const FileCloser closer{fd};
    struct stat status {};
    if (::fstat(fd, &status) != 0 || !S_ISREG(status.st_mode)) return refuse("not a regular file");
    const auto file_bytes = static_cast<std::uint64_t>(status.st_size);
    std::string bytes(kIdsHeaderBytes, '\0');
    if (read_at(fd, bytes.data(), bytes.size(), 0) < bytes.size()) return refuse("shorter than an ids file's header");
    const std::optional<IdsHeader> header = IdsHeader::from_bytes(bytes);
    if (!header) return refuse("not an ids file");
    if (header->version != kIdsFormatVersion)
        return refuse(fmt::format("format version {}, where this charlm writes version {}", header->version, kIdsFormatVersion));
    if (header->source_size != source_fingerprint.size_bytes || header->source_sha256 != source_fingerprint.sha256)
        return refuse("the ids of another text");
    if (header->vocab_size != vocab.size() || header->vocab_sha256 != vocab.sha256()) return refuse("the ids of another vocabulary");
    const auto width = static_cast<std::uint32_t>(id_width(vocab.size()));
    if (header->width != width) return refuse(fmt::format("ids of {} bytes, where its vocabulary takes {}", header->width, width));
    // The length, checked before a byte is mapped: a short file would fault where its ids are missing.
    const std::uint64_t id_bytes = file_bytes - kIdsHeaderBytes;
    if (id_bytes % width != 0 || id_bytes / width != header->count)
        return refuse(fmt::format("{} bytes long, where its header's {} ids take {}", file_bytes, header->count,
                                  kIdsHeaderBytes + header->count * width));
    // Read, not mapped, to check: the pages stay in the page cache, out of this process's memory.
    Sha256 ids_sha256;
    std::string buffer(std::size_t{1} << 20, '\0');
    for (std::uint64_t offset = kIdsHeaderBytes; offset < file_bytes;) {
        const auto wanted = static_cast<std::size_t>(std::min<std::uint64_t>(buffer.size(), file_bytes - offset));
        const std::size_t count = read_at(fd, buffer.data(), wanted, offset);
        if (count == 0) return refuse("unreadable part way");
        ids_sha256.add(buffer.data(), count);
        offset += count;
    }
    if (ids_sha256.hex() != header->ids_sha256) return refuse("corrupt: its ids do not match their checksum");
    return map(path, fd, file_bytes, header->count, static_cast<int>(width));
}

MappedIds::MappedIds(MappedIds&& other) noexcept { *this = std::move(other); }

MappedIds& MappedIds::operator=(MappedIds&& other) noexcept {
    if (this != &other) {
        if (mapping_) ::munmap(mapping_, mapping_bytes_);
        mapping_ = std::exchange(other.mapping_, nullptr);
        mapping_bytes_ = std::exchange(other.mapping_bytes_, 0);
        size_ = std::exchange(other.size_, 0);
        width_ = other.width_;
    }
    return *this;
}

MappedIds::~MappedIds() {
    if (mapping_) ::munmap(mapping_, mapping_bytes_);
}

TokenSpan MappedIds::span() const {
    if (!mapping_) return {};
    return {static_cast<const char*>(mapping_) + kIdsHeaderBytes, size_, width_, true};
}

std::size_t validation_size(std::size_t count, double validation_fraction) {
    if (!(validation_fraction >= 0.0 && validation_fraction < 1.0))
        throw Error("validation fraction must be in [0, 1)");
    return static_cast<std::size_t>(std::llround(validation_fraction * static_cast<double>(count)));
}

}  // namespace charlm
