// Checks terminal.cpp: when the log is coloured, and how characters are shown for a person to read.
#include <gtest/gtest.h>

#include "charlm/terminal.hpp"

namespace charlm {
namespace {

// https://no-color.org: set and not empty turns colour off, whatever the terminal; empty is as unset.
TEST(Terminal, NoColorAndAPipeTurnTheLogsColourOff) {
    EXPECT_EQ(log_color_mode(nullptr, true), spdlog::color_mode::automatic);
    EXPECT_EQ(log_color_mode("", true), spdlog::color_mode::automatic);
    EXPECT_EQ(log_color_mode("1", true), spdlog::color_mode::never);
    EXPECT_EQ(log_color_mode("0", true), spdlog::color_mode::never) << "any value counts, even 0";
    EXPECT_EQ(log_color_mode(nullptr, false), spdlog::color_mode::never);
    EXPECT_EQ(log_color_mode("1", false), spdlog::color_mode::never);
}

TEST(Terminal, ControlCharactersAreEscapedNeverAQuestionMark) {
    EXPECT_EQ(displayable(U'\n'), "\\n");
    EXPECT_EQ(displayable(U'\t'), "\\t");
    EXPECT_EQ(displayable(U'\r'), "\\r");
    EXPECT_EQ(displayable(U'\0'), "\\0");
    EXPECT_EQ(displayable(U'\\'), "\\\\") << "a backslash escaped, or 'n' after it would read as a newline";
    EXPECT_EQ(displayable(char32_t{0x01}), "U+0001");
    EXPECT_EQ(displayable(char32_t{0x1B}), "U+001B") << "an escape character would drive the terminal";
    EXPECT_EQ(displayable(char32_t{0x7F}), "U+007F");
    EXPECT_EQ(displayable(char32_t{0x85}), "U+0085");
    EXPECT_EQ(displayable(char32_t{0x110000}), "U+110000");
}

TEST(Terminal, MarksFormatCharactersAndOddSpacesAreShownByNumber) {
    EXPECT_EQ(displayable(char32_t{0x0301}), "U+0301");    // combining acute accent
    EXPECT_EQ(displayable(char32_t{0x05B0}), "U+05B0");    // Hebrew point sheva
    EXPECT_EQ(displayable(char32_t{0x20DD}), "U+20DD");    // combining enclosing circle
    EXPECT_EQ(displayable(char32_t{0x202E}), "U+202E");    // right-to-left override
    EXPECT_EQ(displayable(char32_t{0x200D}), "U+200D");    // zero-width joiner
    EXPECT_EQ(displayable(char32_t{0xFEFF}), "U+FEFF");    // byte order mark
    EXPECT_EQ(displayable(char32_t{0x00A0}), "U+00A0");    // no-break space, which looks like a space
    EXPECT_EQ(displayable(char32_t{0x2028}), "U+2028");    // line separator
    EXPECT_EQ(displayable(char32_t{0xE000}), "U+E000");    // private use
}

TEST(Terminal, PrintableCharactersAreThemselves) {
    EXPECT_EQ(displayable(U'a'), "a");
    EXPECT_EQ(displayable(U' '), " ");
    EXPECT_EQ(displayable(U'é'), "é");
    EXPECT_EQ(displayable(U'日'), "日");
    EXPECT_EQ(displayable(U'→'), "→");
    EXPECT_EQ(displayable(char32_t{0x0915}), "\u0915");  // Devanagari ka
    EXPECT_EQ(displayable(char32_t{0x1F600}), "\U0001F600");
}

TEST(Terminal, TextIsShownCharacterByCharacterAndBadBytesAsHex) {
    EXPECT_EQ(displayable(std::string_view("caf\xc3\xa9 \xe2\x86\x92 x")), "café → x");
    EXPECT_EQ(displayable(std::string_view("e\xcc\x81")), "eU+0301");
    EXPECT_EQ(displayable(std::string_view("a\nb\x1b[31mc")), "a\\nbU+001B[31mc");
    EXPECT_EQ(displayable(std::string_view("bad\xff\xc3")), "bad\\xFF\\xC3");
    EXPECT_EQ(displayable(std::string_view("")), "");
}

}  // namespace
}  // namespace charlm
