// Connection: one client's requests read, answered in order and streamed on the event loop's thread,
// each wait bounded by a deadline (--timeout) so that no client holds more than its own socket.
#include "serve/connection.hpp"

#include <algorithm>
#include <utility>

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <fmt/format.h>

#include "serve/api.hpp"

namespace charlm {

namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

// A stream sends at most one event per pace (about 60 a second): smooth to watch, and cheap to serve.
constexpr std::chrono::milliseconds kStreamPace{16};
// Bytes of pipelined requests held while one is answered, beyond a body's limit: past them, reading waits.
constexpr std::size_t kBufferedBeyondBody = 64 * 1024;
// How long an ending connection reads and drops what the client still sends.
constexpr std::chrono::milliseconds kLinger{2000};

const char* reason_phrase(int status) {
    switch (status) {
        case 100: return "Continue";
        case 200: return "OK";
        case 400: return "Bad Request";
        case 401: return "Unauthorized";
        case 404: return "Not Found";
        case 405: return "Method Not Allowed";
        case 413: return "Payload Too Large";
        case 431: return "Request Header Fields Too Large";
        case 500: return "Internal Server Error";
        case 503: return "Service Unavailable";
        default: return "Unknown";
    }
}

std::chrono::milliseconds seconds(int count) { return std::chrono::milliseconds(std::int64_t{count} * 1000); }

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void disarm(asio::steady_timer& timer) { timer.expires_at(asio::steady_timer::time_point::max()); }

}  // namespace

Connection::Connection(asio::ip::tcp::socket socket, ConnectionHub& hub)
    : socket_(std::move(socket)),
      hub_(hub),
      reader_(RequestLimits{.max_body_bytes = hub.options.max_body_bytes}),
      read_deadline_(socket_.get_executor()),
      write_deadline_(socket_.get_executor()),
      pace_(socket_.get_executor()) {}

Connection::~Connection() {
    if (!closed_) {  // the loop ended with it open (the server's io_context destroyed)
        hub_.open.erase(in_hub_);
        hub_.metrics.connection_closed();
    }
}

void Connection::start() {
    boost::system::error_code ignored;
    socket_.non_blocking(true, ignored);  // read_some after a wait: never blocks the loop
    hub_.open.push_front(weak_from_this());
    in_hub_ = hub_.open.begin();
    hub_.metrics.connection_opened();
    arm(read_deadline_, seconds(hub_.options.timeout_seconds), &Connection::read_deadline_passed);
    read_more();
}

void Connection::stop() {
    if (!answering_) return close();
    keep_alive_ = false;
}

// ---- reading --------------------------------------------------------------------------------------------

void Connection::read_more() {
    if (reading_ || closed_ || (peer_done_ && !lingering_)) return;
    // Pipelined requests wait while one is answered, up to a bound: past it the client waits for TCP.
    if (!lingering_ && reader_.buffered() > hub_.options.max_body_bytes + kBufferedBeyondBody) return;
    reading_ = true;
    // Waits for bytes, then reads them into the loop's one buffer: an idle connection holds no buffer of its own.
    socket_.async_wait(asio::socket_base::wait_read, [self = shared_from_this()](const boost::system::error_code& error) {
        self->reading_ = false;
        if (self->closed_) return;
        static thread_local std::array<char, 64 * 1024> received;  // the loop's thread only
        boost::system::error_code read_error = error;
        std::size_t length = 0;
        if (!read_error) length = self->socket_.read_some(asio::buffer(received), read_error);
        if (read_error == asio::error::would_block || read_error == asio::error::try_again) return self->read_more();
        self->on_read(read_error, std::string_view(received.data(), length));
    });
}

void Connection::on_read(const boost::system::error_code& error, std::string_view bytes) {
    if (closed_) return;
    if (lingering_) return error ? close() : read_more();  // what comes now is dropped
    if (error) {
        peer_done_ = true;
        // A client that leaves while its answer waits on the decoder will read none of it: its slots go now.
        // One whose answer is being written gets it, and the connection closes after.
        if (!answering_ || (pending_ && !writing_)) close();
        return;
    }
    reader_.append(bytes);
    if (!answering_) process();
    read_more();
}

// Reads the buffered requests, answering each before the next is read.
void Connection::process() {
    while (!answering_ && !closed_) {
        switch (reader_.advance()) {
            case RequestReader::Progress::need_more:
                if (peer_done_ || hub_.stopping) return close();
                if (reader_.buffered() > 0 && !request_begun_) {  // the header's deadline runs from the request's first byte
                    request_begun_ = true;
                    arm(read_deadline_, seconds(hub_.options.timeout_seconds), &Connection::read_deadline_passed);
                }
                return;
            case RequestReader::Progress::header_done:
                request_begun_ = true;
                arm(read_deadline_, seconds(hub_.options.timeout_seconds), &Connection::read_deadline_passed);  // the body's
                if (reader_.expects_continue()) send("HTTP/1.1 100 Continue\r\n\r\n");
                continue;
            case RequestReader::Progress::complete:
                request_begun_ = false;
                disarm(read_deadline_);
                handle(reader_.take_request());
                continue;
            case RequestReader::Progress::malformed:
                return refuse(400, "a malformed HTTP request");
            case RequestReader::Progress::too_large:
                return refuse(413, fmt::format("the body is larger than this server takes ({} bytes)", hub_.options.max_body_bytes));
            case RequestReader::Progress::header_too_large:
                return refuse(431, fmt::format("the request's header is larger than this server takes ({} bytes)", RequestLimits{}.max_header_bytes));
        }
    }
}

void Connection::read_deadline_passed() {
    if (!answering_) close();  // a client that sent nothing, or half a request, for --timeout
}

// ---- answering ------------------------------------------------------------------------------------------

void Connection::handle(HttpRequest request) {
    answering_ = true;
    method_ = request.method;
    path_ = request.path;
    head_only_ = request.method == "HEAD";
    version_ = request.version;
    keep_alive_ = request.keep_alive && !hub_.stopping;
    started_ = Clock::now();
    first_character_sent_ = false;
    RouteOutcome outcome = hub_.routes.answer(request);
    if (auto* answer = std::get_if<HttpAnswer>(&outcome)) return answer_now(std::move(*answer));
    pending_ = std::move(std::get<PendingAnswer>(outcome));
    if (pending_->stream) start_stream();
    else wait_for_whole();
}

void Connection::refuse(int status, const std::string& message) {
    answering_ = true;
    method_ = "?";
    path_ = "";
    head_only_ = false;
    version_ = 11;
    keep_alive_ = false;  // the bytes after a request that cannot be read cannot be read either
    started_ = Clock::now();
    answer_now(refusal_answer(RequestRefusal{status, message, ""}));
}

void Connection::answer_now(HttpAnswer answer) {
    std::string bytes = head(answer.status, answer.content_type, answer.headers, answer.body.size());
    if (!head_only_) bytes += answer.body;
    send(std::move(bytes), [this, status = answer.status] { answered(status); });
}

void Connection::wait_for_whole() { wake_on_news(true, &Connection::whole_ready); }

void Connection::whole_ready() {
    if (peer_done_) return close();  // the client left while its answer was decoded
    answer_now(pending_->whole());
}

void Connection::start_stream() {
    if (version_ == 10) keep_alive_ = false;  // an HTTP/1.0 client reads the events to the connection's end
    send(head(200, "text/event-stream", {{"Cache-Control", "no-cache"}}, std::nullopt), [this] { pump_stream(); });
}

// Sends what the decoder made since the last piece, or waits for news.
void Connection::pump_stream() {
    if (peer_done_) return close();  // the client left mid-stream: its slot goes now, not at the next failed write
    bool done = false;
    std::string events = pending_->events(done);
    if (events.empty()) return wake_on_news(false, &Connection::pump_stream);
    if (!first_character_sent_) {
        first_character_sent_ = true;
        hub_.metrics.observe_first_character(seconds_since(started_));
    }
    std::string bytes = version_ == 11 ? fmt::format("{:x}\r\n", events.size()) + events + "\r\n" : std::move(events);
    if (done && version_ == 11) bytes += "0\r\n\r\n";
    send(std::move(bytes), [this, done] { done ? answered(200) : pace_stream(); });
}

// The next piece after the pace, or at once when the request ends: waiting out the pace after the end
// slowed a client's next request.
void Connection::pace_stream() {
    wake_on_news(true, &Connection::pump_stream);
    const std::uint64_t generation = wait_generation_;
    pace_.expires_after(kStreamPace);
    pace_.async_wait([self = shared_from_this(), generation](const boost::system::error_code& error) {
        if (error || self->closed_ || self->wait_generation_ != generation) return;
        ++self->wait_generation_;
        self->pump_stream();
    });
}

void Connection::wake_on_news(bool only_the_end, void (Connection::*then)()) {
    const std::uint64_t generation = ++wait_generation_;
    // Called on the decoder's thread: the loop's thread takes it from there.
    pending_->mailbox->wake_on_news(
        [self = shared_from_this(), generation, then] {
            asio::post(self->socket_.get_executor(), [self, generation, then] {
                if (self->closed_ || self->wait_generation_ != generation) return;
                ++self->wait_generation_;
                (self.get()->*then)();
            });
        },
        only_the_end);
}

void Connection::answered(int status) {
    const double elapsed = seconds_since(started_);
    hub_.metrics.count_request(path_, status, elapsed);
    if (hub_.options.log) hub_.options.log(ServerLogLevel::debug, fmt::format("{} {} {}", method_, path_, status));
    answering_ = false;
    if (pending_) pending_->mailbox->wake_on_news(nullptr);
    pending_.reset();
    first_request_ = false;
    if (!keep_alive_ || hub_.stopping) return close_gracefully();
    // Between requests a kept-alive connection may idle for 5 s (less where --timeout is less).
    arm(read_deadline_, seconds(std::min(hub_.options.timeout_seconds, 5)), &Connection::read_deadline_passed);
    process();
    read_more();
}

std::string Connection::head(int status, const std::string& content_type, const std::vector<std::pair<std::string, std::string>>& headers,
                             std::optional<std::size_t> content_length) const {
    std::string text = fmt::format("HTTP/1.1 {} {}\r\nContent-Type: {}\r\n", status, reason_phrase(status), content_type);
    if (content_length) text += fmt::format("Content-Length: {}\r\n", *content_length);
    else if (version_ == 11) text += "Transfer-Encoding: chunked\r\n";
    text += keep_alive_ ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
    for (const auto& [name, value] : headers) text += fmt::format("{}: {}\r\n", name, value);
    return text + "\r\n";
}

// ---- writing, deadlines, the end ------------------------------------------------------------------------

void Connection::send(std::string bytes, std::function<void()> then) {
    outbox_.push_back({std::move(bytes), std::move(then)});
    write_next();
}

void Connection::write_next() {
    if (writing_ || closed_ || outbox_.empty()) return;
    writing_ = true;
    writing_now_ = std::move(outbox_.front());
    outbox_.pop_front();
    // A client that reads nothing for --timeout is dropped: a stream's slot goes back to the others.
    arm(write_deadline_, seconds(hub_.options.timeout_seconds), &Connection::write_deadline_passed);
    asio::async_write(socket_, asio::buffer(writing_now_.bytes), [self = shared_from_this()](const boost::system::error_code& error, std::size_t) {
        self->writing_ = false;
        if (self->closed_) return;
        disarm(self->write_deadline_);
        if (error) return self->close();  // the client left: a stream's slot is freed
        if (auto then = std::exchange(self->writing_now_.then, nullptr)) then();
        self->write_next();
    });
}

void Connection::write_deadline_passed() { close(); }

void Connection::arm(asio::steady_timer& timer, std::chrono::milliseconds after, void (Connection::*then)()) {
    timer.expires_after(after);
    timer.async_wait([self = shared_from_this(), &timer, then](const boost::system::error_code& error) {
        // A timer re-armed or disarmed since has its expiry ahead.
        if (error || self->closed_ || timer.expiry() > Clock::now()) return;
        (self.get()->*then)();
    });
}

void Connection::close_gracefully() {
    if (closed_ || lingering_) return;
    lingering_ = true;
    boost::system::error_code ignored;
    socket_.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
    arm(read_deadline_, kLinger, &Connection::close);
    read_more();
}

void Connection::close() {
    if (closed_) return;
    closed_ = true;
    if (pending_) {
        pending_->mailbox->cancel();  // the decoder frees its slots before its next step
        pending_->mailbox->wake_on_news(nullptr);
        if (answering_) hub_.metrics.count_request(path_, pending_->stream ? 200 : 499, seconds_since(started_));
        pending_.reset();
    }
    for (asio::steady_timer* timer : {&read_deadline_, &write_deadline_, &pace_}) timer->cancel();
    outbox_.clear();
    boost::system::error_code ignored;
    socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    hub_.open.erase(in_hub_);
    hub_.metrics.connection_closed();
}

// ---- past the connection limit --------------------------------------------------------------------------

namespace {

struct RefusedConnection : std::enable_shared_from_this<RefusedConnection> {
    RefusedConnection(asio::ip::tcp::socket client, int timeout_seconds) : socket(std::move(client)), deadline(socket.get_executor()) {
        deadline.expires_after(seconds(std::min(timeout_seconds, 2)));
    }
    asio::ip::tcp::socket socket;
    asio::steady_timer deadline;
    std::string answer;
    std::array<char, 4096> dropped{};

    void start(std::size_t open_connections) {
        const HttpAnswer refusal = refusal_answer(RequestRefusal{
            503, fmt::format("the server has {} connections open, as many as --max-connections allows; try again shortly", open_connections),
            "", "unavailable_error"});
        answer = fmt::format("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n"
                             "Retry-After: 1\r\n\r\n{}",
                             refusal.body.size(), refusal.body);
        deadline.async_wait([self = shared_from_this()](const boost::system::error_code& error) {
            if (!error) self->socket.close();
        });
        asio::async_write(socket, asio::buffer(answer), [self = shared_from_this()](const boost::system::error_code& error, std::size_t) {
            if (error) return self->end();
            boost::system::error_code ignored;
            self->socket.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
            self->drop();
        });
    }
    void drop() {  // what the client sent, until it closes or the deadline
        socket.async_read_some(asio::buffer(dropped), [self = shared_from_this()](const boost::system::error_code& error, std::size_t) {
            if (error) return self->end();
            self->drop();
        });
    }
    void end() {
        deadline.cancel();
        boost::system::error_code ignored;
        socket.close(ignored);
    }
};

}  // namespace

void refuse_connection(asio::ip::tcp::socket socket, int timeout_seconds, std::size_t open_connections) {
    std::make_shared<RefusedConnection>(std::move(socket), timeout_seconds)->start(open_connections);
}

}  // namespace charlm
