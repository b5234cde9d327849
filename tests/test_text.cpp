// Checks src/text: UTF-8 decoding, the code-point vocabulary, ids in memory and in files, file identity and the validation split.
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <optional>
#include <thread>

#include <gtest/gtest.h>

#include "charlm/atomic_file.hpp"
#include "charlm/display.hpp"
#include "charlm/error.hpp"
#include "charlm/file_identity.hpp"
#include "charlm/ids_file.hpp"
#include "charlm/tokens.hpp"
#include "charlm/utf8.hpp"
#include "charlm/vocab.hpp"
#include "test_helpers.hpp"
#include "text_helpers.hpp"

namespace charlm {
namespace {

TEST(Text, MultiByteTextRoundTripsThroughTheVocabulary) {
    // Polish, Chinese and Burmese: two-, three- and three-byte sequences with combining marks.
    const std::string original = "Zażółć gęślą jaźń. 你好，世界！ မင်္ဂလာပါ 🙂";
    const std::u32string text = decode_utf8(original, "test");
    EXPECT_EQ(text.size(), 37u);
    const Vocab vocab = testing::vocab_of_text(text);
    const std::vector<TokenId> ids = vocab.encode(text);
    EXPECT_EQ(encode_utf8(vocab.decode(ids)), original);
    EXPECT_TRUE(vocab.contains(U'你'));
    EXPECT_TRUE(vocab.contains(U'🙂'));
    EXPECT_FALSE(vocab.contains(U'x'));
}

TEST(Text, VocabularyIsSortedAndDistinct) {
    const Vocab vocab = testing::vocab_of_text(U"banana");
    EXPECT_EQ(vocab.code_points(), (std::vector<char32_t>{U'a', U'b', U'n'}));
    EXPECT_EQ(vocab.id_of(U'n'), 2);
    EXPECT_THROW(vocab.id_of(U'z'), Error);
    EXPECT_THROW(Vocab::from_code_points({U'a', U'a'}), Error);
    EXPECT_THROW(Vocab::from_code_points({U'b', U'a', U'c', U'b'}), Error);
    EXPECT_THROW(Vocab::from_code_points({0xD800}), Error);
}

TEST(Text, AnExtendedVocabularyKeepsItsIdsAndAppendsTheNewCharacters) {
    const Vocab trained = testing::vocab_of_text(U"banana");
    const Vocab extended = trained.extended_by(testing::vocab_of_text(U"año, bañera"));
    // a, b, n keep 0, 1 and 2; the new characters follow in code-point order.
    EXPECT_EQ(extended.code_points(), (std::vector<char32_t>{U'a', U'b', U'n', U' ', U',', U'e', U'o', U'r', U'ñ'}));
    EXPECT_EQ(extended.id_of(U'n'), 2);
    EXPECT_EQ(extended.id_of(U' '), 3);
    EXPECT_EQ(extended.id_of(U'ñ'), 8);
    EXPECT_TRUE(extended.contains(U'r'));
    EXPECT_FALSE(extended.contains(U'z'));
    EXPECT_EQ(extended.decode(extended.encode(U"bañera, año")), U"bañera, año");
    std::size_t unknown = 0;
    EXPECT_EQ(extended.encode_known(U"zña", unknown), (std::vector<TokenId>{8, 0}));
    EXPECT_EQ(unknown, 1u);
    EXPECT_EQ(trained.extended_by(testing::vocab_of_text(U"nab")).code_points(), trained.code_points()) << "nothing new";
    // The order is the ids': a checkpoint's list loads as it was saved, and extends again.
    const Vocab loaded = Vocab::from_code_points(extended.code_points());
    EXPECT_EQ(loaded.id_of(U'ñ'), 8);
    EXPECT_EQ(loaded.sha256(), extended.sha256());
    EXPECT_NE(loaded.sha256(), testing::vocab_of_text(U"banana, año ber").sha256()) << "the same characters in another order";
    EXPECT_EQ(loaded.extended_by(testing::vocab_of_text(U"!")).id_of(U'!'), 9);
}

TEST(Text, InvalidUtf8NamesTheByteOffset) {
    try {
        decode_utf8(std::string("abc\xff" "def", 7), "input.txt");
        FAIL() << "no error";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("input.txt"), std::string::npos);
        EXPECT_NE(std::string(error.what()).find("byte offset 3"), std::string::npos) << error.what();
    }
    EXPECT_THROW(decode_utf8("truncated \xe4\xbd", "x"), Error);
    EXPECT_THROW(decode_utf8("overlong \xc0\xaf", "x"), Error);
    EXPECT_THROW(decode_utf8("surrogate \xed\xa0\x80", "x"), Error);
}

TEST(Text, ByteOrderMarkIsSkipped) {
    EXPECT_EQ(decode_utf8("\xef\xbb\xbfhi", "x"), U"hi");
}

TEST(Text, ReadTextFileRefusesMissingEmptyAndDirectories) {
    testing::TemporaryDirectory directory;
    EXPECT_THROW(read_text_file(directory.path() / "missing.txt"), Error);
    EXPECT_THROW(read_text_file(directory.write("empty.txt", "")), Error);
    EXPECT_THROW(read_text_file(directory.path()), Error);
    EXPECT_EQ(read_text_file(directory.write("ok.txt", "héllo")), U"héllo");
}

TEST(Text, EncodeKnownDropsAndCountsUnknownCharacters) {
    const Vocab vocab = testing::vocab_of_text(U"abc");
    std::size_t unknown = 0;
    EXPECT_EQ(vocab.encode_known(U"axbyyc", unknown), (std::vector<TokenId>{0, 1, 2}));
    EXPECT_EQ(unknown, 3u);
}

TEST(Text, StreamedReadingMatchesWholeFileReadingAcrossPieceBoundaries) {
    // Over 2 MB of one- to four-byte characters at every alignment to the 1 MB pieces, after a BOM.
    testing::TemporaryDirectory directory;
    std::string bytes = "\xef\xbb\xbf";
    for (int i = 0; bytes.size() < (std::size_t{5} << 19); ++i) bytes += i % 7 == 0 ? "a\n" : "é你🙂x";
    const auto path = directory.write("big.txt", bytes);
    std::u32string streamed;
    int pieces = 0;
    for_each_text_piece(path, [&](std::u32string_view piece) {
        streamed += piece;
        ++pieces;
    });
    EXPECT_GE(pieces, 3);
    EXPECT_EQ(streamed, decode_utf8(bytes, "big.txt"));
    EXPECT_EQ(Vocab::from_files({path}).code_points(), testing::vocab_of_text(streamed).code_points());
}

TEST(Text, StreamedReadingNamesTheByteOffsetOfInvalidUtf8FarIntoTheFile) {
    testing::TemporaryDirectory directory;
    const std::size_t offset = (std::size_t{3} << 19) + 1;  // past the first piece
    std::string bytes(offset, 'a');
    bytes += "\xc3(";
    const auto path = directory.write("bad.txt", bytes);
    try {
        for_each_text_piece(path, [](std::u32string_view) {});
        FAIL() << "no error";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("byte offset " + std::to_string(offset)), std::string::npos) << error.what();
    }
    // A sequence cut off by the end of the file is invalid too.
    EXPECT_THROW(for_each_text_piece(directory.write("cut.txt", std::string(10, 'a') + "\xe4\xbd"), [](std::u32string_view) {}),
                 Error);
    EXPECT_THROW(for_each_text_piece(directory.write("empty.txt", ""), [](std::u32string_view) {}), Error);
}

TEST(Text, CompactIdsUseTheFewestBytesAndReadBackTheSameIds) {
    testing::TemporaryDirectory directory;
    std::u32string small_text = U"abcabca", large_text;
    for (char32_t c = 0x4E00; c < 0x4E00 + 300; ++c) large_text += c;  // 300 characters: two bytes each
    for (const std::u32string& text : {small_text, large_text}) {
        const auto path = directory.write("text.txt", encode_utf8(text));
        const Vocab vocab = Vocab::from_files({path});
        const CompactIds ids = CompactIds::encode_file(path, vocab);
        const std::vector<TokenId> expected = vocab.encode(text);
        EXPECT_EQ(testing::to_vector(ids.span()), expected);
        EXPECT_EQ(testing::to_vector(ids.span().subspan(2, 3)), std::vector<TokenId>(expected.begin() + 2, expected.begin() + 5));
    }
    // Encoding against a vocabulary that lacks a character names it.
    const auto path = directory.write("other.txt", "abcz");
    const Vocab vocab = testing::vocab_of_text(U"abc");
    try {
        CompactIds::encode_file(path, vocab);
        FAIL() << "no error";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("U+007A"), std::string::npos) << error.what();
    }
}

TEST(Text, CompactIdsCanLeaveUnknownCharactersOutAndCountThem) {
    // Unknown characters inside every megabyte piece, and one at the very end.
    testing::TemporaryDirectory directory;
    std::u32string text;
    while (text.size() < 3'000'000) text += U"abzcaé z";
    text += U"z";
    const auto path = directory.write("text.txt", encode_utf8(text));
    const Vocab vocab = testing::vocab_of_text(U"abc\u00e9 ");
    std::size_t unknown = 0;
    const CompactIds ids = CompactIds::encode_file(path, vocab, &unknown);
    std::size_t expected_unknown = 0;
    const std::vector<TokenId> expected = vocab.encode_known(text, expected_unknown);
    EXPECT_EQ(unknown, expected_unknown);
    EXPECT_EQ(unknown, static_cast<std::size_t>(std::count(text.begin(), text.end(), U'z')));
    EXPECT_EQ(testing::to_vector(ids.span()), expected);
}

TEST(Text, IdsFilesRoundTripAtEveryWidth) {
    testing::TemporaryDirectory directory;
    std::u32string one_byte = U"abcabca", two_bytes, four_bytes;
    for (char32_t c = 0x4E00; c < 0x4E00 + 300; ++c) two_bytes += c;        // 300 characters: two bytes each
    for (char32_t c = 0x10000; c < 0x10000 + 70'000; ++c) four_bytes += c;  // past 65536: four bytes each
    two_bytes += U"\u4E00\u4E01";
    four_bytes += U"\U00010000";
    int width = 1;
    for (const std::u32string& text : {one_byte, two_bytes, four_bytes}) {
        SCOPED_TRACE(width);
        const auto source = directory.write("text.txt", encode_utf8(text));
        const FileFingerprint fingerprint = fingerprint_file(source);
        const Vocab vocab = Vocab::from_files({source});
        const auto path = directory.path() / "text.ids";
        const std::vector<TokenId> expected = vocab.encode(text);
        {
            const MappedIds written = MappedIds::encode(path, source, fingerprint, vocab);
            EXPECT_EQ(testing::to_vector(written.span()), expected);
        }
        EXPECT_EQ(std::filesystem::file_size(path), 256 + text.size() * static_cast<std::size_t>(width));
        std::string why_not;
        const std::optional<MappedIds> opened = MappedIds::open(path, fingerprint, vocab, &why_not);
        ASSERT_TRUE(opened) << why_not;
        EXPECT_EQ(opened->size(), text.size());
        EXPECT_EQ(testing::to_vector(opened->span()), expected);
        EXPECT_EQ(testing::to_vector(opened->span().subspan(3, 4)), std::vector<TokenId>(expected.begin() + 3, expected.begin() + 7));
        width *= 2;
    }
}

TEST(Text, AnIdsFileIsOpenedOnlyForItsOwnTextAndVocabularyAndWhole) {
    testing::TemporaryDirectory directory;
    const std::string text(5000, 'a');
    const auto source = directory.write("text.txt", text + "bcd");
    const FileFingerprint fingerprint = fingerprint_file(source);
    const Vocab vocab = Vocab::from_files({source});
    const auto path = directory.path() / "text.ids";
    MappedIds::encode(path, source, fingerprint, vocab);
    const std::string good = testing::read_bytes(path);
    const auto refusal = [&](const std::string& bytes, const FileFingerprint& wanted, const Vocab& with) {
        directory.write("text.ids", bytes);
        std::string why_not;
        const std::optional<MappedIds> ids = MappedIds::open(path, wanted, with, &why_not);
        EXPECT_FALSE(ids) << "opened";
        EXPECT_FALSE(why_not.empty());
        return why_not;
    };
    EXPECT_TRUE(MappedIds::open(path, fingerprint, vocab));
    EXPECT_EQ(refusal(good, fingerprint_file(directory.write("other.txt", text + "bce")), vocab), "the ids of another text");
    EXPECT_EQ(refusal(good, fingerprint, testing::vocab_of_text(U"abcde")), "the ids of another vocabulary");
    EXPECT_NE(refusal(good.substr(0, good.size() - 1), fingerprint, vocab).find("bytes long"), std::string::npos);
    EXPECT_NE(refusal(good + "x", fingerprint, vocab).find("bytes long"), std::string::npos);
    EXPECT_NE(refusal(good.substr(0, 100), fingerprint, vocab).find("header"), std::string::npos);
    std::string corrupt = good;
    corrupt[256 + 1234] = 3;  // an id the vocabulary does not have
    EXPECT_NE(refusal(corrupt, fingerprint, vocab).find("checksum"), std::string::npos);
    corrupt = good;
    corrupt[0] = 'X';
    EXPECT_EQ(refusal(corrupt, fingerprint, vocab), "not an ids file");
    corrupt = good;
    corrupt[8] = 2;  // the format version
    EXPECT_NE(refusal(corrupt, fingerprint, vocab).find("format version 2"), std::string::npos);
    corrupt = good;
    corrupt[16] = 1;  // the count, against the length
    EXPECT_NE(refusal(corrupt, fingerprint, vocab).find("bytes long"), std::string::npos);
    std::filesystem::remove(path);
    std::string why_not;
    EXPECT_FALSE(MappedIds::open(path, fingerprint, vocab, &why_not));
    EXPECT_EQ(why_not, "not there");
}

TEST(Text, AnEncodingThatFailsLeavesNoFile) {
    testing::TemporaryDirectory directory;
    const auto source = directory.write("text.txt", std::string(3'000'000, 'a') + "z");  // fails after the first pieces
    const auto path = directory.path() / "run" / "text.ids";
    std::filesystem::create_directories(path.parent_path());
    EXPECT_THROW(MappedIds::encode(path, source, fingerprint_file(source), testing::vocab_of_text(U"ab")), Error);
    EXPECT_TRUE(std::filesystem::is_empty(path.parent_path()));
}

TEST(Text, TheMappingGoesWithItsIds) {
    testing::TemporaryDirectory directory;
    const auto source = directory.write("text.txt", "abcabc");
    const auto path = directory.path() / "text.ids";
    const Vocab vocab = Vocab::from_files({source});
    {
        MappedIds ids = MappedIds::encode(path, source, fingerprint_file(source), vocab);
        EXPECT_GE(testing::resident_bytes_of_mapping(path), 0);
        const MappedIds moved = std::move(ids);
        EXPECT_EQ(testing::to_vector(moved.span()), vocab.encode(U"abcabc"));
        EXPECT_EQ(ids.size(), 0u);
        EXPECT_GE(testing::resident_bytes_of_mapping(path), 0);
    }
    EXPECT_EQ(testing::resident_bytes_of_mapping(path), -1);
}

TEST(Text, ReleasingLetsTheReadPagesOfAMappingGoAndLeavesIdsInMemoryAlone) {
    testing::TemporaryDirectory directory;
    std::string text;
    while (text.size() < (std::size_t{8} << 20)) text += "abcdefgh";
    const auto source = directory.write("text.txt", text);
    const Vocab vocab = Vocab::from_files({source});
    const auto path = directory.path() / "text.ids";
    const MappedIds ids = MappedIds::encode(path, source, fingerprint_file(source), vocab);
    const TokenSpan span = ids.span();
    long sum = 0;
    for (std::size_t i = 0; i < span.size(); i += 1024) sum += span[i];
    EXPECT_GT(testing::resident_bytes_of_mapping(path), 7L << 20);
    span.release(0, span.size());
    EXPECT_LT(testing::resident_bytes_of_mapping(path), 64L << 10);
    long again = 0;
    for (std::size_t i = 0; i < span.size(); i += 1024) again += span[i];
    EXPECT_EQ(again, sum);  // read back from the file

    const CompactIds in_memory = CompactIds::encode_file(source, vocab);
    in_memory.span().release(0, in_memory.size());
    EXPECT_EQ(testing::to_vector(in_memory.span().subspan((std::size_t{8} << 20) - 8, 8)), vocab.encode(U"abcdefgh"));
}

TEST(Text, FingerprintIsTheSizeAndSha256OfTheBytes) {
    testing::TemporaryDirectory directory;
    const FileFingerprint abc = fingerprint_file(directory.write("abc.txt", "abc"));
    EXPECT_EQ(abc.size_bytes, 3u);
    EXPECT_EQ(abc.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");  // FIPS 180-2's example
    // Past one read's megabyte, and one byte changed far into the file.
    std::string big(3'000'001, 'x');
    const FileFingerprint first = fingerprint_file(directory.write("big.txt", big));
    EXPECT_EQ(first.size_bytes, big.size());
    big[2'500'000] = 'y';
    EXPECT_NE(fingerprint_file(directory.write("big.txt", big)), first);
    EXPECT_THROW(fingerprint_file(directory.path() / "missing.txt"), Error);
}

TEST(Text, OnlyWhatCannotBeReadTwiceIsCopied) {
    testing::TemporaryDirectory directory;
    EXPECT_FALSE(can_be_read_only_once(directory.write("plain.txt", "abc")));
    EXPECT_FALSE(can_be_read_only_once(directory.path() / "missing.txt"));  // reading it says what is wrong
    EXPECT_FALSE(can_be_read_only_once(directory.path()));
    EXPECT_TRUE(can_be_read_only_once("-"));
    EXPECT_TRUE(can_be_read_only_once("/dev/stdin"));
    EXPECT_TRUE(is_under_dev_or_proc("/dev/fd/63"));
    EXPECT_TRUE(is_under_dev_or_proc("/proc/self/fd/0"));
    EXPECT_FALSE(is_under_dev_or_proc("/devices.txt"));
    EXPECT_FALSE(is_under_dev_or_proc("dev/corpus.txt"));  // as written: relative paths are the caller's to resolve
    const auto fifo = directory.path() / "pipe";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    EXPECT_TRUE(can_be_read_only_once(fifo));
}

TEST(Text, ASpooledCopyAppearsWholeOnlyWhenCommitted) {
    testing::TemporaryDirectory directory;
    const auto fifo = directory.path() / "pipe";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    const std::string text(2'500'000, 'z');
    const auto target = directory.write("copy.txt", "the previous copy");
    {
        std::thread writer([&] { std::ofstream(fifo, std::ios::binary) << text; });
        AtomicFile copy(target);
        spool_to_file(fifo, copy);
        writer.join();
        EXPECT_EQ(testing::read_bytes(copy.temporary_path()), text);
        EXPECT_EQ(testing::read_bytes(target), "the previous copy");
    }  // not committed: the temporary goes, the target stays
    EXPECT_EQ(std::distance(std::filesystem::directory_iterator(directory.path()), std::filesystem::directory_iterator{}), 2);
    EXPECT_EQ(testing::read_bytes(target), "the previous copy");
    std::thread writer([&] { std::ofstream(fifo, std::ios::binary) << text; });
    AtomicFile copy(target);
    spool_to_file(fifo, copy);
    writer.join();
    copy.commit();
    EXPECT_EQ(testing::read_bytes(target), text);
}

TEST(Text, CodePointsInMessagesAreShownReadably) {
    EXPECT_EQ(describe_code_point(U'x'), "'x' (U+0078)");
    EXPECT_EQ(describe_code_point(U'\n'), "'\\n' (U+000A)");
    EXPECT_EQ(describe_code_point(U'\x01'), "U+0001");   // never a '?' that hides which character it is
    EXPECT_EQ(describe_code_point(U'\u0301'), "U+0301");  // a combining mark would fuse with the quote
}

// The first part of the ids trains, the last `validation_fraction` (validation_size) validates.
struct Split {
    std::vector<TokenId> train;
    std::vector<TokenId> validation;
};
Split split_for_validation(const std::vector<TokenId>& ids, double validation_fraction) {
    const auto held_out = static_cast<std::ptrdiff_t>(validation_size(ids.size(), validation_fraction));
    Split split;
    split.train.assign(ids.begin(), ids.end() - held_out);
    split.validation.assign(ids.end() - held_out, ids.end());
    return split;
}

TEST(Text, SplitHoldsOutTheEnd) {
    std::vector<TokenId> ids(100);
    for (int i = 0; i < 100; ++i) ids[static_cast<std::size_t>(i)] = i;
    const Split split = split_for_validation(ids, 0.1);
    ASSERT_EQ(split.train.size(), 90u);
    ASSERT_EQ(split.validation.size(), 10u);
    EXPECT_EQ(split.validation.front(), 90);
    EXPECT_THROW(split_for_validation(ids, 1.0), Error);
    EXPECT_THROW(split_for_validation(ids, -0.1), Error);
}

}  // namespace
}  // namespace charlm
