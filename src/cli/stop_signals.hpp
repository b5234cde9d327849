// How Ctrl-C, SIGTERM and a closed terminal stop a training run: save after the current step, or end at once. Not serve's (serve_command.cpp).
#pragma once

namespace charlm::cli {

// Ctrl-C, SIGTERM or a closed terminal (and SIGUSR1 under mpirun): training saves and stops after the
// current step; before the loop has begun there is nothing to save, and the process ends as the signal
// would end it. A second signal quits at once. A closed log (SIGPIPE: its reader gone) saves and stops too.
void install_training_stop_handler();

}  // namespace charlm::cli
