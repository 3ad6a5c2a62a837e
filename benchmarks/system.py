"""What machine a result was measured on: recorded in every results file."""

from __future__ import annotations

import os
import platform
import socket

import torch

from engines.versions import library_versions


CPUINFO = "/proc/cpuinfo"

CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
"""The CPU flags that decide this project's speed: AVX2 / AVX-512 float kernels, int8 dot products (VNNI:
the int8 engines' speed-up, and what ``--precision auto`` needs), bfloat16 (``mn-train --amp`` on a CPU)."""


def cpu_model(cpuinfo: str = CPUINFO) -> str:
    try:
        with open(cpuinfo) as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_features(cpuinfo: str = CPUINFO) -> list[str] | None:
    """Which of :data:`CPU_FEATURES` the CPU lists (Linux ``/proc/cpuinfo``), in that order; None where the
    flags cannot be read. Two VMs of one name ("AMD EPYC") differed by 2x in speed and in VNNI: the flags
    tell their results apart."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as fh:
            flags: set[str] = set()
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    flags.update(value.split())
    except OSError:
        return None
    return [f for f in CPU_FEATURES if f in flags] if flags else None


def system_info() -> dict:
    """Host, CPU, cores, GPU (if any) and library versions, JSON-able."""
    info = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_features": cpu_features(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": library_versions(),
    }
    return info
