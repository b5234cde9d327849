#!/usr/bin/env python3
"""Checks scripts/bench_table.py: each figure is its best round, with its spread over the rounds beside it,
and charlm's GFLOP/s is said to count what it counts. Run by ctest as bench_table."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts", "bench_table.py")


def charlm_round(train, evaluate, sample, gemm):
    return {"threads": 2, "gemm_backend": "oneDNN", "gemm_gflops": gemm, "flop_counted": "what the test says",
            "models": [{"model": "lstm 2x128", "layers": 2, "hidden": 128, "seq": 50, "batch": 50,
                        "train_chars_per_second": train, "eval_chars_per_second": evaluate,
                        "sample_chars_per_second": sample, "train_gflops": train * 1.2e-3,
                        "peak_rss_megabytes": 70}]}


def onednn_round(train):
    return {"peer": "onednn", "model": "2x128", "threads": 2, "train_cps": train, "forward_cps": 400000,
            "step1_cps": 90000, "train_gflops": 100}


def table(*records):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as file:
        for record in records:
            file.write(json.dumps(record) + "\n")
    try:
        return subprocess.run([sys.executable, SCRIPT, file.name], check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(file.name)


class BenchTable(unittest.TestCase):
    def test_three_rounds_show_the_best_and_the_spread(self):
        out = table(charlm_round(200000, 600000, 130000, 160), onednn_round(150000),
                    charlm_round(208000, 590000, 130000, 164), onednn_round(140000),
                    charlm_round(204000, 540000, 130000, 162), onednn_round(147000))
        self.assertIn("best of 3 rounds", out)
        self.assertIn("| 208.0k (±4%) |", out)    # train: best 208k, worst 200k
        self.assertIn("| 150.0k (±7%) |", out)    # oneDNN: best 150k, worst 140k
        self.assertIn("| 600.0k (±10%) |", out)   # eval: best 600k, worst 540k
        self.assertIn("| 130.0k (±0.0%) |", out)  # sample: the same every round
        self.assertIn("164 GFLOP/s (±2%)", out)   # the GEMM peak
        self.assertIn("1.39x", out)               # ratios are of the best rounds: 208 / 150
        self.assertIn("counts what the test says", out)
        self.assertIn("(best - worst) / best", out)

    def test_one_round_shows_no_spread(self):
        out = table(charlm_round(200000, 600000, 130000, 160), onednn_round(150000))
        self.assertNotIn("±", out)
        self.assertIn("| 200.0k |", out)


if __name__ == "__main__":
    unittest.main()
