// The score report: a scored text as the JSON that the page's score view reads (/v1/score's answer) and
// as one HTML file that shows it with no server (charlm eval --html). No HTTP here.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "charlm/score.hpp"

namespace charlm {

// The page (src/report/page.html, built in): what charlm serve answers GET / with, and the body of a report.
std::string_view serve_page();

// A float as the output carries it: the shortest decimal that reads back as the same float; null for
// NaN and the infinities, which JSON has not.
nlohmann::ordered_json json_float(float value);
// JSON text as the API and the report write it: a string that is not UTF-8 gets U+FFFD, never an exception.
std::string json_text(const nlohmann::ordered_json& value);

// A score as /v1/score answers it (docs/serve.md).
nlohmann::ordered_json score_to_json(const ScoreResult& result, const std::u32string& text);

// The page in report mode: the score's JSON built in, plus {"report": {file, characters_total,
// characters_rendered, whole_file}}, so that the file shows the scored view with no server (charlm
// eval --html); `whole_file` is charlm eval's figures for all of the file.
std::string score_report_html(nlohmann::ordered_json score, const std::string& file_name, std::size_t characters_total,
                              const nlohmann::ordered_json& whole_file = nullptr);

}  // namespace charlm
