"""The machine a benchmark ran on, for the header of its results file."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def git_describe() -> str:
    """The source the benchmark measured (``git describe --always --dirty``)."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=HERE,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "n/a"
    except (OSError, subprocess.SubprocessError):
        return "n/a"


def machine_description(threads: int) -> dict[str, str]:
    """CPU model and cores from /proc/cpuinfo, usable CPUs, torch and Python, threads, date."""
    model, cores = "unknown", None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown":
                    model = value.strip()
                elif key.strip() == "cpu cores" and cores is None:
                    cores = value.strip()
    except OSError:
        model = platform.processor() or "unknown"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "CPU (/proc/cpuinfo model name)": model,
        "cores (/proc/cpuinfo cpu cores)": cores or "n/a",
        "logical CPUs usable (sched_getaffinity)": str(usable),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads (torch.set_num_threads)": str(threads),
        "date": datetime.datetime.now().isoformat(timespec="minutes"),
        "l1sparse source (git describe)": git_describe(),
    }
