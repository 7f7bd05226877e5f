"""Device choice and GPU accounting: NVML sampled in a background thread (WORKFLOW, "GPU time").

Without a GPU or without NVML every GPU field is null and nothing fails.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from types import TracebackType
from typing import Any

import torch

from hrm.core.errors import HrmError

log = logging.getLogger("hrm")
MIB = 1 << 20


def resolve_device(preference: str) -> torch.device:
    if preference == "cuda" and not torch.cuda.is_available():
        raise HrmError("runtime.device: got 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if preference == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def jobs_use_gpu(preference: str, gpu_nodes: bool = False) -> bool:
    """Whether a train/evaluate job will hold a GPU: never with runtime.device cpu; with auto, when
    CUDA is visible here or the jobs run on GPU nodes elsewhere (a cluster's head node has none)."""
    return preference == "cuda" or (preference == "auto" and (gpu_nodes or torch.cuda.is_available()))


def _nvml_handle(device: torch.device) -> Any:
    """NVML handle of the CUDA device, matched by UUID (NVML enumerates in PCI order)."""
    import pynvml

    pynvml.nvmlInit()
    uuid = str(getattr(torch.cuda.get_device_properties(device), "uuid", ""))
    for i in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(i)
        nv_uuid = pynvml.nvmlDeviceGetUUID(handle)
        nv_uuid = nv_uuid.decode() if isinstance(nv_uuid, bytes) else nv_uuid
        if uuid and nv_uuid.removeprefix("GPU-").removeprefix("MIG-") == uuid.removeprefix("GPU-"):
            return handle
    return pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)


class GpuMonitor:
    """`with GpuMonitor(device, interval) as mon: ...; mon.facts()` -> JSON-ready dict (nulls on CPU)."""

    def __init__(self, device: torch.device, interval_s: float) -> None:
        self.device, self.interval = device, interval_s
        self.handle: Any = None
        self.samples: list[tuple[float, int, int, float]] = []   # (time, memory used B, util %, power W)
        self.energy_mj: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.wall_s = 0.0

    def __enter__(self) -> GpuMonitor:
        self._t0 = time.perf_counter()
        if self.device.type != "cuda":
            return self
        torch.cuda.reset_peak_memory_stats(self.device)
        try:
            import pynvml

            self.handle = _nvml_handle(self.device)
            try:
                start = pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
                self.energy_mj = (start, start)
            except pynvml.NVMLError:
                self.energy_mj = None
            self._thread = threading.Thread(target=self._run, name="nvml-sampler", daemon=True)
            self._thread.start()
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, NoPermission, ImportError
            log.warning("NVML unavailable (%s): GPU memory/utilisation/energy will be null", exc)
            self.handle = None
        return self

    def _sample(self) -> None:
        import pynvml

        mem = pynvml.nvmlDeviceGetMemoryInfo(self.handle).used
        util = pynvml.nvmlDeviceGetUtilizationRates(self.handle).gpu
        try:
            power = pynvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0
        except pynvml.NVMLError:
            power = float("nan")
        self.samples.append((time.perf_counter(), mem, util, power))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._sample()
            except Exception:  # a failing sample must never stop training
                pass
            self._stop.wait(self.interval)

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.wall_s = time.perf_counter() - self._t0
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        if self.handle is not None and self.energy_mj is not None:
            import pynvml

            try:
                self.energy_mj = (self.energy_mj[0], pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
            except pynvml.NVMLError:
                self.energy_mj = None

    def facts(self) -> dict[str, Any]:
        facts: dict[str, Any] = dict.fromkeys(
            ("device_name", "nvml_peak_memory_used_mib", "nvml_mean_utilization_pct", "energy_joules",
             "energy_source", "torch_max_memory_allocated_mib", "torch_max_memory_reserved_mib"))
        if self.device.type != "cuda":
            return facts
        facts["device_name"] = torch.cuda.get_device_name(self.device)
        facts["torch_max_memory_allocated_mib"] = round(torch.cuda.max_memory_allocated(self.device) / MIB, 1)
        facts["torch_max_memory_reserved_mib"] = round(torch.cuda.max_memory_reserved(self.device) / MIB, 1)
        if self.samples:
            facts["nvml_peak_memory_used_mib"] = round(max(s[1] for s in self.samples) / MIB, 1)
            facts["nvml_mean_utilization_pct"] = round(sum(s[2] for s in self.samples) / len(self.samples), 1)
        if self.energy_mj is not None:
            facts["energy_joules"] = round((self.energy_mj[1] - self.energy_mj[0]) / 1000.0, 1)
            facts["energy_source"] = "nvmlDeviceGetTotalEnergyConsumption"
        elif len(self.samples) > 1:   # integrate sampled power where the counter is unsupported
            joules = sum((b[0] - a[0]) * (a[3] + b[3]) / 2 for a, b in zip(self.samples, self.samples[1:]))
            facts["energy_joules"], facts["energy_source"] = round(joules, 1), "integrated power samples"
        return facts


def sum_over_ranks(facts: list[dict[str, Any]]) -> dict[str, Any]:
    """One run's GPU facts from its ranks' (one GPU each): memory and energy summed over the GPUs,
    utilisation averaged; a field is null if any rank's is. One rank: its facts unchanged."""
    if len(facts) == 1:
        return facts[0]
    out = dict(facts[0])
    for key in ("nvml_peak_memory_used_mib", "energy_joules", "torch_max_memory_allocated_mib",
                "torch_max_memory_reserved_mib", "nvml_mean_utilization_pct"):
        values = [f[key] for f in facts]
        total = None if None in values else sum(values)
        out[key] = total if total is None or key != "nvml_mean_utilization_pct" else round(total / len(facts), 1)
    out["gpus"] = len(facts) if out["device_name"] is not None else None
    return out


def count() -> int:
    """GPUs this process may use: those CUDA_VISIBLE_DEVICES lists, else every one NVML sees; 0 without NVML."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    try:
        import pynvml

        pynvml.nvmlInit()
        return int(pynvml.nvmlDeviceGetCount())
    except Exception:  # no library, no driver, no permission: no GPU to schedule
        return 0


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host -> device without a host sync: through pinned memory, asynchronously, on CUDA."""
    if device.type != "cuda":
        return t
    return t.pin_memory().to(device, non_blocking=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
