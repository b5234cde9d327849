#!/usr/bin/env python3
"""Replays charlm's sampling in PyTorch step by step: a checkpoint loaded into nn.Embedding / nn.LSTM|GRU|RNN /
nn.Linear, primed with the same prompt, must give at every step the distribution charlm drew from (temperature,
top-k, top-p, renormalised, worked out here from PyTorch's logits), and the uniform draw charlm used must pick the
same character from it; PyTorch is then fed that character. Greedy steps must take PyTorch's most likely
character. The text is also what 'charlm sample' prints for the same seed and options.

Usage: torch_sample.py CHARLM_BINARY DUMP_SAMPLE_BINARY CHECKPOINT
Exit codes: 0 agreement, 1 disagreement or error, 77 PyTorch missing (ctest's SKIP_RETURN_CODE).
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_interop import load_model, torch  # exits 77 where PyTorch is missing

PROBABILITY_TOLERANCE = 1e-4
# A draw this close to a boundary of the cumulative distribution, or a top-p cut this close to p, may fall
# on either side between float32 and float64 logits: noted, not counted as a disagreement.
BOUNDARY_TOLERANCE = 1e-5
LENGTH = 60

# (name, prompt, seed, options): greedy, and draws with temperature, top-k and top-p at ordinary values.
CASES = [
    ("greedy", "Line 4: the ", 1, ["--greedy"]),
    ("temperature 0.8, top-k 5", "Line 7: the naïve café", 11, ["--temperature", "0.8", "--top-k", "5"]),
    ("temperature 1.3, top-p 0.9", "Line 2", 12, ["--temperature", "1.3", "--top-p", "0.9"]),
    ("top-k 8, top-p 0.8, empty prompt", "", 13, ["--top-k", "8", "--top-p", "0.8"]),
    ("temperature 1", "κόσμε", 14, []),
]


def option(options, name, default):
    return float(options[options.index(name) + 1]) if name in options else default


def truncated_distribution(logits, options):
    """The distribution to draw from, in float64: tempered softmax weights; the top-k heaviest (ties by id);
    of those, the smallest prefix whose weight reaches top_p of theirs; renormalised. Returns the kept ids in
    the order the draw walks them (most likely first where anything is cut, else by id), their weights, and
    how close the top-p cut came to p (for the boundary note)."""
    temperature = option(options, "--temperature", 1.0)
    top_k = int(option(options, "--top-k", 0))
    top_p = option(options, "--top-p", 1.0)
    logits = logits.double()
    weights = torch.exp((logits - logits.max()) / temperature)
    # Where nothing is cut, charlm draws in id order and sorts nothing.
    cutting = top_k > 0 or top_p < 1
    order = torch.sort(weights, descending=True, stable=True).indices.tolist() if cutting else list(range(len(weights)))
    kept = order[:top_k] if top_k > 0 else order
    kept_weight = sum(weights[i].item() for i in kept)
    margin = float("inf")
    if top_p < 1:
        running = 0.0
        for position, token in enumerate(kept):
            running += weights[token].item()
            margin = min(margin, abs(running - top_p * kept_weight) / kept_weight)
            if running >= top_p * kept_weight:
                kept = kept[:position + 1]
                break
    return kept, [weights[i].item() for i in kept], margin


def replay(model, vocab, prompt, steps, options):
    """Returns (failures, notes) of a step-by-step comparison with charlm's dump."""
    id_of = {code_point: index for index, code_point in enumerate(vocab)}
    # charlm primes an empty prompt with a line break (or the first character where there is none).
    prompt_ids = [id_of[ord(c)] for c in prompt] if prompt else [id_of.get(ord("\n"), 0)]
    failures, notes = [], []
    state = None
    with torch.no_grad():
        def feed(token):
            nonlocal state
            output, state = model.rnn(model.embedding(torch.tensor([[token]])), state)
            return model.head(output[0, 0])

        for token in prompt_ids:
            logits = feed(token)
        for number, step in enumerate(steps):
            charlm_distribution = torch.tensor(step["distribution"], dtype=torch.float64)
            chosen = step["chosen"]
            if "--greedy" in options:
                expected = int(torch.argmax(logits).item())
                top_two = torch.topk(logits.double(), 2).values
                if chosen != expected:
                    (notes if (top_two[0] - top_two[1]).item() < BOUNDARY_TOLERANCE else failures).append(
                        f"step {number}: charlm took id {chosen}, PyTorch's most likely is {expected}")
            else:
                kept, weights, margin = truncated_distribution(logits, options)
                total = sum(weights)
                torch_distribution = torch.zeros(len(vocab), dtype=torch.float64)
                for token, weight in zip(kept, weights):
                    torch_distribution[token] = weight / total
                difference = (torch_distribution - charlm_distribution).abs().max().item()
                same_support = set(kept) == set(torch.nonzero(charlm_distribution).flatten().tolist())
                if not same_support:
                    (notes if margin < BOUNDARY_TOLERANCE else failures).append(
                        f"step {number}: charlm kept {sorted(torch.nonzero(charlm_distribution).flatten().tolist())}, "
                        f"PyTorch {sorted(kept)}")
                elif difference >= PROBABILITY_TOLERANCE:
                    failures.append(f"step {number}: distributions differ by {difference:.3e}")
                # The same uniform, by inverse CDF over the kept ids in charlm's order.
                target, picked, nearest = step["uniform"] * total, kept[-1], float("inf")
                for token, weight in zip(kept, weights):
                    target -= weight
                    nearest = min(nearest, abs(target) / total)
                    if target < 0:
                        picked = token
                        break
                if picked != chosen:
                    (notes if nearest < BOUNDARY_TOLERANCE else failures).append(
                        f"step {number}: uniform {step['uniform']:.6f} picks id {picked} in PyTorch, {chosen} in charlm")
            logits = feed(chosen)
    return failures, notes


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 1
    charlm_binary, dump_sample_binary, checkpoint_path = sys.argv[1:]
    torch.set_num_threads(1)
    config, vocab, model = load_model(checkpoint_path)

    name = os.path.basename(checkpoint_path)
    all_failures = []
    with tempfile.TemporaryDirectory() as directory:
        for case, prompt, seed, options in CASES:
            steps_path = os.path.join(directory, "steps.json")
            subprocess.run([dump_sample_binary, checkpoint_path, prompt, str(LENGTH), str(seed), steps_path, *options],
                           check=True)
            with open(steps_path, encoding="utf-8") as file:
                dump = json.load(file)
            failures, notes = replay(model, vocab, prompt, dump["steps"], options)
            # The CLI draws the same text from the same seed and options.
            sampled = subprocess.run([charlm_binary, "sample", checkpoint_path, "--prompt", prompt, "--length", str(LENGTH),
                                      "--seed", str(seed), "--threads", "1", *options],
                                     check=True, capture_output=True, text=True).stdout
            if sampled != prompt + dump["text"] + "\n":
                failures.append(f"'charlm sample' printed {sampled!r}, the steps say {prompt + dump['text']!r}")
            print(f"{name}: {config['cell']}, {case}: {len(dump['steps'])} steps, "
                  f"{'agree' if not failures else f'{len(failures)} disagreements'}"
                  f"{f' ({len(notes)} on a float boundary)' if notes else ''}")
            for line in notes:
                print(f"  note: {line}")
            all_failures += [f"{case}: {failure}" for failure in failures]
    for failure in all_failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if all_failures else 0


if __name__ == "__main__":
    sys.exit(main())
