// One client connection of charlm serve, on the event loop's thread (Boost.Asio): reads requests one
// after the other (pipelined ones wait their turn), answers each in order, streams events, and holds
// every deadline. A connection costs no thread: a client that sends nothing holds only its socket.
#pragma once

#include <chrono>
#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include "charlm/server.hpp"
#include "serve/exchange.hpp"
#include "serve/metrics.hpp"
#include "serve/request_reader.hpp"
#include "serve/routes.hpp"

namespace charlm {

class Connection;

// What the connections share, on the loop's thread only: the routes, the metrics, the options, and the
// connections open now (so that stopping can close the idle ones).
struct ConnectionHub {
    const ServerOptions& options;
    Routes& routes;
    ServerMetrics& metrics;
    std::list<std::weak_ptr<Connection>> open;
    bool stopping = false;
};

class Connection : public std::enable_shared_from_this<Connection> {
public:
    Connection(boost::asio::ip::tcp::socket socket, ConnectionHub& hub);
    ~Connection();
    void start();
    // The server stops: a connection between requests closes now, one answering closes after its answer.
    void stop();

private:
    using Clock = std::chrono::steady_clock;
    struct Outgoing {
        std::string bytes;
        std::function<void()> then;  // once written
    };

    void read_more();
    void on_read(const boost::system::error_code& error, std::string_view bytes);
    void process();
    void handle(HttpRequest request);
    void refuse(int status, const std::string& message);  // a request that cannot be read: answer, then close
    void answer_now(HttpAnswer answer);
    void wait_for_whole();
    void whole_ready();
    void start_stream();
    void pump_stream();
    void pace_stream();
    void stream_sent();
    void answered(int status);
    void wake_on_news(bool only_the_end, void (Connection::*then)());
    void send(std::string bytes, std::function<void()> then = {});
    void write_next();
    void arm(boost::asio::steady_timer& timer, std::chrono::milliseconds after, void (Connection::*then)());
    void read_deadline_passed();
    void write_deadline_passed();
    void close();
    // After an answer that ends the connection: no more is sent, and what the client still sends is
    // read and dropped for a moment, so that closing does not reset the connection before it reads the answer.
    void close_gracefully();
    std::string head(int status, const std::string& content_type, const std::vector<std::pair<std::string, std::string>>& headers,
                     std::optional<std::size_t> content_length) const;

    boost::asio::ip::tcp::socket socket_;
    ConnectionHub& hub_;
    std::list<std::weak_ptr<Connection>>::iterator in_hub_;
    RequestReader reader_;
    boost::asio::steady_timer read_deadline_, write_deadline_, pace_;
    std::deque<Outgoing> outbox_;
    Outgoing writing_now_;
    bool reading_ = false;
    bool writing_ = false;
    bool closed_ = false;
    bool lingering_ = false;        // close_gracefully() has begun
    bool peer_done_ = false;        // the client sent its last byte (end of stream)
    bool answering_ = false;        // a request is being answered; the next waits in reader_
    bool request_begun_ = false;    // bytes of the next request have come (its header deadline runs)
    bool first_request_ = true;
    // The request being answered.
    std::string method_;
    std::string path_;
    bool head_only_ = false;
    int version_ = 11;
    bool keep_alive_ = true;
    Clock::time_point started_{};
    bool first_character_sent_ = false;
    std::optional<PendingAnswer> pending_;
    std::uint64_t wait_generation_ = 0;  // a wake or pace timer of an earlier wait is ignored
};

// Past --max-connections: answers 503 without reading a request and closes, on a connection of its own.
void refuse_connection(boost::asio::ip::tcp::socket socket, int timeout_seconds, std::size_t open_connections);

}  // namespace charlm
