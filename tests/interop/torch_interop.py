#!/usr/bin/env python3
"""Loads a charlm checkpoint into PyTorch's own nn.Embedding / nn.LSTM|GRU|RNN / nn.Linear and checks that
PyTorch computes the same logits as charlm (dump_logits) and the same loss as `charlm eval`.

Usage: torch_interop.py CHARLM_BINARY DUMP_LOGITS_BINARY CHECKPOINT TEXT_FILE
Exit codes: 0 agreement, 1 disagreement or error, 77 PyTorch missing (ctest's SKIP_RETURN_CODE).
"""
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

try:
    import torch
    from torch import nn
except ImportError:
    print("SKIPPED: PyTorch is not installed (apt-get install python3-torch)")
    sys.exit(77)

LOGIT_TOLERANCE = 1e-4
NATS_TOLERANCE = 1e-5


def read_safetensors(path):
    """A reader of our own (not the safetensors package), so that the format itself is what is tested."""
    with open(path, "rb") as file:
        data = file.read()
    (header_length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_length])
    metadata = header.pop("__metadata__", {})
    body = data[8 + header_length:]
    tensors = {}
    for name, entry in header.items():
        assert entry["dtype"] == "F32", f"{name}: dtype {entry['dtype']}"
        begin, end = entry["data_offsets"]
        values = torch.frombuffer(bytearray(body[begin:end]), dtype=torch.float32)
        tensors[name] = values.reshape(entry["shape"])
    return metadata, tensors


class CharModel(nn.Module):
    """The same network as charlm's Model, with PyTorch's stock layers; attribute names match the tensor names."""

    def __init__(self, cell, vocab_size, embed_size, hidden_size, layers):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_size)
        if cell == "lstm":
            self.rnn = nn.LSTM(embed_size, hidden_size, layers)
        elif cell == "gru":
            self.rnn = nn.GRU(embed_size, hidden_size, layers)
        elif cell == "rnn":
            self.rnn = nn.RNN(embed_size, hidden_size, layers, nonlinearity="tanh")
        else:
            raise ValueError(f"unknown cell {cell!r}")
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, ids):  # ids: T -> logits T x V, one stream from the zero state
        output, _ = self.rnn(self.embedding(ids).unsqueeze(1))
        return self.head(output.squeeze(1))


def load_model(checkpoint_path):
    """The checkpoint's config, vocabulary and network in eval mode, loaded strictly: every name and shape
    must match, both ways, once what training keeps beside the weights (optimizer., state., average.) is
    left out."""
    metadata, tensors = read_safetensors(checkpoint_path)
    config = json.loads(metadata["config"])
    vocab = json.loads(metadata["vocab"])
    model = CharModel(config["cell"], config["vocab_size"], config["embed_size"], config["hidden_size"], config["layers"])
    model.load_state_dict({name: value for name, value in tensors.items()
                           if not name.startswith(("optimizer.", "state.", "average."))}, strict=True)
    model.eval()
    return config, vocab, model


def main():
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        return 1
    charlm_binary, dump_logits_binary, checkpoint_path, text_path = sys.argv[1:]
    torch.set_num_threads(1)
    config, vocab, model = load_model(checkpoint_path)

    with open(text_path, "rb") as file:
        text = file.read().decode("utf-8")
    if text.startswith("\ufeff"):
        text = text[1:]
    id_of = {code_point: index for index, code_point in enumerate(vocab)}
    unknown = sorted({character for character in text if ord(character) not in id_of})
    assert not unknown, f"characters outside the vocabulary: {unknown}"
    ids = torch.tensor([id_of[ord(character)] for character in text], dtype=torch.long)
    with torch.no_grad():
        torch_logits = model(ids)

    with tempfile.TemporaryDirectory() as directory:
        logits_path = os.path.join(directory, "logits.f32")
        subprocess.run([dump_logits_binary, checkpoint_path, text_path, logits_path], check=True, stdout=subprocess.DEVNULL)
        with open(logits_path, "rb") as file:
            charlm_logits = torch.frombuffer(bytearray(file.read()), dtype=torch.float32)
    charlm_logits = charlm_logits.reshape(len(ids), len(vocab))
    logit_difference = (charlm_logits.double() - torch_logits.double()).abs().max().item()

    # Mean cross-entropy of predicting each next character, in double as charlm sums it.
    torch_nats = nn.functional.cross_entropy(torch_logits[:-1].double(), ids[1:]).item()
    evaluation = subprocess.run([charlm_binary, "eval", checkpoint_path, text_path, "--json", "--threads", "1"],
                                check=True, capture_output=True, text=True)
    result = json.loads(evaluation.stdout)
    nats_difference = abs(result["nats_per_character"] - torch_nats)

    name = os.path.basename(checkpoint_path)
    print(f"{name}: {config['cell']} {config['layers']}x{config['hidden_size']} (embed {config['embed_size']}, "
          f"vocab {config['vocab_size']}), {len(ids)} characters")
    print(f"  max |logit difference| = {logit_difference:.3e} (tolerance {LOGIT_TOLERANCE:g})")
    print(f"  nats/char: charlm {result['nats_per_character']:.8f}, PyTorch {torch_nats:.8f}, "
          f"|difference| = {nats_difference:.3e} (tolerance {NATS_TOLERANCE:g})")
    failures = []
    if result["characters_scored"] != len(ids) - 1 or result["unknown_characters"] != 0:
        failures.append(f"charlm eval scored {result['characters_scored']} characters "
                        f"({result['unknown_characters']} unknown); expected {len(ids) - 1}")
    if not logit_difference < LOGIT_TOLERANCE:
        failures.append("logits differ")
    if not nats_difference < NATS_TOLERANCE:
        failures.append("cross-entropy differs")
    if not math.isfinite(torch_nats):
        failures.append("PyTorch's loss is not finite")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
