"""Shared test set-up."""
import torch


def pytest_configure(config):
    # the test models are tiny: one thread is faster, and stays fast when the machine is busy
    torch.set_num_threads(1)
