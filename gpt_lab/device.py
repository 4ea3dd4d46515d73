"""Where tensors live and how they are computed: device choice, seeding, autocast.

Every notebook, chapter and test calls these three helpers, so the whole course behaves the
same on a laptop CPU, an Apple GPU (MPS) or an NVIDIA GPU (CUDA).
"""
from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch

DEVICE_ENV = "GPT_LAB_DEVICE"


def get_device(preferred: str | None = None) -> torch.device:
    """Pick cuda > mps > cpu, unless `preferred` or $GPT_LAB_DEVICE names one."""
    name = preferred or os.environ.get(DEVICE_ENV)
    if name:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"{DEVICE_ENV}/preferred asks for {name!r} but CUDA is not available")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise RuntimeError(f"{DEVICE_ENV}/preferred asks for {name!r} but MPS is not available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); return a CPU generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def cpu_has_bf16() -> bool:
    """True when this CPU multiplies bf16 natively (AVX512-BF16 or AMX); emulated bf16 is slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def compute_dtype(device: torch.device | str, cpu_bf16: bool = False) -> torch.dtype:
    """Mixed precision policy: bf16 on CUDA; bf16 on the CPU only when asked (`cpu_bf16`) and the CPU
    computes bf16 natively (about 30% faster training of the course model); fp32 otherwise."""
    device = torch.device(device)
    if device.type == "cuda" or (device.type == "cpu" and cpu_bf16 and cpu_has_bf16()):
        return torch.bfloat16
    return torch.float32


def autocast(device: torch.device | str, cpu_bf16: bool = False) -> contextlib.AbstractContextManager:
    """Autocast to `compute_dtype(device, cpu_bf16)`; weights and optimizer state stay fp32."""
    device = torch.device(device)
    dtype = compute_dtype(device, cpu_bf16)
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
