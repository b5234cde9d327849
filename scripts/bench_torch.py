#!/usr/bin/python3
"""Peer benchmark: the same character-level LSTM language model in PyTorch (CPU, fp32, or bf16 autocast with
--autocast bf16), to compare charlm against.

Model: Embedding(V, E) -> LSTM(E, H, L) -> Linear(H, V); Adam, gradient clipping at norm 5, cross entropy.

Speed mode (default) prints one JSON line with
  train_cps     : full training steps (forward, backward, clip, Adam step) over a seq x batch window, hidden
                  state carried (detached) between windows, random token ids;
  eval_cps      : no_grad forward over seq x batch including the output layer and the loss;
  sample_b1_cps : batch 1, one character at a time with carried state, softmax + torch.multinomial.
Quality mode (--quality CORPUS --minutes M) trains on a text file for M minutes of wall clock (evaluation
included) and prints the best validation loss in nats per character.

Threads: --threads N gives N threads to OpenBLAS (OPENBLAS_NUM_THREADS, set before torch loads; a value already in
the environment wins), which does all the matrix products of Debian's torch (BLAS_INFO=generic -> OpenBLAS pthreads).
torch's own OpenMP pool (torch.set_num_threads) gets --torch-threads, default 1: on this 2-core machine two spinning
OpenMP threads plus two OpenBLAS threads halve training speed (2x128: 13k vs 27k chars/s), and torch=1/BLAS=2 was the
fastest or level with the fastest of the splits tried (torch 2 / BLAS 1, torch 2 / BLAS 2 with OMP_WAIT_POLICY=passive).

Run with the system interpreter that has python3-torch:  /usr/bin/python3 scripts/bench_torch.py --help
"""
import argparse
import json
import math
import os
import sys
import time


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--embed", type=int, default=64)
    parser.add_argument("--seq", type=int, default=50)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--vocab", type=int, default=65, help="vocabulary size for the speed mode")
    parser.add_argument("--threads", type=int, default=2, help="OpenBLAS threads (the cores used)")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch's own OpenMP threads")
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per speed figure")
    parser.add_argument("--autocast", choices=("fp32", "bf16"), default="fp32",
                        help="bf16: forward passes under torch.autocast('cpu', dtype=torch.bfloat16), as a user would "
                             "train in bf16 (weights, optimizer and loss stay fp32)")
    parser.add_argument("--quality", metavar="CORPUS", help="train on this text file and report validation loss")
    parser.add_argument("--minutes", type=float, default=10.0, help="quality mode: wall-clock training budget")
    parser.add_argument("--eval-every", type=int, default=100, help="quality mode: steps between evaluations")
    return parser.parse_args()


ARGUMENTS = parse_arguments()
os.environ.setdefault("OPENBLAS_NUM_THREADS", str(ARGUMENTS.threads))  # must precede loading torch (and OpenBLAS)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


class CharModel(nn.Module):
    def __init__(self, vocab, embed, hidden, layers, dropout=0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, layers, dropout=dropout, batch_first=False)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens, state=None):
        output, state = self.lstm(self.embedding(tokens), state)
        return self.head(output), state


def detached(state):
    return tuple(s.detach().float() for s in state)  # fp32, as the next window's autocast expects it


def precision_scope():
    """The forward pass's precision: autocast to bf16 under --autocast bf16, else fp32 as it is."""
    import contextlib
    if ARGUMENTS.autocast == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(model, optimizer, inputs, targets, state):
    with precision_scope():
        logits, state = model(inputs, state)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    optimizer.step()
    return loss.item(), detached(state)


def seconds_per_call(run, seconds):
    """Seconds per call of run(), after a warm-up of about a tenth of the budget (at least 3 calls)."""
    start = time.perf_counter()
    calls = 0
    while calls < 3 or time.perf_counter() - start < 0.1 * seconds:
        run()
        calls += 1
    start, calls = time.perf_counter(), 0
    while True:
        run()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / calls


def measure_speed(args):
    torch.manual_seed(0)
    model = CharModel(args.vocab, args.embed, args.hidden, args.layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    inputs = torch.randint(args.vocab, (args.seq, args.batch))
    targets = torch.randint(args.vocab, (args.seq, args.batch))
    chars = args.seq * args.batch

    carried = {"state": None}

    def train():
        _, carried["state"] = train_step(model, optimizer, inputs, targets, carried["state"])

    model.train()
    train_seconds = seconds_per_call(train, args.seconds)

    model.eval()

    def evaluate():
        with torch.no_grad(), precision_scope():
            logits, _ = model(inputs)
        F.cross_entropy(logits.float().reshape(-1, args.vocab), targets.reshape(-1)).item()

    eval_seconds = seconds_per_call(evaluate, args.seconds)

    sampler = {"token": torch.zeros(1, 1, dtype=torch.long), "state": None}

    def sample_one():
        with torch.no_grad(), precision_scope():
            logits, state = model(sampler["token"], sampler["state"])
        with torch.no_grad():
            sampler["state"] = tuple(s.float() for s in state)
            probabilities = torch.softmax(logits[0, 0].float(), dim=-1)
            sampler["token"] = torch.multinomial(probabilities, 1).view(1, 1)

    sample_seconds = seconds_per_call(sample_one, args.seconds)

    print(json.dumps({
        "peer": "pytorch", "model": f"{args.layers}x{args.hidden}", "layers": args.layers, "hidden": args.hidden,
        "embed": args.embed, "vocab": args.vocab, "seq": args.seq, "batch": args.batch, **thread_fields(args),
        "torch": torch.__version__, "precision": args.autocast,
        "train_cps": round(chars / train_seconds), "eval_cps": round(chars / eval_seconds),
        "sample_b1_cps": round(1.0 / sample_seconds),
    }), flush=True)


def streams(ids, batch):
    """Cut a 1-D id tensor into `batch` contiguous streams, shape (length, batch)."""
    length = len(ids) // batch
    return ids[: length * batch].view(batch, length).t().contiguous()


def validation_loss(model, data, seq):
    """Mean cross entropy (nats/char) over all of `data` (length x streams), hidden state carried."""
    model.eval()
    total, count, state = 0.0, 0, None
    with torch.no_grad():
        for start in range(0, data.shape[0] - 1, seq):
            inputs = data[start: start + seq]
            targets = data[start + 1: start + 1 + seq]
            inputs = inputs[: targets.shape[0]]
            logits, state = model(inputs, state)
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                     reduction="sum").item()
            count += targets.numel()
    model.train()
    return total / count


def measure_quality(args):
    torch.manual_seed(0)
    with open(args.quality, encoding="utf-8") as f:
        text = f.read()
    vocabulary = sorted(set(text))
    index = {c: i for i, c in enumerate(vocabulary)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.long)
    split = int(len(ids) * 0.95)
    train_data = streams(ids[:split], args.batch)
    validation_data = streams(ids[split:], args.batch)

    model = CharModel(len(vocabulary), args.embed, args.hidden, args.layers, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()

    budget = args.minutes * 60.0
    start = time.perf_counter()
    best, history, step, position, state = math.inf, [], 0, 0, None
    while True:
        if position + args.seq + 1 > train_data.shape[0]:  # end of the streams: wrap around, fresh state
            position, state = 0, None
        inputs = train_data[position: position + args.seq]
        targets = train_data[position + 1: position + 1 + args.seq]
        loss, state = train_step(model, optimizer, inputs, targets, state)
        position += args.seq
        step += 1
        out_of_time = time.perf_counter() - start >= budget
        if step % args.eval_every == 0 or out_of_time:
            validation = validation_loss(model, validation_data, args.seq)
            best = min(best, validation)
            elapsed = time.perf_counter() - start
            history.append([step, round(elapsed, 1), round(loss, 4), round(validation, 4)])
            print(f"step {step} {elapsed:.0f}s train {loss:.4f} validation {validation:.4f}", file=sys.stderr)
        if out_of_time:
            break

    print(json.dumps({
        "peer": "pytorch", "mode": "quality", "model": f"{args.layers}x{args.hidden}", "layers": args.layers,
        "hidden": args.hidden, "embed": args.embed, "vocab": len(vocabulary), "seq": args.seq, "batch": args.batch,
        **thread_fields(args), "minutes": args.minutes, "steps": step, "chars_trained": step * args.seq * args.batch,
        "best_validation_loss": round(best, 4), "history": history,
    }), flush=True)


def thread_fields(args):
    return {"threads": args.threads, "blas_threads": int(os.environ["OPENBLAS_NUM_THREADS"]),
            "torch_threads": torch.get_num_threads()}


def main():
    args = ARGUMENTS
    torch.set_num_threads(args.torch_threads)
    if args.quality:
        measure_quality(args)
    else:
        measure_speed(args)


if __name__ == "__main__":
    main()
