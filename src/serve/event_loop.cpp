// charlm serve's Server: one thread runs the event loop (Boost.Asio over epoll) that accepts, reads and
// writes every connection; the decoder's thread decodes. Past --max-connections a connection is refused.
#include "charlm/server.hpp"

#include <signal.h>
#include <sys/resource.h>

#include <list>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include "serve/access.hpp"
#include "serve/connection.hpp"
#include "serve/routes.hpp"

namespace charlm {

namespace asio = boost::asio;
using asio::ip::tcp;

struct Server::State {
    explicit State(ServerOptions server_options) : options(std::move(server_options)), routes(options, metrics) {}
    ServerOptions options;
    ServerMetrics metrics;
    Routes routes;
    ConnectionHub hub{options, routes, metrics, {}, false};
    asio::io_context io{1};
    tcp::acceptor acceptor{io};
    asio::steady_timer accept_again{io};
    std::thread loop;
    int port = 0;
    bool stopped = false;

    void accept();
};

namespace {

// Each connection is a descriptor: let the process have as many as the system allows it, so that
// --max-connections, and not the soft limit (often 1024), is what refuses clients.
void raise_descriptor_limit() {
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &limit);
    }
}

}  // namespace

void Server::State::accept() {
    acceptor.async_accept([this](const boost::system::error_code& error, tcp::socket socket) {
        if (error == asio::error::operation_aborted || !acceptor.is_open()) return;
        if (error) {
            // Out of descriptors (or memory): the client waits in the backlog, and accepting resumes shortly.
            accept_again.expires_after(std::chrono::milliseconds(50));
            accept_again.async_wait([this](const boost::system::error_code& wait_error) {
                if (!wait_error) accept();
            });
            return;
        }
        boost::system::error_code ignored;
        // Without it, an answer's first piece on a reused connection waited ~40 ms for the client's
        // delayed ACK of the headers (Nagle): a 1-client stream ran at a tenth of its speed.
        socket.set_option(tcp::no_delay(true), ignored);
        if (hub.open.size() >= static_cast<std::size_t>(options.max_connections))
            refuse_connection(std::move(socket), options.timeout_seconds, hub.open.size());
        else
            std::make_shared<Connection>(std::move(socket), hub)->start();
        accept();
    });
}

Server::Server(ServerOptions options) {
    if (options.host.empty()) throw UsageError("--host needs an address, such as 127.0.0.1 or 0.0.0.0");
    if (options.port < 0 || options.port > 65535) throw UsageError(fmt::format("--port must be 0 to 65535, not {}", options.port));
    if (options.slots < 1 || options.slots > 256) throw UsageError(fmt::format("--parallel must be 1 to 256, not {}", options.slots));
    if (options.queued < 0 || options.queued > 4096) throw UsageError(fmt::format("--queue must be 0 to 4096, not {}", options.queued));
    if (options.max_tokens < 1) throw UsageError("--max-tokens must be at least 1");
    if (options.models < 1 || options.models > 64) throw UsageError(fmt::format("a server serves 1 to 64 models, not {}", options.models));
    if (options.max_connections < 1 || options.max_connections > 1'000'000)
        throw UsageError(fmt::format("--max-connections must be 1 to 1000000, not {}", options.max_connections));
    if (options.timeout_seconds < 1) throw UsageError(fmt::format("--timeout must be at least 1 second, not {}", options.timeout_seconds));
    state_ = std::make_unique<State>(std::move(options));  // the keys are checked here (ApiKeys)
}

Server::~Server() { stop(); }

void Server::start() {
    ::signal(SIGPIPE, SIG_IGN);
    raise_descriptor_limit();
    State& s = *state_;
    const ServerOptions& options = s.options;
    const auto cannot_listen = [&] {
        return Error(fmt::format("cannot listen on {}:{}: the port is taken or the address is not this machine's; try another --port or --host",
                                 options.host, options.port));
    };
    boost::system::error_code error;
    tcp::resolver resolver(s.io);
    const auto endpoints = resolver.resolve(options.host, std::to_string(options.port), tcp::resolver::passive | tcp::resolver::numeric_service, error);
    if (error || endpoints.empty()) throw cannot_listen();
    const tcp::endpoint endpoint = endpoints.begin()->endpoint();
    // SO_REUSEADDR alone: a quick restart binds again, and a second server on the same port is refused
    // (SO_REUSEPORT would let it take half of the first one's connections without a word).
    s.acceptor.open(endpoint.protocol(), error);
    if (!error) s.acceptor.set_option(tcp::acceptor::reuse_address(true), error);
    if (!error) s.acceptor.bind(endpoint, error);
    if (!error) s.acceptor.listen(1024, error);
    if (error) throw cannot_listen();
    s.port = s.acceptor.local_endpoint().port();
    s.accept();
    s.loop = std::thread([&s] { s.io.run(); });
}

int Server::port() const { return state_->port; }

bool is_wildcard_host(const std::string& host) { return host == "0.0.0.0" || host == "::" || host == "[::]"; }

std::string Server::url() const {
    // A wildcard address is where the server listens, not one a client can ask for: this machine's own is.
    std::string host = state_->options.host;
    if (is_wildcard_host(host)) host = host == "0.0.0.0" ? "127.0.0.1" : "::1";
    return fmt::format("http://{}:{}/", host.find(':') != std::string::npos ? "[" + host + "]" : host, state_->port);
}

void Server::load(Checkpoint checkpoint, std::string name) { state_->routes.load(std::move(checkpoint), std::move(name)); }

void Server::stop() {
    State& s = *state_;
    if (s.stopped) return;
    s.stopped = true;
    s.routes.stop();  // the requests in flight fail now: their answers say so, and their connections close
    if (!s.loop.joinable()) return;
    // The loop runs until nothing is left for it: no listener, and no connection (an idle one closes now,
    // one answering after its answer, each write bounded by --timeout).
    asio::post(s.io, [&s] {
        s.hub.stopping = true;
        boost::system::error_code ignored;
        s.acceptor.close(ignored);
        s.accept_again.cancel();
        std::vector<std::shared_ptr<Connection>> open;
        for (const auto& connection : s.hub.open)
            if (auto alive = connection.lock()) open.push_back(std::move(alive));
        for (const auto& connection : open) connection->stop();
    });
    s.loop.join();
}

}  // namespace charlm
