// libFuzzer target: bytes -> UTF-8 decode -> vocabulary -> ids -> code points -> UTF-8 must give the bytes back.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "charlm/error.hpp"
#include "charlm/text.hpp"
#include "../text_helpers.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string bytes(reinterpret_cast<const char*>(data), size);
    std::u32string code_points;
    try {
        code_points = charlm::decode_utf8(bytes, "fuzz");
    } catch (const charlm::Error&) {
        return 0;  // invalid UTF-8 is refused with a message naming the offset
    }
    const charlm::Vocab vocab = charlm::testing::vocab_of_text(code_points);
    std::u32string decoded;
    try {
        decoded = vocab.decode(vocab.encode(code_points));
        // The vocabulary of a text must be acceptable to the loader's validation, too.
        charlm::Vocab::from_code_points(vocab.code_points());
    } catch (const charlm::Error&) {
        std::abort();  // every code point of the text is in its own vocabulary, and it is sorted and valid
    }
    if (decoded != code_points) std::abort();
    const bool has_bom = bytes.size() >= 3 && bytes.compare(0, 3, "\xEF\xBB\xBF") == 0;
    if (charlm::encode_utf8(decoded) != bytes.substr(has_bom ? 3 : 0)) std::abort();
    return 0;
}
