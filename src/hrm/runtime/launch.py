"""Putting a job on its GPUs: a GPU slot per job that Snakemake runs beside others, and torchrun for
a training of several processes, on one node or on every node of a SLURM allocation.

* Slots. `snakemake -j4` on a 4-GPU machine runs up to 4 GPU jobs at once (the `gpu` resource); each
  job's command carries `--gpu-slots 4`, and `pin` takes free GPUs for it: an exclusive flock on a
  lock file per GPU (paths.gpu_slot_dir), held until the process exits (the kernel drops it even on
  SIGKILL), and CUDA_VISIBLE_DEVICES set to those GPUs before anything touches CUDA.
* torchrun. `hrm train` of an experiment with processes x nodes > 1 starts
  `python -m torch.distributed.run ... -m hrm train ...` with the same arguments, forwards SIGTERM
  and SIGINT to it (torchrun passes them to every rank, which stop together and save), and returns
  its exit status. Each worker sees WORLD_SIZE (`launched`) and trains as one rank (hrm.runtime.distributed).

No torch here: the launcher process only waits for torchrun.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from hrm.core import paths
from hrm.core.errors import HrmError, Stopped
from hrm.pipeline.config import Experiment

log = logging.getLogger("hrm")
POLL_S = 2.0                   # while every slot is taken (another checkout's jobs): look again every N s
RDZV_PORT = 29400              # multi-node rendezvous on the allocation's first node (+ job id % 1000)
_held: list[int] = []          # the slot locks this process holds, open until it exits


def launched() -> bool:
    """Whether this process is a rank of a torchrun (or srun) launch."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def _try_slots(k: int, ids: list[str]) -> list[tuple[str, int]]:
    """k free GPUs of `ids`, locked, or none (every partial take is released: no two jobs deadlock)."""
    folder = paths.gpu_slot_dir()
    folder.mkdir(parents=True, exist_ok=True)
    got: list[tuple[str, int]] = []
    for gpu in ids:
        fd = os.open(folder / f"gpu{gpu}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        got.append((gpu, fd))
        if len(got) == k:
            return got
    for _, fd in got:
        os.close(fd)
    return []


def pin(k: int, total: int) -> list[str]:
    """Hold k of this machine's `total` GPUs for the rest of this process and make them the only ones
    it sees (CUDA_VISIBLE_DEVICES); waits while fewer than k are free. Returns their ids."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(total)]
    ids = ids[:total]
    if not 1 <= k <= len(ids):
        raise HrmError(f"--gpu-slots {total}: this job needs {k} GPU(s) but the machine has {len(ids)} to share; "
                       f"lower the experiment's processes or set the GPU count (Snakemake: --config gpus=N)")
    waited = False
    while not (got := _try_slots(k, ids)):
        if not waited:
            log.info("waiting for %d free GPU(s) of %s (locks in %s)", k, ",".join(ids), paths.gpu_slot_dir())
            waited = True
        time.sleep(POLL_S)
    _held.extend(fd for _, fd in got)
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpu for gpu, _ in got)
    log.info("GPU slot(s) %s", os.environ["CUDA_VISIBLE_DEVICES"])
    return [gpu for gpu, _ in got]


def _rendezvous(exp: Experiment) -> list[str]:
    """torchrun's multi-node flags inside a SLURM allocation: every node meets on the first one."""
    job, nodelist = os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_JOB_NODELIST")
    if not job or not nodelist or int(os.environ.get("SLURM_JOB_NUM_NODES", "1")) < exp.nodes:
        raise HrmError(f"experiments.{exp.name}.nodes: {exp.nodes} nodes, but this is not a SLURM allocation of "
                       f"{exp.nodes} nodes; run it through `snakemake --workflow-profile profiles/slurm` (or "
                       f"`srun --nodes {exp.nodes} --ntasks-per-node 1 python -m hrm train ...` in one)")
    try:
        hosts = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                               check=True, timeout=60).stdout.split()
    except (OSError, subprocess.SubprocessError) as exc:
        raise HrmError(f"experiments.{exp.name}.nodes: cannot list the allocation's nodes with scontrol "
                       f"({exc})") from None
    port = RDZV_PORT + int(job) % 1000
    return [f"--nnodes={exp.nodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={hosts[0]}:{port}",
            f"--rdzv-id=hrm-{job}"]


def torchrun_command(exp: Experiment, argv: list[str]) -> list[str]:
    """The torchrun call that runs `python -m hrm ARGV` as exp.processes ranks on each of exp.nodes nodes."""
    where = ["--standalone"] if exp.nodes == 1 else _rendezvous(exp)
    return [sys.executable, "-m", "torch.distributed.run", *where, f"--nproc-per-node={exp.processes}",
            "-m", "hrm", *argv]


def torchrun(exp: Experiment, argv: list[str]) -> int:
    """Run the training as torchrun ranks; SIGTERM/SIGINT go to torchrun, which passes them to every rank
    (all stop at one batch and rank 0 saves). Exit status: 128 + signal when stopped, else torchrun's."""
    cmd = torchrun_command(exp, argv)
    log.info("%d processes on %d node(s): %s", exp.world, exp.nodes, " ".join(cmd[1:]))
    env = dict(os.environ)
    if exp.nodes == 1:              # gloo (CPU ranks) would otherwise need this host's name to resolve
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    proc = subprocess.Popen(cmd, env=env)
    received: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        proc.send_signal(signum)

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        rc = proc.wait()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if received and rc != 0:
        raise Stopped(f"{exp.name}: stopped by {signal.Signals(received[0]).name}; rank 0 saved a checkpoint if the "
                      f"ranks reached one; run the same command to resume", received[0])
    if rc != 0:
        raise HrmError(f"{exp.name}: a rank failed (torchrun exit status {rc}); its message is above; the last "
                       f"checkpoint is kept: run the same command to resume") from None
    return 0
