// UTF-8 decoding with utfcpp, the code-point vocabulary, ids files and their mappings, and the validation split.
#include "charlm/text.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <utility>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <openssl/evp.h>
#include <utf8.h>

#include "charlm/atomic_file.hpp"
#include "charlm/error.hpp"
#include "charlm/display.hpp"

namespace charlm {

// Opens a text file for reading, or throws Error saying what is wrong with the path.
static std::ifstream open_text_file(const std::filesystem::path& path) {
    std::error_code error;
    if (!std::filesystem::exists(path, error))
        throw Error(fmt::format("{}: no such file; check the path", path.string()));
    if (std::filesystem::is_directory(path, error))
        throw Error(fmt::format("{}: is a directory; give a text file", path.string()));
    std::ifstream file(path, std::ios::binary);
    if (!file) throw Error(fmt::format("{}: cannot open for reading; check its permissions", path.string()));
    return file;
}

static Error invalid_utf8(const std::string& source_name, std::size_t offset, unsigned char byte) {
    return Error(fmt::format("{}: invalid UTF-8 at byte offset {} (byte 0x{:02x}); give UTF-8 text", source_name, offset, byte));
}

namespace {

// SHA-256 through OpenSSL, fed a piece at a time.
class Sha256 {
public:
    Sha256() : context_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
        if (!context_ || EVP_DigestInit_ex(context_.get(), EVP_sha256(), nullptr) != 1) throw Error("SHA-256 is not available");
    }
    void add(const void* data, std::size_t size) { EVP_DigestUpdate(context_.get(), data, size); }
    std::string hex() {  // 64 lowercase hex digits
        unsigned char digest[EVP_MAX_MD_SIZE];
        unsigned int length = 0;
        EVP_DigestFinal_ex(context_.get(), digest, &length);
        std::string text;
        for (unsigned int i = 0; i < length; ++i) text += fmt::format("{:02x}", digest[i]);
        return text;
    }

private:
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> context_;
};

}  // namespace

std::u32string read_text_file(const std::filesystem::path& path) {
    std::u32string text;
    for_each_text_piece(path, [&](std::u32string_view piece) { text += piece; });
    return text;
}

void for_each_text_piece(const std::filesystem::path& path, const std::function<void(std::u32string_view)>& visit) {
    std::ifstream file = open_text_file(path);
    constexpr std::size_t kPieceBytes = std::size_t{1} << 20;
    std::string bytes;         // the unread tail of the last piece (an unfinished sequence), then the new piece
    std::u32string decoded;
    std::size_t offset = 0;    // of bytes[0] in the file
    bool first = true, any = false;
    while (true) {
        const std::size_t kept = bytes.size();
        bytes.resize(kept + kPieceBytes);
        file.read(bytes.data() + kept, static_cast<std::streamsize>(kPieceBytes));
        bytes.resize(kept + static_cast<std::size_t>(file.gcount()));
        if (file.bad()) throw Error(fmt::format("{}: read failed", path.string()));
        const bool at_end = file.eof();
        any = any || !bytes.empty();
        auto begin = bytes.begin();
        if (first && utf8::starts_with_bom(begin, bytes.end())) begin += 3;
        first = false;
        // A sequence cut by the piece's end waits for the next piece (at the file's end it is invalid).
        auto end = bytes.end();
        if (!at_end) {
            for (int back = 1; back <= 3 && end - begin >= back; ++back) {
                const auto lead = static_cast<unsigned char>(*(bytes.end() - back));
                if ((lead & 0xC0) == 0x80) continue;  // a continuation byte: look further back
                const int length = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
                if (length > back) end = bytes.end() - back;
                break;
            }
        }
        auto invalid = utf8::find_invalid(begin, end);
        if (invalid != end)
            throw invalid_utf8(path.string(), offset + static_cast<std::size_t>(invalid - bytes.begin()), static_cast<unsigned char>(*invalid));
        decoded.clear();
        utf8::unchecked::utf8to32(begin, end, std::back_inserter(decoded));
        if (!decoded.empty()) visit(decoded);
        if (at_end) break;
        offset += static_cast<std::size_t>(end - bytes.begin());
        bytes.erase(bytes.begin(), end);
    }
    if (!any) throw Error(fmt::format("{}: the file is empty; give a UTF-8 text", path.string()));
}

FileFingerprint fingerprint_file(const std::filesystem::path& path) {
    std::ifstream file = open_text_file(path);
    Sha256 sha256;
    FileFingerprint fingerprint;
    std::string buffer(std::size_t{1} << 20, '\0');
    while (file) {
        file.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
        const auto count = static_cast<std::size_t>(file.gcount());
        sha256.add(buffer.data(), count);
        fingerprint.size_bytes += count;
    }
    if (file.bad()) throw Error(fmt::format("{}: read failed", path.string()));
    fingerprint.sha256 = sha256.hex();
    return fingerprint;
}

bool can_be_read_only_once(const std::filesystem::path& path) {
    if (path == "-") return true;
    struct stat status {};
    if (::stat(path.c_str(), &status) != 0 || S_ISDIR(status.st_mode)) return false;  // the reader says what is wrong
    // /dev/stdin and /dev/fd/N name whatever the process was handed, which the next process is not:
    // a regular file behind one is copied all the same, so that a resume finds it.
    const std::string absolute = std::filesystem::absolute(path).lexically_normal().string();
    return !S_ISREG(status.st_mode) || absolute.starts_with("/dev/") || absolute.starts_with("/proc/");
}

void spool_to_file(const std::filesystem::path& source, AtomicFile& out) {
    std::ifstream file;
    std::istream* in = &std::cin;
    if (source != "-") {
        file = open_text_file(source);
        in = &file;
    }
    std::string buffer(std::size_t{1} << 20, '\0');
    while (*in) {
        in->read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
        out.write(std::string_view(buffer.data(), static_cast<std::size_t>(in->gcount())));
    }
    if (in->bad()) throw Error(fmt::format("{}: read failed", source == "-" ? std::string("standard input") : source.string()));
}

std::u32string decode_utf8(const std::string& bytes, const std::string& source_name) {
    auto begin = bytes.begin();
    if (utf8::starts_with_bom(begin, bytes.end())) begin += 3;
    auto invalid = utf8::find_invalid(begin, bytes.end());
    if (invalid != bytes.end())
        throw invalid_utf8(source_name, static_cast<std::size_t>(invalid - bytes.begin()), static_cast<unsigned char>(*invalid));
    std::u32string code_points;
    code_points.reserve(static_cast<std::size_t>(bytes.end() - begin));
    utf8::unchecked::utf8to32(begin, bytes.end(), std::back_inserter(code_points));
    return code_points;
}

std::string encode_utf8(const std::u32string& code_points) {
    std::string bytes;
    bytes.reserve(code_points.size());
    utf8::unchecked::utf32to8(code_points.begin(), code_points.end(), std::back_inserter(bytes));
    return bytes;
}

std::string encode_utf8(char32_t code_point) { return encode_utf8(std::u32string(1, code_point)); }

std::string describe_code_point(char32_t code_point) {
    const std::string shown = displayable(code_point);
    if (shown.starts_with("U+")) return shown;  // a control or an invisible mark: its number says it all
    return fmt::format("'{}' (U+{:04X})", shown, static_cast<std::uint32_t>(code_point));
}

namespace {

// Which code points a text holds: the vocabulary in the making, sorted by construction. The table
// grows only as far as the largest code point seen, so that a short ASCII text costs 128 bits.
class CodePointSet {
public:
    void add(std::u32string_view text) {
        for (char32_t c : text) {
            if (c >= seen_.size()) seen_.resize(c + 1, false);
            seen_[c] = true;
        }
    }
    std::vector<char32_t> sorted() const {
        std::vector<char32_t> code_points;
        for (char32_t c = 0; c < seen_.size(); ++c)
            if (seen_[c]) code_points.push_back(c);
        return code_points;
    }

private:
    std::vector<bool> seen_;
};

}  // namespace

Vocab Vocab::from_text(const std::u32string& text) {
    CodePointSet set;
    set.add(text);
    Vocab vocab;
    vocab.code_points_ = set.sorted();
    vocab.index();
    return vocab;
}

Vocab Vocab::from_files(const std::vector<std::filesystem::path>& paths, std::vector<std::size_t>* character_counts) {
    CodePointSet set;
    if (character_counts) character_counts->assign(paths.size(), 0);
    for (std::size_t i = 0; i < paths.size(); ++i)
        for_each_text_piece(paths[i], [&](std::u32string_view piece) {
            set.add(piece);
            if (character_counts) (*character_counts)[i] += piece.size();
        });
    Vocab vocab;
    vocab.code_points_ = set.sorted();
    vocab.index();
    return vocab;
}

Vocab Vocab::from_code_points(std::vector<char32_t> code_points) {
    for (std::size_t i = 0; i < code_points.size(); ++i)
        if (code_points[i] > 0x10FFFF || (code_points[i] >= 0xD800 && code_points[i] <= 0xDFFF))
            throw Error(fmt::format("vocabulary entry {} is not a Unicode scalar value", i));
    Vocab vocab;
    vocab.code_points_ = std::move(code_points);
    vocab.index();
    for (std::size_t i = 1; i < vocab.by_code_point_.size(); ++i)
        if (vocab.by_code_point_[i].first == vocab.by_code_point_[i - 1].first)
            throw Error(fmt::format("vocabulary holds {} twice", describe_code_point(vocab.by_code_point_[i].first)));
    return vocab;
}

Vocab Vocab::extended_by(const Vocab& other) const {
    Vocab vocab = *this;
    for (char32_t c : other.code_points_)  // other's, in code-point order where it is a text's
        if (!contains(c)) vocab.code_points_.push_back(c);
    std::sort(vocab.code_points_.begin() + static_cast<std::ptrdiff_t>(size()), vocab.code_points_.end());
    vocab.index();
    return vocab;
}

void Vocab::index() {
    by_code_point_.clear();
    by_code_point_.reserve(code_points_.size());
    for (std::size_t id = 0; id < code_points_.size(); ++id) by_code_point_.emplace_back(code_points_[id], static_cast<TokenId>(id));
    std::sort(by_code_point_.begin(), by_code_point_.end());
}

TokenId Vocab::find(char32_t code_point) const {
    auto found = std::lower_bound(by_code_point_.begin(), by_code_point_.end(), std::pair<char32_t, TokenId>(code_point, 0));
    return found != by_code_point_.end() && found->first == code_point ? found->second : -1;
}

bool Vocab::contains(char32_t code_point) const {
    return find(code_point) >= 0;
}

TokenId Vocab::id_of(char32_t code_point) const {
    const TokenId id = find(code_point);
    if (id < 0) throw Error(fmt::format("character {} is not in the model's vocabulary", describe_code_point(code_point)));
    return id;
}

std::vector<TokenId> Vocab::encode(const std::u32string& text) const {
    std::vector<TokenId> ids;
    ids.reserve(text.size());
    for (char32_t c : text) ids.push_back(id_of(c));
    return ids;
}

std::u32string Vocab::decode(const std::vector<TokenId>& ids) const {
    std::u32string text;
    text.reserve(ids.size());
    for (TokenId id : ids) text.push_back(code_point_of(id));
    return text;
}

std::string Vocab::sha256() const {
    Sha256 sha256;
    for (char32_t c : code_points_) {
        const auto value = static_cast<std::uint32_t>(c);
        const unsigned char bytes[4] = {static_cast<unsigned char>(value), static_cast<unsigned char>(value >> 8),
                                        static_cast<unsigned char>(value >> 16), static_cast<unsigned char>(value >> 24)};
        sha256.add(bytes, sizeof bytes);
    }
    return sha256.hex();
}

std::vector<TokenId> Vocab::encode_known(const std::u32string& text, std::size_t& unknown_count) const {
    std::vector<TokenId> ids;
    ids.reserve(text.size());
    unknown_count = 0;
    for (char32_t c : text) {
        const TokenId id = find(c);
        if (id >= 0) ids.push_back(id);
        else ++unknown_count;
    }
    return ids;
}

std::vector<TokenId> TokenSpan::to_vector() const {
    std::vector<TokenId> ids(size_);
    for (std::size_t i = 0; i < size_; ++i) ids[i] = (*this)[i];
    return ids;
}

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

Split split_for_validation(const std::vector<TokenId>& ids, double validation_fraction) {
    const auto held_out = static_cast<std::ptrdiff_t>(validation_size(ids.size(), validation_fraction));
    Split split;
    split.train.assign(ids.begin(), ids.end() - held_out);
    split.validation.assign(ids.end() - held_out, ids.end());
    return split;
}

}  // namespace charlm
