// Load test and serving benchmark for 'charlm serve': N clients ask for completions at once for S seconds,
// check every answer against docs/serve.md, and report throughput, time to first character and server memory.
//
// Each client is a thread with one keep-alive connection. It loops: POST /v1/completions with "stream": true,
// max_tokens, temperature 1 and a seed no other request uses, reads the server-sent events as they arrive and
// checks each one (a JSON event whose choices[0].text is a string, the last with finish_reason "length" after
// exactly max_tokens characters, then "data: [DONE]"). --non-streaming asks with "stream": false instead and
// checks the one JSON answer the same way: comparing the two at the same client count measures what the
// event framing costs (an event per character, each a JSON object in an HTTP chunk).
//
// Time: --warmup-seconds first (connections open, the server's threads and slots come to life), then the
// measured --seconds. At the end, by default, the requests in flight are cut: the client disconnects, the
// characters received before the end count, the request counts as cut (neither completed nor an error),
// and every client has worked exactly --seconds. That also exercises the server's path for a client that
// goes away mid-stream. --finish lets the requests in flight finish instead; then only requests started in
// the measured time count, in full, and each client's rate is over its own span from the start of its first
// to the end of its last, so that a request is never counted in part (fair to --non-streaming, whose
// characters all arrive at the end).
//
// Errors: any status but 200, a connection error, a malformed event or answer, a wrong character count, a
// stream without its [DONE]; each is counted and the first few are printed on stderr. --rss-pid PID samples
// the server's VmRSS every 0.5 s from the end of the warm-up, so that a test can say memory stays flat, and
// its CPU time, so that a benchmark can say how many cores the server used; the client reports its own too,
// since on one machine whatever it takes the server does not get.
// --check-slots-freed (with --rss-pid) asks /health at the end whether every slot is idle again: the cut streams'
// slots must be freed by the disconnect, not by running to max_tokens, which the server's CPU time tells apart.
// --idle-connections N holds N more connections open all along, half of them silent and half of them having sent
// half a request: what a careless or hostile client does. One the server drops (its --timeout) is opened again at
// once, so that N stay open; the clients' figures then say what those connections cost the others.
// Only a server on this machine is ever loaded: 127.0.0.1, localhost or ::1.
//
// Usage: charlm_serve_load --url http://127.0.0.1:PORT --clients N --seconds S [--warmup-seconds 1]
//        [--max-tokens 400] [--prompt TEXT] [--non-streaming] [--finish] [--rss-pid PID] [--json]
//        [--min-requests-per-client N] [--max-rss-growth-mib M] [--check-slots-freed] [--idle-connections N]
// Exit status: 0 all went well, 1 an error occurred or a --min-/--max- check failed, 2 a usage error.
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <netdb.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

struct Options {
    std::string url;
    std::string host;
    int port = 80;
    int clients = 1;
    double seconds = 5;
    double warmup_seconds = 1;
    long max_tokens = 400;
    std::string prompt;
    std::string model;  // "" leaves "model" out: the server's only model
    bool streaming = true;
    bool finish_in_flight = false;
    long rss_pid = 0;
    bool json = false;
    double ready_seconds = 30;    // how long /health may answer 503 (model loading) before we give up
    double timeout_seconds = 30;  // a read that waits longer than this is a server that stalled
    long min_requests_per_client = 0;
    double max_rss_growth_mib = -1;  // negative: not checked
    bool check_slots_freed = false;
    int idle_connections = 0;
};

[[noreturn]] void usage_error(const std::string &message) {
    std::fprintf(stderr, "charlm_serve_load: %s; see charlm_serve_load --help\n", message.c_str());
    std::exit(2);
}

constexpr const char *help_text =
    "Load test and serving benchmark for 'charlm serve': N clients ask for completions at once.\n"
    "Usage: charlm_serve_load --url http://127.0.0.1:PORT --clients N --seconds S [options]\n"
    "  --url URL                  the server, as 'charlm serve' prints it; only 127.0.0.1, localhost or ::1\n"
    "  --clients N                concurrent clients, each a thread with its own connection\n"
    "  --seconds S                measured time\n"
    "  --warmup-seconds W         load before the measured time, not counted (default 1)\n"
    "  --max-tokens N             characters each request asks for (default 400)\n"
    "  --prompt TEXT              prompt of every request (default empty)\n"
    "  --model NAME               the model every request names (default none: a server of one model)\n"
    "  --non-streaming            ask with \"stream\": false, to compare against the event stream's cost\n"
    "  --finish                   let the requests in flight at the end finish (default: cut them)\n"
    "  --rss-pid PID              sample this process's VmRSS every 0.5 s, and its CPU time (the server's)\n"
    "  --min-requests-per-client N   fail unless every client completed at least N requests\n"
    "  --max-rss-growth-mib M     fail when VmRSS at the end is more than M MiB above its value after warm-up\n"
    "  --check-slots-freed        at the end, fail unless /health shows every slot idle before the server spent a hundredth of\n"
    "                             the CPU time finishing the cut streams would take (needs --rss-pid; no other client may run)\n"
    "  --timeout-seconds T        a read that waits longer is an error (default 30)\n"
    "  --ready-seconds R          how long /health may answer 503 or refuse before the load starts (default 30)\n"
    "  --idle-connections N       hold N more connections open meanwhile, half silent, half with half a request sent\n"
    "  --json                     print one JSON object instead of the report\n"
    "Exit status: 0 all went well, 1 an error occurred or a check failed, 2 a usage error.\n";

double parse_number(const std::string &name, const std::string &text, double minimum) {
    try {
        std::size_t used = 0;
        const double value = std::stod(text, &used);
        if (used == text.size() && std::isfinite(value) && value >= minimum) return value;
    } catch (const std::exception &) {
    }
    char minimum_text[32];
    std::snprintf(minimum_text, sizeof minimum_text, "%g", minimum);
    usage_error(name + " takes a number of at least " + minimum_text + ", not '" + text + "'");
}

long parse_whole(const std::string &name, const std::string &text, long minimum) {
    const double value = parse_number(name, text, static_cast<double>(minimum));
    if (value != std::floor(value) || value > 1e15) usage_error(name + " takes a whole number, not '" + text + "'");
    return static_cast<long>(value);
}

// Splits http://HOST[:PORT][/] and refuses any host but this machine's loopback: a load test aimed at
// someone else's server by a typo would be an attack on it.
void parse_url(Options &options) {
    const std::string prefix = "http://";
    if (options.url.rfind(prefix, 0) != 0)
        usage_error("--url must start with http:// (the server speaks plain HTTP on loopback), not '" + options.url + "'");
    std::string rest = options.url.substr(prefix.size());
    if (!rest.empty() && rest.back() == '/') rest.pop_back();
    if (rest.find('/') != std::string::npos) usage_error("--url takes the server's root, without a path: '" + options.url + "'");
    std::string port_text;
    if (!rest.empty() && rest.front() == '[') {
        const auto close = rest.find(']');
        if (close == std::string::npos) usage_error("--url has an unclosed '[': '" + options.url + "'");
        options.host = rest.substr(1, close - 1);
        if (close + 1 < rest.size()) {
            if (rest[close + 1] != ':') usage_error("--url: expected ':' after ']' in '" + options.url + "'");
            port_text = rest.substr(close + 2);
        }
    } else {
        const auto colon = rest.find(':');
        options.host = rest.substr(0, colon);
        if (colon != std::string::npos) port_text = rest.substr(colon + 1);
    }
    if (options.host != "127.0.0.1" && options.host != "localhost" && options.host != "::1")
        usage_error("--url must name this machine (127.0.0.1, localhost or [::1]), not '" + options.host + "'");
    if (!port_text.empty()) {
        const long port = parse_whole("--url's port", port_text, 1);
        if (port > 65535) usage_error("--url's port must be at most 65535, not " + port_text);
        options.port = static_cast<int>(port);
    }
}

Options parse_options(int argc, char **argv) {
    Options options;
    bool have_url = false, have_clients = false, have_seconds = false;
    for (int i = 1; i < argc; ++i) {
        const std::string name = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) usage_error("missing value for " + name);
            return argv[++i];
        };
        if (name == "-h" || name == "--help") {
            std::fputs(help_text, stdout);
            std::exit(0);
        } else if (name == "--url") {
            options.url = value();
            have_url = true;
        } else if (name == "--clients") {
            options.clients = static_cast<int>(parse_whole(name, value(), 1));
            if (options.clients > 4096) usage_error("--clients takes at most 4096");
            have_clients = true;
        } else if (name == "--seconds") {
            options.seconds = parse_number(name, value(), 0.1);
            have_seconds = true;
        } else if (name == "--warmup-seconds") {
            options.warmup_seconds = parse_number(name, value(), 0);
        } else if (name == "--max-tokens") {
            options.max_tokens = parse_whole(name, value(), 1);
        } else if (name == "--prompt") {
            options.prompt = value();
        } else if (name == "--model") {
            options.model = value();
        } else if (name == "--non-streaming") {
            options.streaming = false;
        } else if (name == "--finish") {
            options.finish_in_flight = true;
        } else if (name == "--rss-pid") {
            options.rss_pid = parse_whole(name, value(), 1);
        } else if (name == "--json") {
            options.json = true;
        } else if (name == "--timeout-seconds") {
            options.timeout_seconds = parse_number(name, value(), 1);
        } else if (name == "--ready-seconds") {
            options.ready_seconds = parse_number(name, value(), 0);
        } else if (name == "--min-requests-per-client") {
            options.min_requests_per_client = parse_whole(name, value(), 0);
        } else if (name == "--idle-connections") {
            options.idle_connections = static_cast<int>(parse_whole(name, value(), 0));
        } else if (name == "--check-slots-freed") {
            options.check_slots_freed = true;
        } else if (name == "--max-rss-growth-mib") {
            options.max_rss_growth_mib = parse_number(name, value(), 0);
        } else {
            usage_error("unknown option " + name);
        }
    }
    if (!have_url || !have_clients || !have_seconds) usage_error("--url, --clients and --seconds are required");
    parse_url(options);
    if (options.max_rss_growth_mib >= 0 && options.rss_pid == 0) usage_error("--max-rss-growth-mib needs --rss-pid");
    if (options.check_slots_freed && options.rss_pid == 0) usage_error("--check-slots-freed needs --rss-pid (its CPU time)");
    return options;
}

// The process's resident memory in bytes, from /proc/PID/status; nothing when the process is gone.
std::optional<long> resident_bytes(long pid) {
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(status, line)) {
        if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6) * 1024L;
    }
    return std::nullopt;
}

// CPU seconds (user and system) the process has used so far, from /proc/PID/stat; nothing when it is gone.
std::optional<double> process_cpu_seconds(long pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string text;
    std::getline(stat, text);
    const auto name_end = text.rfind(')');  // the command name may hold spaces and parentheses
    if (name_end == std::string::npos || name_end + 2 > text.size()) return std::nullopt;
    std::istringstream fields(text.substr(name_end + 2));
    std::string skipped;
    for (int field = 3; field <= 13; ++field) fields >> skipped;  // state .. cmajflt; utime and stime are 14 and 15
    double user_ticks = 0, system_ticks = 0;
    if (!(fields >> user_ticks >> system_ticks)) return std::nullopt;
    return (user_ticks + system_ticks) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// This process's CPU seconds, all its threads: the load client's own share of a machine it shares with the server.
double own_cpu_seconds() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    auto seconds = [](const timeval &time) { return static_cast<double>(time.tv_sec) + 1e-6 * static_cast<double>(time.tv_usec); };
    return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

long count_code_points(const std::string &utf8) {
    return std::count_if(utf8.begin(), utf8.end(), [](char byte) { return (static_cast<unsigned char>(byte) & 0xC0) != 0x80; });
}

// Every error of every client: a count, and the first few messages to show.
class ErrorLog {
public:
    void add(int client, const std::string &message) {  // client -1: the server as a whole
        std::lock_guard<std::mutex> lock(mutex_);
        ++count_;
        if (messages_.size() < shown_) messages_.push_back(client < 0 ? message : "client " + std::to_string(client) + ": " + message);
    }
    long count() const { std::lock_guard<std::mutex> lock(mutex_); return count_; }
    std::vector<std::string> messages() const { std::lock_guard<std::mutex> lock(mutex_); return messages_; }

private:
    static constexpr std::size_t shown_ = 5;
    mutable std::mutex mutex_;
    long count_ = 0;
    std::vector<std::string> messages_;
};

// Reads a server-sent event stream as its bytes arrive, in whatever pieces TCP cuts them, and checks it
// against docs/serve.md: data lines only (comment lines, which start with ':', are allowed as keep-alives),
// each event a JSON completion chunk, nothing after finish_reason but [DONE], nothing after [DONE].
class EventStreamReader {
public:
    // on_text(code points) is called for each event that carries text.
    template <typename OnText>
    void feed(const char *data, std::size_t length, OnText &&on_text) {
        pending_.append(data, length);
        std::size_t line_start = 0;
        for (std::size_t end; (end = pending_.find('\n', line_start)) != std::string::npos; line_start = end + 1) {
            std::string_view line(pending_.data() + line_start, end - line_start);
            if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
            read_line(line, on_text);
        }
        pending_.erase(0, line_start);
    }

    // What was wrong with the stream once it ended, or "" when it was whole and well formed.
    std::string problem_at_end(long max_tokens) const {
        if (!problem_.empty()) return problem_;
        if (!done_) return "the stream ended without 'data: [DONE]' after " + std::to_string(characters_) + " characters";
        if (pending_.find_first_not_of("\r\n") != std::string::npos) return "bytes after the last line: '" + pending_.substr(0, 80) + "'";
        if (finish_reason_.empty()) return "no event had a finish_reason before [DONE]";
        if (finish_reason_ != "length") return "finish_reason '" + finish_reason_ + "' in a request without stop texts";
        if (characters_ != max_tokens)
            return "finish_reason 'length' after " + std::to_string(characters_) + " characters, but max_tokens was " + std::to_string(max_tokens);
        return "";
    }

    const std::string &problem() const { return problem_; }

private:
    template <typename OnText>
    void read_line(std::string_view line, OnText &on_text) {
        if (line.empty()) {
            if (has_data_) dispatch(on_text);
            return;
        }
        if (line.front() == ':') return;
        if (line.rfind("data:", 0) != 0) {
            note_problem("a line that is not 'data: ...': '" + std::string(line.substr(0, 80)) + "'");
            return;
        }
        line.remove_prefix(5);
        if (!line.empty() && line.front() == ' ') line.remove_prefix(1);
        if (has_data_) event_data_ += '\n';  // several data lines make one event, joined by line breaks
        event_data_.append(line);
        has_data_ = true;
    }

    template <typename OnText>
    void dispatch(OnText &on_text) {
        const std::string data = std::move(event_data_);
        event_data_.clear();
        has_data_ = false;
        if (done_) return note_problem("an event after [DONE]: '" + data.substr(0, 80) + "'");
        if (data == "[DONE]") {
            done_ = true;
            return;
        }
        const Json event = Json::parse(data, nullptr, false);
        if (event.is_discarded()) return note_problem("an event that is not JSON: '" + data.substr(0, 120) + "'");
        // The server ends a stream it cannot finish (it is stopping, the model failed) with an error event.
        if (event.is_object() && event.contains("error"))
            return note_problem("an error event: " + (event["error"].is_object() ? event["error"].value("message", data.substr(0, 200)) : data.substr(0, 200)));
        if (!event.contains("choices") || !event["choices"].is_array() || event["choices"].empty() ||
            !event["choices"][0].is_object() || !event["choices"][0].contains("text") || !event["choices"][0]["text"].is_string())
            return note_problem("an event without choices[0].text: '" + data.substr(0, 120) + "'");
        const Json &choice = event["choices"][0];
        if (!finish_reason_.empty()) return note_problem("an event after the one with finish_reason: '" + data.substr(0, 120) + "'");
        const long code_points = count_code_points(choice["text"].get_ref<const std::string &>());
        characters_ += code_points;
        if (code_points > 0) on_text(code_points);
        if (choice.contains("finish_reason") && !choice["finish_reason"].is_null()) {
            if (!choice["finish_reason"].is_string()) return note_problem("a finish_reason that is not a string: '" + data.substr(0, 120) + "'");
            finish_reason_ = choice["finish_reason"].get<std::string>();
        }
    }

    void note_problem(const std::string &problem) {
        if (problem_.empty()) problem_ = problem;
    }

    std::string pending_;     // bytes after the last line break
    std::string event_data_;  // data lines of the event being read
    bool has_data_ = false;
    bool done_ = false;
    long characters_ = 0;
    std::string finish_reason_;
    std::string problem_;
};

// What one client did in the measured time.
struct ClientTally {
    long requests_completed = 0;
    long requests_cut = 0;
    long characters = 0;
    double active_seconds = 0;  // the span its characters per second are over
    std::vector<double> first_character_seconds;
    std::vector<double> request_seconds;  // each counted request, from its start to its last byte
};

struct Schedule {
    Clock::time_point measure_start;
    Clock::time_point deadline;
};

double seconds_between(Clock::time_point from, Clock::time_point to) {
    return std::chrono::duration<double>(to - from).count();
}

// One client's loop: requests one after another on one connection until the deadline.
void run_client(int client_index, httplib::Client &client, const Options &options, const Schedule &schedule,
                const std::atomic<bool> &stopping, ErrorLog &errors, ClientTally &tally) {
    std::optional<Clock::time_point> first_counted_start, last_counted_end;
    for (std::uint64_t request_index = 0;; ++request_index) {
        const auto request_start = Clock::now();
        if (request_start >= schedule.deadline || stopping.load()) break;
        const bool counted_from_start = request_start >= schedule.measure_start;
        // Distinct for every request of every client, so that no two generate the same text.
        const std::uint64_t seed = (static_cast<std::uint64_t>(client_index) << 32) | request_index;
        Json body = {{"prompt", options.prompt}, {"max_tokens", options.max_tokens}, {"temperature", 1.0},
                     {"seed", seed}, {"stream", options.streaming}};
        if (!options.model.empty()) body["model"] = options.model;

        int status = -1;
        std::string content_type;
        std::string whole_body;  // the answer when it is not an event stream (errors, --non-streaming)
        EventStreamReader stream;
        long characters = 0;
        std::optional<Clock::time_point> first_character;
        bool cut = false;

        // Characters count where they fall: in cut mode by the time they arrive, in finish mode by the
        // time their request started.
        auto count_characters = [&](long code_points) {
            const auto now = Clock::now();
            if (!first_character) first_character = now;
            const bool counted = options.finish_in_flight ? counted_from_start : (now >= schedule.measure_start && now <= schedule.deadline);
            if (counted) characters += code_points;
        };

        httplib::Request request;
        request.method = "POST";
        request.path = "/v1/completions";
        request.body = body.dump();
        request.set_header("Content-Type", "application/json");
        if (options.streaming) request.set_header("Accept", "text/event-stream");
        request.response_handler = [&](const httplib::Response &response) {
            status = response.status;
            content_type = response.get_header_value("Content-Type");
            return true;
        };
        request.content_receiver = [&](const char *data, std::size_t length, std::uint64_t, std::uint64_t) {
            if (!options.finish_in_flight && Clock::now() >= schedule.deadline) {
                cut = true;
                return false;
            }
            if (status == 200 && options.streaming && content_type.rfind("text/event-stream", 0) == 0) {
                stream.feed(data, length, count_characters);
            } else if (whole_body.size() < (1u << 24)) {
                whole_body.append(data, length);
            }
            return true;
        };
        httplib::Response response;
        httplib::Error error = httplib::Error::Success;
        client.send(request, response, error);
        const auto request_end = Clock::now();

        // After an error, a pause: a server that is down or answering 503 should not meet a busy loop.
        auto fail = [&](const std::string &message) {
            errors.add(client_index, message);
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        };
        if (status != -1 && status != 200) {
            fail("HTTP " + std::to_string(status) + ": " + whole_body.substr(0, 200));
            continue;
        }
        if (error != httplib::Error::Success) {
            if (cut || (!options.finish_in_flight && request_end >= schedule.deadline)) {
                ++tally.requests_cut;
                tally.characters += characters;
                if (counted_from_start && first_character)  // long requests may all be cut, and still have a first character
                    tally.first_character_seconds.push_back(seconds_between(request_start, *first_character));
            } else if (stopping.load()) {
                fail("the request was still running --timeout-seconds after the end");
            } else {
                fail("connection error: " + httplib::to_string(error));
            }
            continue;
        }

        std::string problem;
        if (options.streaming) {
            if (content_type.rfind("text/event-stream", 0) != 0) {
                problem = "Content-Type '" + content_type + "' for a streamed completion, not text/event-stream";
            } else {
                problem = stream.problem_at_end(options.max_tokens);
            }
        } else {
            const Json answer = Json::parse(whole_body, nullptr, false);
            if (answer.is_discarded()) {
                problem = "an answer that is not JSON: '" + whole_body.substr(0, 120) + "'";
            } else if (!answer.contains("choices") || !answer["choices"].is_array() || answer["choices"].empty() ||
                       !answer["choices"][0].is_object() || !answer["choices"][0].contains("text") ||
                       !answer["choices"][0]["text"].is_string()) {
                problem = "an answer without choices[0].text: '" + whole_body.substr(0, 120) + "'";
            } else {
                const Json &choice = answer["choices"][0];
                const long code_points = count_code_points(choice["text"].get_ref<const std::string &>());
                const Json finish_reason = choice.value("finish_reason", Json());
                if (finish_reason != "length") {
                    problem = "finish_reason " + finish_reason.dump() + ", not \"length\", in a request without stop texts";
                } else if (code_points != options.max_tokens) {
                    problem = std::to_string(code_points) + " characters, but max_tokens was " + std::to_string(options.max_tokens);
                } else {
                    count_characters(code_points);
                }
            }
        }
        if (!problem.empty()) {
            fail(problem);
            continue;
        }

        const bool counted = options.finish_in_flight ? counted_from_start : request_end >= schedule.measure_start;
        if (!counted) continue;
        ++tally.requests_completed;
        tally.characters += characters;
        if (counted_from_start && first_character)
            tally.first_character_seconds.push_back(seconds_between(request_start, *first_character));
        if (counted_from_start) tally.request_seconds.push_back(seconds_between(request_start, request_end));
        if (counted_from_start) {
            if (!first_counted_start) first_counted_start = request_start;
            last_counted_end = request_end;
        }
    }
    if (options.finish_in_flight) {
        tally.active_seconds = first_counted_start ? seconds_between(*first_counted_start, *last_counted_end) : 0;
    } else {
        tally.active_seconds = seconds_between(schedule.measure_start, schedule.deadline);
    }
}

// Connections that cost the server a socket and nothing else, as long as it keeps them: half silent, half
// having sent half a request. A thread watches them and opens again at once each one the server closes.
class IdleConnections {
public:
    IdleConnections(const Options &options, int count) : options_(options), sockets_(static_cast<std::size_t>(count), -1) {
        for (std::size_t i = 0; i < sockets_.size(); ++i) open(i);
        watcher_ = std::thread([this] { watch(); });
    }
    ~IdleConnections() {
        stop_ = true;
        watcher_.join();
        for (const int socket : sockets_)
            if (socket >= 0) ::close(socket);
    }
    long reopened() const { return reopened_; }
    int open_now() const { return open_now_; }
    long failures() const { return failures_; }

private:
    void open(std::size_t i) {
        if (sockets_[i] >= 0) ::close(sockets_[i]);
        sockets_[i] = -1;
        addrinfo hints{};
        hints.ai_socktype = SOCK_STREAM;
        addrinfo *found = nullptr;
        if (::getaddrinfo(options_.host.c_str(), std::to_string(options_.port).c_str(), &hints, &found) != 0 || !found) {
            ++failures_;
            return;
        }
        const int socket = ::socket(found->ai_family, SOCK_STREAM, 0);
        if (socket >= 0 && ::connect(socket, found->ai_addr, found->ai_addrlen) == 0) {
            static const std::string half = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"prompt\":";
            if (i % 2 == 1) (void)::send(socket, half.data(), half.size(), MSG_NOSIGNAL);
            sockets_[i] = socket;
        } else {
            ++failures_;
            if (socket >= 0) ::close(socket);
        }
        ::freeaddrinfo(found);
    }
    void watch() {
        std::vector<pollfd> polled(sockets_.size());
        while (!stop_) {
            int open_now = 0;
            for (std::size_t i = 0; i < sockets_.size(); ++i) {
                polled[i] = {sockets_[i], POLLIN | POLLRDHUP, 0};
                open_now += sockets_[i] >= 0;
            }
            open_now_ = open_now;
            ::poll(polled.data(), polled.size(), 50);
            for (std::size_t i = 0; i < sockets_.size() && !stop_; ++i) {
                if (sockets_[i] >= 0 && polled[i].revents == 0) continue;
                char dropped[512];
                if (sockets_[i] >= 0 && ::recv(sockets_[i], dropped, sizeof dropped, MSG_DONTWAIT) > 0) continue;  // an answer: read on
                if (sockets_[i] >= 0) ++reopened_;
                open(i);
            }
        }
    }
    const Options &options_;
    std::vector<int> sockets_;
    std::thread watcher_;
    std::atomic<bool> stop_{false};
    std::atomic<long> reopened_{0};
    std::atomic<long> failures_{0};
    std::atomic<int> open_now_{0};
};

// Waits for /health to answer 200: 503 means the model is still loading, and a refused connection that
// the server is not listening yet. Returns "" when ready, or why not.
std::string wait_until_ready(const Options &options) {
    httplib::Client client(options.host, options.port);
    client.set_connection_timeout(2);
    client.set_read_timeout(5);
    const auto give_up = Clock::now() + std::chrono::duration<double>(options.ready_seconds);
    std::string last;
    do {
        const auto result = client.Get("/health");
        if (result && result->status == 200) return "";
        if (result && result->status != 503) return "GET /health answered " + std::to_string(result->status) + ": " + result->body.substr(0, 200);
        last = result ? "503 " + result->body.substr(0, 200) : "connection error: " + httplib::to_string(result.error());
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    } while (Clock::now() < give_up);
    char waited[32];
    std::snprintf(waited, sizeof waited, "%g", options.ready_seconds);
    return std::string("GET /health did not answer 200 within ") + waited + " s; last: " + last;
}

// After every client has gone (cut streams included), /health must show no slot processing and nothing
// queued: docs/serve.md says a client that disconnects frees its slot before the next step. Slots that ran on
// to max_tokens would go idle too, in the end: what tells the two apart is the server's CPU time, not the
// clock. `cpu_left_to_finish` is what finishing the cut streams would cost the server, at the CPU per
// character it spent under this load. Freed by the disconnects, the slots are idle within a step or two,
// milliseconds of CPU; a server that ran them on without clients to write to might spend less per character
// than under load, but not a hundred times less, so a hundredth of that cost tells the two apart. Waits at
// most --timeout-seconds (a server that never frees them); returns the seconds it took, or nothing, why in
// `problem`.
std::optional<double> wait_until_slots_idle(const Options &options, double cpu_left_to_finish, std::string &problem) {
    httplib::Client client(options.host, options.port);
    client.set_connection_timeout(2);
    client.set_read_timeout(2);
    const auto start = Clock::now();
    const std::optional<double> server_cpu_at_start = process_cpu_seconds(options.rss_pid);
    if (!server_cpu_at_start) {
        problem = "the server process " + std::to_string(options.rss_pid) + " is gone";
        return std::nullopt;
    }
    do {
        const auto result = client.Get("/health");
        if (!result) {
            problem = "GET /health after the load: connection error: " + httplib::to_string(result.error());
        } else {
            const Json health = Json::parse(result->body, nullptr, false);
            const bool idle = result->status == 200 && health.is_object() && health.value("slots_processing", -1) == 0 &&
                              health.value("requests_queued", -1) == 0;
            const std::optional<double> server_cpu = process_cpu_seconds(options.rss_pid);
            const double cpu_spent = server_cpu ? *server_cpu - *server_cpu_at_start : NAN;
            if (idle && cpu_spent < cpu_left_to_finish / 100) return seconds_between(start, Clock::now());
            if (idle) {
                char text[320];
                std::snprintf(text, sizeof text,
                              "the slots went idle only after the server spent %.3g CPU s, a hundredth or more of the %.3g its cut "
                              "streams would take to finish: they ran on instead of being freed",
                              cpu_spent, cpu_left_to_finish);
                problem = text;
                return std::nullopt;
            }
            problem = "after every client left, GET /health still answered " + std::to_string(result->status) + " " +
                      result->body.substr(0, 200);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    } while (Clock::now() - start < std::chrono::duration<double>(options.timeout_seconds));
    problem += " (waited --timeout-seconds)";
    return std::nullopt;
}

double percentile(std::vector<double> values, double fraction) {
    if (values.empty()) return std::nan("");
    std::sort(values.begin(), values.end());
    const auto rank = static_cast<std::size_t>(std::ceil(fraction * static_cast<double>(values.size())));
    return values[std::clamp<std::size_t>(rank, 1, values.size()) - 1];
}

std::string human_rate(double chars_per_second) {
    char text[32];
    if (chars_per_second >= 1e4) std::snprintf(text, sizeof text, "%.1fk", chars_per_second / 1e3);
    else std::snprintf(text, sizeof text, "%.0f", chars_per_second);
    return text;
}

std::string human_seconds(double seconds) {
    char text[32];
    if (std::isnan(seconds)) return "-";
    if (seconds < 1) std::snprintf(text, sizeof text, "%.1f ms", seconds * 1e3);
    else std::snprintf(text, sizeof text, "%.2f s", seconds);
    return text;
}

std::string mebibytes(long bytes) {
    char text[32];
    std::snprintf(text, sizeof text, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
    return text;
}

Json number_or_null(double value) { return std::isfinite(value) ? Json(value) : Json(); }

}  // namespace

int main(int argc, char **argv) {
    const Options options = parse_options(argc, argv);
    if (options.rss_pid != 0 && !resident_bytes(options.rss_pid))
        usage_error("--rss-pid " + std::to_string(options.rss_pid) + ": no such process (or no VmRSS in its /proc status)");
    if (const std::string not_ready = wait_until_ready(options); !not_ready.empty()) {
        std::fprintf(stderr, "charlm_serve_load: %s\n", not_ready.c_str());
        return 1;
    }

    std::optional<IdleConnections> idle;
    if (options.idle_connections > 0) idle.emplace(options, options.idle_connections);

    std::vector<std::unique_ptr<httplib::Client>> connections;
    for (int i = 0; i < options.clients; ++i) {
        auto client = std::make_unique<httplib::Client>(options.host, options.port);
        client->set_keep_alive(true);
        // httplib writes a request's headers and body in two writes: with Nagle's algorithm on, the body
        // waits for the server's delayed ACK of the headers (40 ms on Linux), a stall a real client (curl
        // sets TCP_NODELAY too) would not see and which would swamp the time to first character.
        client->set_tcp_nodelay(true);
        client->set_connection_timeout(5);
        client->set_read_timeout(static_cast<time_t>(options.timeout_seconds));
        client->set_write_timeout(static_cast<time_t>(options.timeout_seconds));
        connections.push_back(std::move(client));
    }

    const auto start = Clock::now();
    const Schedule schedule{start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(options.warmup_seconds)),
                            start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(options.warmup_seconds + options.seconds))};
    std::atomic<bool> stopping{false};
    std::atomic<int> clients_running{options.clients};
    ErrorLog errors;
    std::vector<ClientTally> tallies(options.clients);
    std::vector<std::thread> threads;
    for (int i = 0; i < options.clients; ++i) {
        threads.emplace_back([&, i] {
            run_client(i, *connections[i], options, schedule, stopping, errors, tallies[i]);
            --clients_running;
        });
    }

    // The main thread keeps time: samples the server's memory, cuts the requests in flight at the deadline
    // (a stalled read would otherwise hold a client until its timeout), and in --finish mode gives up on
    // requests still running a timeout after the end.
    std::vector<long> rss_samples;
    bool server_gone = false;
    bool measuring = false;
    double own_cpu_at_start = 0;
    std::optional<double> server_cpu_at_start;
    auto next_sample = schedule.measure_start;
    const auto give_up = schedule.deadline + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(options.timeout_seconds));
    while (clients_running.load() > 0) {
        const auto now = Clock::now();
        if (!measuring && now >= schedule.measure_start) {
            measuring = true;
            own_cpu_at_start = own_cpu_seconds();
            if (options.rss_pid != 0) server_cpu_at_start = process_cpu_seconds(options.rss_pid);
        }
        if (options.rss_pid != 0 && now >= next_sample && !server_gone) {
            if (const auto bytes = resident_bytes(options.rss_pid)) {
                rss_samples.push_back(*bytes);
            } else {
                server_gone = true;
                errors.add(-1, "the server process " + std::to_string(options.rss_pid) + " is gone");
            }
            next_sample += std::chrono::milliseconds(500);
        }
        if ((!options.finish_in_flight && now >= schedule.deadline) || now >= give_up) {
            if (now >= give_up) stopping = true;
            for (auto &connection : connections) connection->stop();
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    for (auto &thread : threads) thread.join();
    connections.clear();  // closes the kept-alive connections: every client has now left
    std::optional<double> slots_idle_seconds;
    if (options.check_slots_freed) {
        // The server's CPU per character received under the load, and the characters the cut streams had left.
        long characters_received = 0;
        for (const auto &tally : tallies) characters_received += tally.characters;
        const std::optional<double> server_cpu_now = process_cpu_seconds(options.rss_pid);
        std::string problem;
        if (!server_cpu_at_start || !server_cpu_now || characters_received == 0) {
            errors.add(-1, "--check-slots-freed: no characters received, or no CPU time of the server, to compare with");
        } else {
            const double cpu_per_character = (*server_cpu_now - *server_cpu_at_start) / static_cast<double>(characters_received);
            const double characters_left = static_cast<double>(options.clients) * static_cast<double>(options.max_tokens) -
                                           static_cast<double>(characters_received);
            slots_idle_seconds = wait_until_slots_idle(options, cpu_per_character * characters_left, problem);
            if (!slots_idle_seconds) errors.add(-1, problem);
        }
    }
    // CPU in cores over the measured time: how much of the machine the server used, and how much this
    // client took from it (both run on the same machine).
    double client_cpu_cores = NAN, server_cpu_cores = NAN;
    if (measuring) {
        const double measured_seconds = seconds_between(schedule.measure_start, Clock::now());
        client_cpu_cores = (own_cpu_seconds() - own_cpu_at_start) / measured_seconds;
        if (server_cpu_at_start) {
            if (const auto server_cpu_at_end = process_cpu_seconds(options.rss_pid))
                server_cpu_cores = (*server_cpu_at_end - *server_cpu_at_start) / measured_seconds;
        }
    }
    if (options.rss_pid != 0 && !server_gone) {
        if (const auto bytes = resident_bytes(options.rss_pid)) rss_samples.push_back(*bytes);
        else errors.add(-1, "the server process " + std::to_string(options.rss_pid) + " is gone");
    }

    long requests_completed = 0, requests_cut = 0, characters = 0;
    long fewest_requests = tallies.front().requests_completed;
    double aggregate_chars_per_second = 0, slowest_client_chars_per_second = INFINITY;
    std::vector<double> first_character_seconds, request_seconds;
    for (const auto &tally : tallies) {
        request_seconds.insert(request_seconds.end(), tally.request_seconds.begin(), tally.request_seconds.end());
        requests_completed += tally.requests_completed;
        requests_cut += tally.requests_cut;
        characters += tally.characters;
        fewest_requests = std::min(fewest_requests, tally.requests_completed);
        // The sum of the clients' rates: in cut mode every span is --seconds, so it is characters / seconds;
        // in --finish mode it leaves out the tail in which the last clients finish alone.
        const double rate = tally.active_seconds > 0 ? static_cast<double>(tally.characters) / tally.active_seconds : 0;
        aggregate_chars_per_second += rate;
        slowest_client_chars_per_second = std::min(slowest_client_chars_per_second, rate);
        first_character_seconds.insert(first_character_seconds.end(), tally.first_character_seconds.begin(),
                                       tally.first_character_seconds.end());
    }
    const double mean_client_chars_per_second = aggregate_chars_per_second / options.clients;
    const double first_character_median = percentile(first_character_seconds, 0.5);
    const double first_character_p95 = percentile(first_character_seconds, 0.95);

    std::vector<std::string> failed_checks;
    if (fewest_requests < options.min_requests_per_client)
        failed_checks.push_back("a client completed " + std::to_string(fewest_requests) + " requests, fewer than --min-requests-per-client " +
                                std::to_string(options.min_requests_per_client));
    long rss_growth = 0;
    if (!rss_samples.empty()) rss_growth = rss_samples.back() - rss_samples.front();
    if (options.max_rss_growth_mib >= 0 && !rss_samples.empty() && rss_growth > options.max_rss_growth_mib * (1 << 20))
        failed_checks.push_back("the server's VmRSS grew by " + mebibytes(rss_growth) + " after warm-up, more than --max-rss-growth-mib allows (" +
                                mebibytes(static_cast<long>(options.max_rss_growth_mib * (1 << 20))) + ")");

    const long error_count = errors.count();
    const auto error_messages = errors.messages();
    const char *in_flight = options.finish_in_flight ? "finished" : "cut";
    if (options.json) {
        Json report = {{"url", options.url}, {"clients", options.clients}, {"seconds", options.seconds},
                       {"warmup_seconds", options.warmup_seconds}, {"max_tokens", options.max_tokens},
                       {"streaming", options.streaming}, {"in_flight_at_end", in_flight},
                       {"requests_completed", requests_completed}, {"requests_completed_fewest_per_client", fewest_requests},
                       {"requests_cut", requests_cut}, {"errors", error_count}, {"error_messages", error_messages},
                       {"characters", characters}, {"chars_per_second", aggregate_chars_per_second},
                       {"chars_per_second_per_client_mean", mean_client_chars_per_second},
                       {"chars_per_second_per_client_min", slowest_client_chars_per_second},
                       {"first_character_seconds_median", number_or_null(first_character_median)},
                       {"first_character_seconds_p95", number_or_null(first_character_p95)},
                       {"client_cpu_cores", number_or_null(client_cpu_cores)},
                       {"slots_idle_seconds_after_end", slots_idle_seconds ? Json(*slots_idle_seconds) : Json()},
                       {"request_seconds_median", number_or_null(percentile(request_seconds, 0.5))},
                       {"failed_checks", failed_checks}};
        if (idle) {
            report["idle_connections"] = options.idle_connections;
            report["idle_connections_open_at_end"] = idle->open_now();
            report["idle_connections_reopened"] = idle->reopened();
            report["idle_connections_failed"] = idle->failures();
        }
        if (options.rss_pid != 0 && !rss_samples.empty()) {
            report["rss_pid"] = options.rss_pid;
            report["rss_bytes_after_warmup"] = rss_samples.front();
            report["rss_bytes_last"] = rss_samples.back();
            report["rss_bytes_max"] = *std::max_element(rss_samples.begin(), rss_samples.end());
            report["rss_samples"] = rss_samples.size();
            report["rss_bytes_every_half_second"] = rss_samples;  // the trend: a plateau, or a climb
            report["server_cpu_cores"] = number_or_null(server_cpu_cores);
        }
        std::printf("%s\n", report.dump().c_str());
    } else {
        std::printf("charlm_serve_load: %d client(s), %g s measured after %g s of warm-up, %s, max_tokens %ld, requests in flight at the end %s\n",
                    options.clients, options.seconds, options.warmup_seconds, options.streaming ? "streaming" : "not streaming",
                    options.max_tokens, in_flight);
        std::printf("requests completed   %ld (fewest by one client: %ld), %ld cut at the end\n", requests_completed, fewest_requests, requests_cut);
        std::printf("errors               %ld\n", error_count);
        std::printf("characters/s         %s aggregate; per client %s mean, %s min\n", human_rate(aggregate_chars_per_second).c_str(),
                    human_rate(mean_client_chars_per_second).c_str(), human_rate(slowest_client_chars_per_second).c_str());
        std::printf("first character      %s median, %s p95 (%zu requests)\n", human_seconds(first_character_median).c_str(),
                    human_seconds(first_character_p95).c_str(), first_character_seconds.size());
        if (!rss_samples.empty()) {
            std::printf("server VmRSS         %s after warm-up, %s last, %s max (%zu samples, every 0.5 s)\n", mebibytes(rss_samples.front()).c_str(),
                        mebibytes(rss_samples.back()).c_str(), mebibytes(*std::max_element(rss_samples.begin(), rss_samples.end())).c_str(),
                        rss_samples.size());
        }
        if (std::isfinite(server_cpu_cores)) std::printf("CPU cores in use     server %.2f, this client %.2f\n", server_cpu_cores, client_cpu_cores);
        else if (std::isfinite(client_cpu_cores)) std::printf("CPU cores in use     this client %.2f\n", client_cpu_cores);
        if (idle)
            std::printf("idle connections     %d held (%d open at the end), %ld opened again after the server closed them, %ld failed to open\n",
                        options.idle_connections, idle->open_now(), idle->reopened(), idle->failures());
        std::printf("request              %s median, start to last byte\n", human_seconds(percentile(request_seconds, 0.5)).c_str());
        if (slots_idle_seconds) std::printf("slots all idle       %s after the clients left\n", human_seconds(*slots_idle_seconds).c_str());
    }
    std::fflush(stdout);  // the report first, then what went wrong, also when stdout is a pipe
    for (const auto &message : error_messages) std::fprintf(stderr, "charlm_serve_load: error: %s\n", message.c_str());
    if (error_count > static_cast<long>(error_messages.size()))
        std::fprintf(stderr, "charlm_serve_load: ... and %ld more errors\n", error_count - static_cast<long>(error_messages.size()));
    for (const auto &check : failed_checks) std::fprintf(stderr, "charlm_serve_load: check failed: %s\n", check.c_str());
    return error_count > 0 || !failed_checks.empty() ? 1 : 0;
}
