// How Ctrl-C, SIGTERM and a closed terminal stop a training run: save after the current step, or end at once. Not serve's (serve_command.cpp).
#include "cli/stop_signals.hpp"

#include <signal.h>

#include <array>
#include <csignal>

#include "charlm/communicator.hpp"
#include "charlm/train.hpp"

namespace charlm::cli {

namespace {

// Before the loop has begun (reading the corpus from a pipe, say) request_training_stop() says no: the
// signal ends the process as it would have.
void on_stop_signal(int signal_number) {
    std::signal(signal_number, SIG_DFL);
    if (!request_training_stop()) std::raise(signal_number);
}

// The reader of training's log has gone (`charlm train ... 2>&1 | head`, `| less` and q): the run saves and
// stops after this step as on SIGTERM, exit 130, rather than die unsaved or train on unseen. Before the
// loop has begun nothing is lost: the write fails, and the loop stops at its first report, which fails
// the same way. The handler stays, since every later log line raises it again.
void on_closed_output(int) { static_cast<void>(request_training_stop()); }

}  // namespace

// The handler runs on a stack of its own (the kernel gives a process's signal to its main thread
// where it can). On the interrupted stack, a SIGTERM that landed inside oneDNN's sgemm corrupted its
// heap (free() of an invalid pointer inside dnnl_sgemm; then exit 134), 5 times in 70 early SIGTERMs;
// on its own stack, none in 70. oneDNN's JIT kernels are the likely reason: data kept below the
// stack pointer, past the red zone that a signal frame leaves alone.
void install_training_stop_handler() {
    static std::array<char, 1 << 16> handler_stack;
    stack_t stack{};
    stack.ss_sp = handler_stack.data();
    stack.ss_size = handler_stack.size();
    ::sigaltstack(&stack, nullptr);
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    action.sa_flags = SA_ONSTACK | SA_RESTART;
    ::sigemptyset(&action.sa_mask);
    for (const int signal_number : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(signal_number, &action, nullptr);
    action.sa_handler = on_closed_output;
    ::sigaction(SIGPIPE, &action, nullptr);
    action.sa_handler = on_stop_signal;
    // mpirun keeps SIGINT and SIGTERM for itself (it ends the job: SIGTERM to every process a second
    // later, SIGKILL a second after that) but passes SIGUSR1 on: the way to stop a run of several
    // processes that lets them all save and exit 130, mpirun with them.
    if (DistributedRun::launched_with_others()) ::sigaction(SIGUSR1, &action, nullptr);
}

}  // namespace charlm::cli
