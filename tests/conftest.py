"""Test-session settings: one torch thread per worker (pytest -n 2 runs two workers on two cores)."""

import torch

torch.set_num_threads(1)
