#!/usr/bin/python3
"""Turns the JSON lines of scripts/bench.sh (charlm bench --json, the oneDNN peer, bench_torch.py) into
markdown tables: per thread count, training, evaluation and batch-1 sampling in characters per second,
with charlm's ratio to each peer (above 1: charlm is faster); where there are bf16 rows (charlm bench
--precision bf16, bench_torch.py --autocast bf16), a table of them against charlm's fp32 and PyTorch's autocast. Where scripts/bench.sh ran several rounds,
each figure is its best round: on a shared machine other work only ever slows a measurement down, so the
fastest round is the closest to what the code can do, for every program alike. Beside each measured
figure, its spread over the rounds, (best - worst) / best: how far one round can be trusted, and so how
large a ratio between two programs must be to mean anything."""
import json
import sys


SPEEDS = ("_cps", "_per_second", "gflops")


def keep_best(table, key, record):
    """Merges a round's record into table[key]: the highest of each speed, and the highest peak memory;
    every round's speeds are kept too, under "rounds", for their spread."""
    best = table.setdefault(key, dict(record))
    rounds = best.setdefault("rounds", {})
    for field, value in record.items():
        if field.endswith(SPEEDS) or field == "peak_rss_megabytes":
            best[field] = max(best.get(field, value), value)
            if field != "peak_rss_megabytes":
                rounds.setdefault(field, []).append(value)


def spread(record, field):
    """' (±N%)' for a figure measured in several rounds, N = (best - worst) / best; '' for one round."""
    values = record.get("rounds", {}).get(field, [])
    if len(values) < 2 or not max(values):
        return ""
    percent = 100 * (max(values) - min(values)) / max(values)
    return f" (±{percent:.1f}%)" if percent < 1 else f" (±{percent:.0f}%)"


def main(path):
    charlm, onednn, torch, gemm = {}, {}, {}, {}
    rounds = {}
    flop_counted = ""
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if "models" in record:  # charlm bench
            threads = record["threads"]
            precisions = {row.get("precision", "fp32") for row in record["models"]}
            if "fp32" in precisions or not precisions:
                rounds[threads] = rounds.get(threads, 0) + 1
            for row in record["models"]:
                keep_best(charlm, (threads, f"{row['layers']}x{row['hidden']}", row.get("precision", "fp32")), row)
            peaks = {"backend": record["gemm_backend"], "gemm_gflops": record["gemm_gflops"]}
            if record.get("bf16_gemm_gflops"):
                peaks["bf16_gemm_gflops"] = record["bf16_gemm_gflops"]
            keep_best(gemm, ("charlm", threads), peaks)
            flop_counted = record.get("flop_counted", flop_counted)
        elif record.get("peer") == "onednn" and "gemm_gflops" in record:
            keep_best(gemm, ("onednn", record["threads"]), record)
        elif record.get("peer") == "onednn":
            keep_best(onednn, (record["threads"], record["model"]), record)
        elif record.get("peer") == "pytorch":
            keep_best(torch, (record["threads"], record["model"], record.get("precision", "fp32")), record)

    def ratio(ours, theirs):
        return f"{ours / theirs:.2f}x" if ours and theirs else "-"

    def count(value):
        return f"{value / 1000:.1f}k" if value else "-"

    def figure(record, field):
        """A measured speed in thousands, with its spread over the rounds."""
        return count(record.get(field)) + spread(record, field) if record.get(field) else "-"

    for threads in sorted({threads for threads, _, _ in charlm}):
        ours = gemm.get(("charlm", threads), {"backend": "?", "gemm_gflops": 0})
        theirs = gemm.get(("onednn", threads), {"gemm_gflops": 0})
        best_of = f", best of {rounds[threads]} rounds" if rounds[threads] > 1 else ""
        print(f"\n### {threads} thread{'s' if threads > 1 else ''}: characters per second{best_of} (GEMM 2048^3: "
              f"charlm via {ours['backend']} {ours['gemm_gflops']:.0f} GFLOP/s{spread(ours, 'gemm_gflops')}, "
              f"oneDNN {theirs['gemm_gflops']:.0f} GFLOP/s{spread(theirs, 'gemm_gflops')})\n")
        print("| model | seq x batch | train: charlm | oneDNN LSTM | ratio | PyTorch | ratio | GFLOP/s | of GEMM peak | peak MB |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        models = [model for t, model, precision in charlm if t == threads and precision == "fp32"]
        for model in models:
            row, peer, py = charlm[(threads, model, "fp32")], onednn.get((threads, model), {}), torch.get((threads, model, "fp32"), {})
            print(f"| {model} | {row['seq']} x {row['batch']} | {figure(row, 'train_chars_per_second')} | "
                  f"{figure(peer, 'train_cps')} | {ratio(row['train_chars_per_second'], peer.get('train_cps'))} | "
                  f"{figure(py, 'train_cps')} | {ratio(row['train_chars_per_second'], py.get('train_cps'))} | "
                  f"{row['train_gflops']:.0f}{spread(row, 'train_gflops')} | "
                  f"{100 * row['train_gflops'] / ours['gemm_gflops']:.0f}% | {row['peak_rss_megabytes']:.0f} |")
        print("\n| model | eval: charlm | oneDNN forward | ratio | PyTorch | ratio | sample b1: charlm | oneDNN step loop | ratio | PyTorch | ratio |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for model in models:
            row, peer, py = charlm[(threads, model, "fp32")], onednn.get((threads, model), {}), torch.get((threads, model, "fp32"), {})
            print(f"| {model} | {figure(row, 'eval_chars_per_second')} | {figure(peer, 'forward_cps')} | "
                  f"{ratio(row['eval_chars_per_second'], peer.get('forward_cps'))} | {figure(py, 'eval_cps')} | "
                  f"{ratio(row['eval_chars_per_second'], py.get('eval_cps'))} | {figure(row, 'sample_chars_per_second')} | "
                  f"{figure(peer, 'step1_cps')} | {ratio(row['sample_chars_per_second'], peer.get('step1_cps'))} | "
                  f"{figure(py, 'sample_b1_cps')} | {ratio(row['sample_chars_per_second'], py.get('sample_b1_cps'))} |")
        bf16_models = [model for t, model, precision in charlm if t == threads and precision == "bf16"]
        if not bf16_models:
            continue
        peak = ours.get("bf16_gemm_gflops", 0)
        print(f"\n#### {threads} thread{'s' if threads > 1 else ''} at bf16 (GEMM 2048^3 in bf16 with fp32 sums: "
              f"{peak:.0f} GFLOP/s{spread(ours, 'bf16_gemm_gflops')}; fp32: {ours['gemm_gflops']:.0f})\n")
        print("| model | train: charlm bf16 | charlm fp32 | ratio | PyTorch bf16 autocast | ratio | GFLOP/s | of bf16 GEMM peak "
              "| peak MB | of fp32's |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for model in bf16_models:
            row, fp32, py = charlm[(threads, model, "bf16")], charlm.get((threads, model, "fp32"), {}), torch.get((threads, model, "bf16"), {})
            memory = ratio(row["peak_rss_megabytes"], fp32.get("peak_rss_megabytes"))
            print(f"| {model} | {figure(row, 'train_chars_per_second')} | {figure(fp32, 'train_chars_per_second')} | "
                  f"{ratio(row['train_chars_per_second'], fp32.get('train_chars_per_second'))} | {figure(py, 'train_cps')} | "
                  f"{ratio(row['train_chars_per_second'], py.get('train_cps'))} | {row['train_gflops']:.0f} | "
                  f"{100 * row['train_gflops'] / peak:.0f}% | {row['peak_rss_megabytes']:.0f} | {memory} |" if peak else "")
        print("\n| model | eval: charlm bf16 | charlm fp32 | ratio | PyTorch bf16 | ratio | sample b1: charlm bf16 | charlm fp32 "
              "| ratio | PyTorch bf16 | ratio |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for model in bf16_models:
            row, fp32, py = charlm[(threads, model, "bf16")], charlm.get((threads, model, "fp32"), {}), torch.get((threads, model, "bf16"), {})
            print(f"| {model} | {figure(row, 'eval_chars_per_second')} | {figure(fp32, 'eval_chars_per_second')} | "
                  f"{ratio(row['eval_chars_per_second'], fp32.get('eval_chars_per_second'))} | {figure(py, 'eval_cps')} | "
                  f"{ratio(row['eval_chars_per_second'], py.get('eval_cps'))} | {figure(row, 'sample_chars_per_second')} | "
                  f"{figure(fp32, 'sample_chars_per_second')} | "
                  f"{ratio(row['sample_chars_per_second'], fp32.get('sample_chars_per_second'))} | "
                  f"{figure(py, 'sample_b1_cps')} | {ratio(row['sample_chars_per_second'], py.get('sample_b1_cps'))} |")
    print("\noneDNN times the bare LSTM stack (no embedding, output layer, loss or optimizer); charlm and PyTorch "
          "time the whole step.")
    if flop_counted:
        print(f"charlm's GFLOP/s counts {flop_counted}.")
    if any(count > 1 for count in rounds.values()):
        print("(±N%): the figure's spread over the rounds, (best - worst) / best; the figure is the best round, "
              "and ratios are of best rounds.")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: bench_table.py RESULTS.jsonl")
    main(sys.argv[1])
