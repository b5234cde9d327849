// The score report: a ScoreResult as JSON, and the built-in page with that JSON inside (see report.hpp).
#include "charlm/report.hpp"

#include <cmath>

#include <fmt/format.h>

#include "charlm/error.hpp"

namespace charlm {

using json = nlohmann::ordered_json;

std::string_view serve_page() {
    static constexpr std::string_view page =
#include "charlm_page.inc"
        ;
    return page;
}

json json_float(float value) {
    if (!std::isfinite(value)) return nullptr;
    return std::stod(fmt::format("{}", value));
}

std::string json_text(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

json score_to_json(const ScoreResult& result, const std::u32string& text) {
    json characters = json::array(), losses = json::array(), tops = json::array();
    for (std::size_t i = 0; i < text.size(); ++i) {
        characters.push_back(encode_utf8(text[i]));
        losses.push_back(json_float(result.losses[i]));
        if (result.top[i].empty() && i == 0) {
            tops.push_back(nullptr);
            continue;
        }
        json top = json::array();
        for (const CharacterLogprob& p : result.top[i]) top.push_back({encode_utf8(p.character), json_float(std::exp(p.logprob))});
        tops.push_back(std::move(top));
    }
    json neurons = json::array();
    for (const NeuronTrace& trace : result.neurons) {
        json activations = json::array();
        for (float a : trace.activations) activations.push_back(json_float(a));
        neurons.push_back({{"layer", trace.neuron.layer}, {"unit", trace.neuron.unit}, {"state", trace.neuron.cell ? "cell" : "hidden"},
                           {"activations", std::move(activations)}});
    }
    json most_varying = json::array();
    for (const NeuronSpread& spread : result.most_varying)
        most_varying.push_back({{"layer", spread.neuron.layer}, {"unit", spread.neuron.unit},
                                {"state", spread.neuron.cell ? "cell" : "hidden"}, {"std", json_float(static_cast<float>(spread.standard_deviation))}});
    const double nats = result.loss.mean();
    return {{"characters", text.size()}, {"characters_scored", result.loss.count}, {"nats_per_character", nats},
            {"perplexity", perplexity_of(nats)}, {"bits_per_character", bits_per_character_of(nats)},
            {"text", std::move(characters)}, {"loss", std::move(losses)}, {"top", std::move(tops)},
            {"neurons", std::move(neurons)}, {"most_varying", std::move(most_varying)}};
}

std::string score_report_html(json score, const std::string& file_name, std::size_t characters_total, const json& whole_file) {
    const std::size_t rendered = score["characters"].get<std::size_t>();
    score["report"] = {{"file", file_name}, {"characters_total", characters_total}, {"characters_rendered", rendered},
                       {"whole_file", whole_file}};
    // In a <script> element nothing may read as "</script>": every '<' goes as \u003c, which JSON.parse reads back.
    std::string data;
    for (char c : json_text(score)) {
        if (c == '<') data += "\\u003c";
        else data += c;
    }
    const std::string placeholder = R"(<script id="charlm-report" type="application/json">null</script>)";
    std::string page(serve_page());
    const std::size_t at = page.find(placeholder);
    if (at == std::string::npos) throw Error("the built-in page has no place for a report");
    page.replace(at, placeholder.size(), R"(<script id="charlm-report" type="application/json">)" + data + "</script>");
    return page;
}

}  // namespace charlm
