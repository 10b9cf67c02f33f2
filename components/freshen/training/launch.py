"""`freshen train --nproc N`: N training processes launched on this machine by torchrun
(`torch.distributed.run`), which stops the others when one fails. Light on imports: the CLI loads
it before it knows whether torch is needed."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from freshen.errors import FreshenError

DISTRIBUTED_STEP = "train"  # the one step that runs as more than one process
NPROC_ENV = "FRESHEN_NPROC"  # set in the processes `launch` starts: they are ranks, not launchers
RANK_STATUS_ENV = "FRESHEN_RANK_STATUS"  # a folder each launched rank writes its exit code to
STOPPED = 143  # the exit code of a rank torchrun stopped (SIGTERM) because another failed


def check_nproc(train, nproc: int, teacher: bool) -> None:
    """What `nproc` training processes need of the `train` section `train` (FreshenError
    otherwise): the one rule for `freshen train --nproc`, each rank as it starts, and the GPU
    count of a DAG's or pipeline's train task when they are parsed."""
    if nproc < 1:
        raise FreshenError(f"--nproc {nproc}: the number of training processes is at least 1")
    if nproc == 1:
        return
    if train.batch_size % nproc:
        raise FreshenError(f"train.batch_size: {train.batch_size} is not divisible by the {nproc} training processes")
    if train.micro_batch is not None and train.batch_size % (nproc * train.micro_batch):
        raise FreshenError(
            f"train.micro_batch: {nproc} training processes x {train.micro_batch} queries per forward pass "
            f"do not divide train.batch_size ({train.batch_size}); make micro_batch a divisor of "
            f"{train.batch_size // nproc}, or null"
        )
    if teacher:
        raise FreshenError("train.teacher.scores: Margin-MSE with a teacher trains in one process only (no --nproc)")


def launch(argv: list[str], nproc: int) -> int:
    """Run `freshen <argv>` as `nproc` ranks with torchrun on this machine; its exit code: the
    first failing rank's own code when it wrote one (2: bad input or settings, not worth a
    retry), else torchrun's. When a rank fails, torchrun stops the others."""
    with tempfile.TemporaryDirectory(prefix="freshen-ranks-") as status:
        env = {**os.environ, NPROC_ENV: str(nproc), RANK_STATUS_ENV: status}
        # each rank's share of the cores (torchrun would set 1, and say so on stderr)
        env.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // nproc)))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
        proc = subprocess.Popen([*cmd, "-m", "freshen", "--", *argv], env=env)  # "--": argv is not torchrun's
        try:
            code = proc.wait()
        except BaseException:  # SIGTERM or Ctrl-C here: torchrun stops its ranks on SIGTERM
            proc.terminate()
            proc.wait()
            raise
        if code == 0:
            return 0
        codes = [int(open(os.path.join(status, f)).read() or 1) for f in sorted(os.listdir(status))]
        failed = [c for c in codes if c not in (0, STOPPED)]
        return failed[0] if failed else code


def record_exit(code: int) -> None:
    """Called by the CLI as a launched rank exits: its exit code, for `launch`."""
    folder = os.environ.get(RANK_STATUS_ENV)
    if folder and os.path.isdir(folder):
        with open(os.path.join(folder, f"rank{os.environ.get('RANK', '0')}"), "w") as fh:
            fh.write(str(code))
