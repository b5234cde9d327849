#!/usr/bin/python3
"""The model of data-parallel training behind docs/scale.md: from two measurements, the time of a training
step at N machines and its parallel efficiency, for the three reference LSTMs, as markdown tables.

  compute: 'charlm bench --model 2x128 --model 2x256 --model 3x512 --threads T --json' (one JSON object): each
           model's train chars/s at its bench shape; a step of b streams takes seq x b / rate on one machine.
  network: 'mpirun -np N build/bench/allreduce_bench --json' (JSON lines): MPI_Allreduce measured on this
           machine, shown beside the model; the model's network is assumed (--network), not measured.

A step at N machines is compute + ring allreduce of the fp32 gradient, 2(N-1)/N x bytes / bandwidth +
2(N-1) x latency. Strong scaling keeps the global batch (each machine takes ceil(batch / N) streams);
weak scaling keeps each machine's batch (the global batch grows N times). Efficiency is the speedup over
one machine divided by N. Overlap: the backward pass yields the head's gradient first, then each layer's
from the top down (the embedding's with the first layer's, last), and each can be summed while the layers
below still run backward; the backward pass's time is split between layers by their FLOP, as
'charlm bench' counts them.

Either file may hold several runs one after the other (rounds, as scripts/bench.sh takes them): each
figure is then its best round, with its spread over the rounds, (best - worst) / best, beside it; on a
shared machine, other work only ever slows a measurement down.

Small batches run slower per character. With --batch-rates (JSON lines of scripts/bench_batches.sh: one
machine's train chars/s at the batches strong scaling gives it), a machine with b streams runs at the
bench's rate times rate(b) / rate(full batch) of those lines, interpolated in log b between measured
batches and never above 1; without them, every batch runs at the full batch's rate, and strong scaling
looks better than it is.

Usage: scale_model.py BENCH_JSON ALLREDUCE_JSON [--batch-rates BATCHES_JSON] [--write docs/scale.md]
  prints the tables; --write replaces the part of the file between its two marker lines instead."""
import argparse
import copy
import json
import math
import sys

MACHINE_COUNTS = (2, 4, 8, 16, 32, 64)
NODE_SPEEDUPS = (1, 2, 4, 8, 16)  # a node this many times faster than the measured machine
# (name, bytes per second, seconds per message): effective rates of 10 and 100 Gbit/s Ethernet under
# MPI over TCP, and a per-message latency typical of TCP between neighbouring machines.
NETWORKS = (("10 Gbit/s", 1.25e9, 20e-6), ("100 Gbit/s", 12.5e9, 20e-6))
TARGET = {"model": "3x512", "machines": 16, "network": "10 Gbit/s", "efficiency": 0.80}
BEGIN, END = "<!-- scale_model.py: begin -->", "<!-- scale_model.py: end -->"


def lstm_shape(row, vocab):
    """The dimensions of a bench row, and its gradient's parts in the order backward yields them."""
    layers, hidden, embed = row["layers"], row["hidden"], row["embed"]
    parts = [("head", vocab * hidden + vocab)]
    for layer in reversed(range(layers)):
        size = 4 * hidden * ((embed if layer == 0 else hidden) + hidden) + 8 * hidden
        parts.append((f"layer {layer}" + (" + embedding" if layer == 0 else ""), size + (vocab * embed if layer == 0 else 0)))
    return parts


def backward_flop(row, vocab):
    """(forward FLOP, [backward FLOP of each part of lstm_shape()]) per window, as src/bench/bench.cpp's count_flops."""
    V, E, H, L = vocab, row["embed"], row["hidden"], row["layers"]
    G, T, B = 4 * H, row["seq"], row["batch"]
    TB = T * B

    def product(rows, inner, columns):
        return 2 * rows * inner * columns

    table = 2 * V <= TB
    forward = (L * product(TB, H, G) + (L - 1) * product(TB, H, G) + product(TB, H, V) +
               (product(V, E, G) if table else product(TB, E, G)))
    parts = [2 * product(TB, V, H)]
    for layer in reversed(range(L)):
        recurrent = product(G, TB, H) + product((T - 1) * B, G, H)
        below = 2 * product(TB, G, H) if layer > 0 else (2 * product(V, G, E) if table else 2 * product(TB, G, E))
        parts.append(recurrent + below)
    return forward, parts


def ring_seconds(machines, size_bytes, bandwidth, latency):
    if machines == 1:
        return 0.0
    return 2 * (machines - 1) / machines * size_bytes / bandwidth + 2 * (machines - 1) * latency


class Model:
    """One reference LSTM: its measured rate and what a step costs at N machines."""

    def __init__(self, row, vocab, batch_rates=None):
        self.name = f"{row['layers']}x{row['hidden']}"
        # batch -> rate relative to the full batch's, from bench_batches.sh; empty: the same rate at every batch
        self.relative_rates = {}
        if batch_rates and row["batch"] in batch_rates:
            # Capped at 1: a smaller batch measured faster per character is a busy machine's noise or a
            # cache effect that a larger node need not share; the model does not bank on it.
            self.relative_rates = {batch: min(1.0, rate / batch_rates[row["batch"]])
                                   for batch, rate in sorted(batch_rates.items())}
        self.seq, self.batch = row["seq"], row["batch"]
        self.rate = row["train_chars_per_second"]
        self.spread = row.get("spread", "")
        self.parts = lstm_shape(row, vocab)
        self.parameters = sum(size for _, size in self.parts)
        if "parameters" in row and row["parameters"] != self.parameters:
            sys.exit(f"scale_model.py: {self.name} has {row['parameters']} parameters in the bench, "
                     f"{self.parameters} by this script's count; one of them is wrong")
        forward, backward = backward_flop(row, vocab)
        self.backward_fraction = sum(backward) / (forward + sum(backward))
        # The backward time done when each part's gradient is ready, as a fraction of the backward pass.
        done, self.ready = 0, []
        for flop in backward:
            done += flop
            self.ready.append(done / sum(backward))

    def rate_at(self, streams):
        if not self.relative_rates:
            return self.rate
        batches = list(self.relative_rates)
        if streams <= batches[0]:
            return self.rate * self.relative_rates[batches[0]]
        if streams >= batches[-1]:
            return self.rate * self.relative_rates[batches[-1]]
        upper = next(batch for batch in batches if batch >= streams)
        lower = max(batch for batch in batches if batch <= streams)
        if upper == lower:
            return self.rate * self.relative_rates[lower]
        weight = math.log(streams / lower) / math.log(upper / lower)
        return self.rate * ((1 - weight) * self.relative_rates[lower] + weight * self.relative_rates[upper])

    def compute_seconds(self, streams):
        return self.seq * streams / self.rate_at(streams)

    def step_seconds(self, streams, machines, network, bytes_per_value=4, overlap=False):
        _, bandwidth, latency = network
        compute = self.compute_seconds(streams)
        if not overlap:
            return compute + ring_seconds(machines, bytes_per_value * self.parameters, bandwidth, latency)
        # Each part is summed once ready and once the one before it is done: one allreduce at a time.
        backward = self.backward_fraction * compute
        forward = compute - backward
        finished = 0.0
        for (_, size), ready in zip(self.parts, self.ready):
            finished = max(finished, ready * backward) + ring_seconds(machines, bytes_per_value * size, bandwidth, latency)
        return forward + max(backward, finished)

    def strong(self, machines, network, **options):
        """Efficiency at the bench's global batch split over N machines; None where N > batch."""
        if machines > self.batch:
            return None
        streams = math.ceil(self.batch / machines)
        return self.compute_seconds(self.batch) / (machines * self.step_seconds(streams, machines, network, **options))

    def weak(self, machines, network, streams=None, **options):
        streams = streams or self.batch
        return self.compute_seconds(streams) / self.step_seconds(streams, machines, network, **options)

    def strong_batch_for(self, target, machines, network, **options):
        """The smallest global batch (a multiple of N) for which strong scaling reaches the target."""
        for streams in range(1, 100000):
            batch = streams * machines
            one = self.compute_seconds(batch)
            if one / (machines * self.step_seconds(streams, machines, network, **options)) >= target:
                return batch
        return None


def json_objects(path):
    """Every JSON object in a file, whether one a line or several printed one after another."""
    text, decoder, position, objects = open(path, encoding="utf-8").read(), json.JSONDecoder(), 0, []
    while True:
        position = text.find("{", position)
        if position < 0:
            return objects
        value, position = decoder.raw_decode(text, position)
        objects.append(value)


def best_rounds(bench_runs, allreduce_records):
    """One bench run and one allreduce record a size, each the best round, with the spreads over the rounds."""
    bench = dict(bench_runs[0])
    rates = {}
    for run in bench_runs:
        for row in run["models"]:
            rates.setdefault((row["layers"], row["hidden"]), []).append(row["train_chars_per_second"])
    bench["models"] = [dict(row, train_chars_per_second=max(rates[(row["layers"], row["hidden"])]),
                            spread=spread(rates[(row["layers"], row["hidden"])], max))
                       for row in bench_runs[0]["models"]]
    bench["rounds"] = len(bench_runs)
    bench["gemm_gflops"] = max(run["gemm_gflops"] for run in bench_runs)
    by_size = {}
    for record in allreduce_records:
        by_size.setdefault((record["ranks"], record["bytes"]), []).append(record)
    allreduce = []
    for records in by_size.values():
        best = dict(min(records, key=lambda record: record["median_seconds"]))
        best["spread"] = spread([record["median_seconds"] for record in records], min)
        best["min_seconds"] = min(record["min_seconds"] for record in records)
        best["rounds"] = len(records)
        allreduce.append(best)
    return bench, allreduce


def spread(values, best):
    """' (±N%)', N = (best - worst) / best, for a figure of several rounds; '' for one."""
    if len(values) < 2:
        return ""
    worst = min(values) if best is max else max(values)
    value = abs(best(values) - worst) / best(values) * 100
    return f" (±{value:.1f}%)" if value < 1 else f" (±{value:.0f}%)"


def percent(value):
    return "-" if value is None else f"{100 * value:.0f}%"


def milliseconds(seconds):
    return f"{1000 * seconds:.1f}" if seconds < 0.1 else f"{1000 * seconds:.0f}"


def tables(bench, allreduce, batch_rates):
    vocab = bench["vocab_size"]
    models = [Model(row, vocab, batch_rates.get((row["layers"], row["hidden"]))) for row in bench["models"]]
    by_name = {model.name: model for model in models}
    out = []
    add = out.append
    ranks = allreduce[0]["ranks"] if allreduce else 0

    add(f"Compute: `charlm bench --threads {bench['threads']}`, best of {bench['rounds']} round(s) (GEMM {bench['gemm_gflops']:.0f} GFLOP/s through "
        f"{bench['gemm_backend']}), vocabulary {vocab}. Network: assumed, "
        + "; ".join(f"{name} as {bandwidth / 1e9:g} GB/s and {latency * 1e6:g} us a message" for name, bandwidth, latency in NETWORKS)
        + ".\n")
    add("| model | parameters | gradient MB (fp32) | seq x batch | train chars/s | step ms, 1 machine | backward share of FLOP "
        "| allreduce ms at 16, 10 Gbit/s | at 16, 100 Gbit/s |")
    add("|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for model in models:
        size = 4 * model.parameters
        add(f"| lstm {model.name} | {model.parameters:,} | {size / 1e6:.2f} | {model.seq} x {model.batch} | "
            f"{model.rate / 1000:.1f}k{model.spread} | {milliseconds(model.compute_seconds(model.batch))} | "
            f"{percent(model.backward_fraction)} | "
            + " | ".join(milliseconds(ring_seconds(16, size, bandwidth, latency)) for _, bandwidth, latency in NETWORKS)
            + " |")

    if any(model.relative_rates for model in models):
        add("\n### Smaller batches, measured (scripts/bench_batches.sh): train chars/s of one machine "
            "relative to the full batch's\n")
        add("| model | " + " | ".join(f"N={n}" for n in (1,) + MACHINE_COUNTS) + " |")
        add("|---|" + "---:|" * (1 + len(MACHINE_COUNTS)))
        for model in models:
            if model.relative_rates:
                cells = [f"b={math.ceil(model.batch / n)}: {model.rate_at(math.ceil(model.batch / n)) / model.rate:.2f}"
                         if n <= model.batch else "-" for n in (1,) + MACHINE_COUNTS]
                add(f"| lstm {model.name} | " + " | ".join(cells) + " |")
        add("\nb: the streams of one machine under strong scaling at N machines. The model's compute term uses "
            "these, capped at 1.00 (a smaller batch is never taken as faster per character).")

    if allreduce:
        add(f"\n### MPI_Allreduce measured here, {ranks} ranks on one machine (shared memory), "
            f"best median of {allreduce[0]['rounds']} round(s)\n")
        add("| size | what | median us | min us, any round | algorithm GB/s | bus GB/s | CPU share |")
        add("|---:|---|---:|---:|---:|---:|---:|")
        for record in allreduce:
            size = record["bytes"]
            shown = f"{size / 2**20:.2f} MiB" if size >= 2**20 else (f"{size / 1024:.0f} KiB" if size >= 1024 else f"{size:.0f} B")
            add(f"| {shown} | {record['label']} | {record['median_seconds'] * 1e6:.1f}{record['spread']} | "
                f"{record['min_seconds'] * 1e6:.1f} | {record['algorithm_gigabytes_per_second']:.2f} | "
                f"{record['bus_gigabytes_per_second']:.2f} | {100 * record.get('cpu_share', 1):.0f}% |")
        add("\nCPU share: the least share of its core any rank had while timing. A waiting rank polls, so a share "
            "well under 100% means other work had the core, and the figure measures that more than MPI.")

    for model in models:
        add(f"\n### lstm {model.name}: parallel efficiency (seq {model.seq}, batch {model.batch})\n")
        header = "| scaling | network | gradients | " + " | ".join(f"N={n}" for n in MACHINE_COUNTS) + " |"
        add(header)
        add("|---|---|---|" + "---:|" * len(MACHINE_COUNTS))
        for scaling in ("strong", "weak"):
            for network in NETWORKS:
                for label, options in (("fp32", {}), ("fp32, overlapped", {"overlap": True}),
                                       ("bf16, overlapped", {"overlap": True, "bytes_per_value": 2})):
                    method = model.strong if scaling == "strong" else model.weak
                    cells = [percent(method(n, network, **options)) for n in MACHINE_COUNTS]
                    add(f"| {scaling} | {network[0]} | {label} | " + " | ".join(cells) + " |")
        add(f"\nStrong: global batch {model.batch}, ceil({model.batch}/N) streams a machine "
            f"(- where N > {model.batch}). Weak: {model.batch} streams a machine, global batch {model.batch}N.")

    add("\n### Where overlap can hide the allreduce\n")
    add("Each gradient part in the order backward yields it, and the share of the backward pass still to run "
        "once it is ready: the time its allreduce can hide behind.\n")
    add("| model | part | MB (fp32) | backward still to run |")
    add("|---|---|---:|---:|")
    for model in models:
        for (name, size), ready in zip(model.parts, model.ready):
            add(f"| lstm {model.name} | {name} | {4 * size / 1e6:.2f} | {percent(1 - ready)} |")

    network = next(n for n in NETWORKS if n[0] == TARGET["network"])
    machines = TARGET["machines"]
    add(f"\n### A faster node: efficiency at {machines} machines on {network[0]}\n")
    add("The compute term divided by the node's speedup over the measured machine: a larger or quieter node "
        "leaves the network less to hide behind.\n")
    add("| model | scaling | gradients | " + " | ".join(f"x{k}" for k in NODE_SPEEDUPS) + " |")
    add("|---|---|---|" + "---:|" * len(NODE_SPEEDUPS))
    for model in models:
        for scaling in ("strong", "weak"):
            for label, options in (("fp32", {}), ("fp32, overlapped", {"overlap": True})):
                cells = []
                for speedup in NODE_SPEEDUPS:
                    faster = copy.copy(model)
                    faster.rate = model.rate * speedup
                    method = faster.strong if scaling == "strong" else faster.weak
                    cells.append(percent(method(machines, network, **options)))
                add(f"| lstm {model.name} | {scaling} | {label} | " + " | ".join(cells) + " |")

    target = by_name.get(TARGET["model"])
    if target:
        network = next(n for n in NETWORKS if n[0] == TARGET["network"])
        machines, goal = TARGET["machines"], TARGET["efficiency"]
        add(f"\n### The target: lstm {target.name} at {machines} machines on {network[0]}, {percent(goal)} or better\n")
        add("| setting | efficiency | meets it |")
        add("|---|---:|---|")
        at_full_speed = copy.copy(target)
        at_full_speed.relative_rates = {}
        rows = [
            (f"weak, {target.batch} streams a machine, fp32", target.weak(machines, network)),
            (f"weak, {target.batch} streams a machine, fp32, overlapped", target.weak(machines, network, overlap=True)),
            (f"strong, global batch {target.batch}, fp32", target.strong(machines, network)),
            (f"strong, global batch {target.batch}, fp32, overlapped", target.strong(machines, network, overlap=True)),
            (f"strong, global batch {target.batch}, bf16, overlapped",
             target.strong(machines, network, overlap=True, bytes_per_value=2)),
        ]
        if target.relative_rates:
            rows.append((f"strong, global batch {target.batch}, fp32, small batches as fast as the full one",
                         at_full_speed.strong(machines, network)))
        for label, value in rows:
            add(f"| {label} | {percent(value)} | {'yes' if value is not None and value >= goal else 'no'} |")
        add(f"\nThe smallest global batch (a multiple of {machines}) for which strong scaling reaches it:\n")
        add("| gradients | global batch | streams a machine |")
        add("|---|---:|---:|")
        for label, options in (("fp32", {}), ("fp32, overlapped", {"overlap": True}),
                               ("bf16, overlapped", {"overlap": True, "bytes_per_value": 2})):
            batch = target.strong_batch_for(goal, machines, network, **options)
            add(f"| {label} | {batch or '-'} | {batch // machines if batch else '-'} |")
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bench_json")
    parser.add_argument("allreduce_json")
    parser.add_argument("--batch-rates", metavar="BATCHES_JSON", help="JSON lines of scripts/bench_batches.sh")
    parser.add_argument("--write", metavar="MARKDOWN", help="replace the tables between the marker lines of this file")
    arguments = parser.parse_args()
    bench, allreduce = best_rounds(json_objects(arguments.bench_json), json_objects(arguments.allreduce_json))
    batch_rates = {}  # (layers, hidden) -> {batch: best train chars/s}
    if arguments.batch_rates:
        for record in json_objects(arguments.batch_rates):
            rates = batch_rates.setdefault((record["layers"], record["hidden"]), {})
            rates[record["batch"]] = max(rates.get(record["batch"], 0), record["train_chars_per_second"])
    text = tables(bench, allreduce, batch_rates)
    if not arguments.write:
        sys.stdout.write(text)
        return
    document = open(arguments.write, encoding="utf-8").read()
    if BEGIN not in document or END not in document:
        sys.exit(f"scale_model.py: {arguments.write} lacks the marker lines {BEGIN} and {END}")
    head, rest = document.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(arguments.write, "w", encoding="utf-8") as file:
        file.write(head + BEGIN + "\n" + text + END + tail)


if __name__ == "__main__":
    main()
