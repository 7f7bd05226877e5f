"""The runtime speed options of params.yaml, applied in one place for both studies and both verbs.

None of them changes what a step computes beyond floating-point rounding; `tests/test_speed.py`
runs each on vs off on the CPU where it exists there, `make gpu-check` on CUDA.

* precision: fp32; bf16 = autocast with fp32 weights and an fp32 carry; bf16-pure = the HRM
  authors' numerics, where the carry and the initial states are bf16 too (with fp32 weights, the
  two compute bit-identical outputs and gradients in fp32). The CPU always runs fp32.
* attention: which SDPA kernel (flash needs bf16 on CUDA; auto lets torch choose).
* optimizer: multi-tensor (foreach), one fused kernel (AdamW only; Adam-atan2 has none and runs
  foreach), or one tensor at a time (loop, the reference).
* compile / compile_mode: torch.compile the transformer stacks (the HRM's hot loop), or the whole
  CNN; reduce-overhead replays CUDA graphs, for the small launch-bound image models. CUDA only.
* data_on_device: the puzzle training set lives on the device; a batch is a gather there.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from hrm.models.layers import Stack
from hrm.pipeline.config import Runtime

log = logging.getLogger("hrm")

BACKEND = "inductor"      # torch.compile's backend; the tests use aot_eager (graph capture, no C++ build)
BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "math": SDPBackend.MATH}


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """bf16 autocast on CUDA for bf16 and bf16-pure; a disabled context elsewhere (CPU runs stay fp32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and precision != "fp32")


def carry_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The dtype an HRM keeps its carry in: bf16 under bf16-pure on CUDA, else that of its inputs (fp32)."""
    return torch.bfloat16 if device.type == "cuda" and precision == "bf16-pure" else None


def set_precision(model: torch.nn.Module, device: torch.device, precision: str) -> None:
    """Tell a model (an HRM; others ignore it) which dtype its carry and input injection take."""
    if hasattr(model, "carry_dtype"):
        model.carry_dtype = carry_dtype(device, precision)


def apply_precision(model: torch.nn.Module, device: torch.device, precision: str) -> torch.autocast:
    """A run's numerics, applied in this one call: the model's carry dtype, and the autocast context its
    forward passes run under (reusable: enter it around each pass)."""
    set_precision(model, device, precision)
    return autocast(device, precision)


@contextlib.contextmanager
def attention(kind: str) -> Iterator[None]:
    """The SDPA kernel for everything run inside; `auto` leaves the choice to torch."""
    if kind == "auto":
        yield
        return
    with sdpa_kernel(BACKENDS[kind]):
        yield


def compile_model(model: torch.nn.Module, runtime: Runtime, device: torch.device) -> bool:
    """Compile the transformer stacks (or, for models without any, the whole forward) in place.

    Only on CUDA with inductor; with another BACKEND (the tests) on the CPU too. Returns whether
    anything was compiled.
    """
    backend = BACKEND
    if not runtime.compile or (device.type != "cuda" and backend == "inductor"):
        return False
    mode = None if runtime.compile_mode == "default" or backend != "inductor" else runtime.compile_mode
    stacks = [m for m in model.modules() if isinstance(m, Stack)]
    for m in stacks or [model]:
        m.compile(backend=backend, mode=mode)
    return True


def cuda_graphs(runtime: Runtime, device: torch.device) -> bool:
    return runtime.compile and runtime.compile_mode == "reduce-overhead" and device.type == "cuda"


def mark_step(runtime: Runtime, device: torch.device) -> None:
    """With CUDA graphs, tell torch a new training step begins: the graphs' previous outputs may be
    overwritten from here on, so a tensor kept across steps (the ACT carry) must be a copy."""
    if cuda_graphs(runtime, device):
        torch.compiler.cudagraph_mark_step_begin()
