"""The walltime warning, seen from inside training: save a checkpoint now, exit with RESUBMIT.

SLURM sends USR1 to the batch shell `signal_lead_s` before the walltime (`--signal=B:USR1@<lead>`);
the batch script tunebook renders traps it, touches the file named by `TUNEBOOK_WALLTIME_FLAG` and
forwards USR1 to the stage when the stage is its direct child (torch.distributed.run would die of a
USR1, so launched ranks read the file instead). At every optimizer step the callback looks for the
flag; under DDP the ranks agree on it (one all-reduce) so they save the same step. The trainer saves a
full checkpoint (optimizer state included) and the process exits with RESUBMIT; the stage that
submitted the job sees the warning and submits the next attempt, which resumes from that checkpoint.
"""

from __future__ import annotations

import atexit
import os
import signal
from pathlib import Path

RESUBMIT = 75  # EX_TEMPFAIL: not done, nothing wrong, run me again
_requested = False


def _on_usr1(signum, frame) -> None:  # noqa: ARG001
    global _requested
    _requested = True
    print("[walltime] warning received: training checkpoints after this step; evaluation goes on, keeping every finished cell", flush=True)


def install() -> None:
    """Catch USR1 (its default action kills the process) in the stage process, and ignore it once the
    process exits: Python's shutdown puts every signal it handles back to the default action, so a
    warning that came while a finished stage was exiting killed it (exit 138 after "816/816 steps",
    and the stage resubmitted a finished run). A signal ignored stays ignored through the shutdown."""
    signal.signal(signal.SIGUSR1, _on_usr1)
    atexit.register(signal.signal, signal.SIGUSR1, signal.SIG_IGN)


def requested() -> bool:
    flag = os.environ.get("TUNEBOOK_WALLTIME_FLAG")
    return _requested or bool(flag and Path(flag).exists())


def callback():
    """A TrainerCallback (transformers is imported here, not when the stage module loads)."""
    from transformers import TrainerCallback

    class WalltimeCallback(TrainerCallback):
        """Checkpoint and stop at the first step end after the warning; exit RESUBMIT once it is saved."""

        def __init__(self):
            self.stopping = False

        def _agreed(self) -> bool:
            want = requested()
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                import torch

                t = torch.tensor([1 if want else 0])
                dist.all_reduce(t, op=dist.ReduceOp.MAX)
                want = bool(t.item())
            return want

        def on_step_end(self, args, state, control, **kw):
            if not self.stopping and self._agreed():
                self.stopping = True
                control.should_save = True
                control.should_training_stop = True

        def on_save(self, args, state, control, **kw):
            if self.stopping:  # the trainer has written the whole checkpoint (trainer_state.json last)
                if state.is_world_process_zero:
                    print(f"[walltime] checkpoint-{state.global_step} saved; exiting {RESUBMIT} so the stage resubmits", flush=True)
                raise SystemExit(RESUBMIT)

    return WalltimeCallback()
