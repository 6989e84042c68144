"""Placeholder written by the lead so the model imports while the kernel engineer builds the real package.

The kernel engineer (owner of kernels/) replaces this file entirely.
"""

import torch
import torch.nn.functional as F


def transposed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """MDTA reference: softmax(temperature * q̂ k̂ᵀ) v over (B, heads, C_h, N) tensors."""
    t = temperature[:, None, None] if temperature.ndim == 1 else temperature[..., None, None]
    attn = torch.softmax((F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)) * t, dim=-1)
    return attn @ v
