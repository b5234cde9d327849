// What /metrics tells the people who run the server, in Prometheus' text exposition format: requests
// by route and status, characters generated and scored and the load by model, and times as histograms.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "charlm/decode.hpp"

namespace charlm {

class ServerMetrics {
public:
    ServerMetrics();
    // The route as a label: the API's own paths, and "other" for the rest (a label per path a client
    // invents would grow without bound).
    static std::string_view route_label(std::string_view path);

    void count_request(std::string_view path, int status, double seconds);
    // By the model's name (a request's model, as /v1/models lists it).
    void count_generated(const std::string& model, std::size_t characters);
    void count_scored(const std::string& model, std::size_t characters);
    void observe_first_character(double seconds);
    void connection_opened();
    void connection_closed();
    int open_connections() const;

    // The exposition; `loads` are the decoders' of the models loaded so far, by name, in their order.
    // Each of them has every per-model series, at 0 until it counts something.
    std::string exposition(const std::vector<std::pair<std::string, DecoderLoad>>& loads) const;

private:
    struct Histogram {
        std::vector<double> bounds;
        std::vector<std::uint64_t> counts;  // per bucket, not cumulative; one more for +Inf
        double sum = 0;
        std::uint64_t count = 0;
        void observe(double value);
    };
    mutable std::mutex mutex_;
    std::map<std::pair<std::string, int>, std::uint64_t> requests_;
    std::map<std::string, std::uint64_t> generated_;  // by model
    std::map<std::string, std::uint64_t> scored_;
    int open_connections_ = 0;
    Histogram first_character_;
    Histogram request_duration_;
};

}  // namespace charlm
