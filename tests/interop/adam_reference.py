#!/usr/bin/env python3
"""Prints the reference values of tests/test_optim.cpp's Optim.AdamFollowsPyTorchOverStepsOfVariedGradients:
torch.optim.Adam with non-default betas and epsilon, over five steps of varied gradients and learning rates, in
float64. Run once with /usr/bin/python3 (Debian's python3-torch) and pasted into the test; run again to check."""
import math

import torch

BETAS = (0.8, 0.95)
EPSILON = 1e-6
RATES = [0.1, 0.05, 0.2, 0.1, 0.03]
SHAPES = [(2, 3), (4, 1)]

torch.set_default_dtype(torch.float64)
parameters = [torch.nn.Parameter(torch.tensor([[0.5 - 0.25 * (r * c_count + c) for c in range(c_count)] for r in range(rows)]))
              for rows, c_count in SHAPES]
start = [p.detach().clone() for p in parameters]
optimizer = torch.optim.Adam(parameters, lr=RATES[0], betas=BETAS, eps=EPSILON)


def gradient(step, index, shape):
    """Varied in sign and in size, several decades apart, from step to step and element to element."""
    rows, columns = shape
    return torch.tensor([[round(math.sin(1.7 * (r * columns + c) + 2.3 * step + index) * 10 ** ((r + c + step) % 3 - 1), 6)
                          for c in range(columns)] for r in range(rows)])


def cpp(tensor):
    return "{" + ", ".join(f"{x:.9g}" for x in tensor.flatten().tolist()) + "}"


gradients, values = [], []
for step, rate in enumerate(RATES):
    for group in optimizer.param_groups:
        group["lr"] = rate
    for index, parameter in enumerate(parameters):
        parameter.grad = gradient(step, index, SHAPES[index])
    gradients.append([cpp(p.grad) for p in parameters])
    optimizer.step()
    values.append([cpp(p.detach()) for p in parameters])

print("// Made by tests/interop/adam_reference.py (torch", torch.__version__ + ")")
print("const std::vector<std::vector<float>> kStart = {" + ", ".join(cpp(s) for s in start) + "};")
print("const std::vector<double> kRates = {" + ", ".join(str(r) for r in RATES) + "};")
print("// [step][parameter]: the gradient of that step, then the values after it")
print("const std::vector<std::vector<std::vector<float>>> kGradients = {")
for step in gradients:
    print("    {" + ", ".join(step) + "},")
print("};")
print("const std::vector<std::vector<std::vector<double>>> kValues = {")
for step in values:
    print("    {" + ", ".join(step) + "},")
print("};")
state = [optimizer.state[p] for p in parameters]
print("const std::vector<std::vector<double>> kFirstMoments = {" + ", ".join(cpp(s["exp_avg"]) for s in state) + "};")
print("const std::vector<std::vector<double>> kSecondMoments = {" + ", ".join(cpp(s["exp_avg_sq"]) for s in state) + "};")
