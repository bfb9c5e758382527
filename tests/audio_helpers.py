"""Signal helpers shared by the augmentation tests."""

import torch


def power_ratio_db(reference, added):
    """10 log10 of the energy ratio of two 1-D signals, in float64."""
    reference, added = reference.double(), added.double()
    return float(10 * torch.log10(reference.pow(2).sum() / added.pow(2).sum()))


def padded_batch(valid_samples, max_len, seed=0):
    """Random speech stand-ins, zero past each item's valid length."""
    generator = torch.Generator().manual_seed(seed)
    batch = torch.randn(len(valid_samples), max_len, generator=generator)
    for row, valid in enumerate(valid_samples):
        batch[row, valid:] = 0.0
    return batch, torch.tensor(valid_samples) / max_len
