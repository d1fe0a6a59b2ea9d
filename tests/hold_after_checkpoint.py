"""Runs a recipe that stops for good right after its checkpoint of an epoch, so that a test can kill it there.

``python tests/hold_after_checkpoint.py MARKER EPOCH RECIPE [flags]`` runs ``RECIPE`` with ``flags`` as
``python RECIPE [flags]`` would, except that once the checkpoint of epoch ``EPOCH`` is written the process writes
``MARKER`` and sleeps until it is killed. A test that waits for ``MARKER`` and then kills the process kills it at
a known point: the run can neither finish first nor be caught before its checkpoint is complete, however fast or
slow the machine is (waiting for the checkpoint file alone races with the rest of the run).
"""
import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Optional, Sequence

from ignite.engine import Events

from ignite_igan.experiments import runs


def kill_after_checkpoint(
    recipe: Path, flags: Sequence[str], epoch: int, marker: Path, env: Optional[Mapping[str, str]] = None,
    cwd: Optional[Path] = None, timeout: float = 240.0,
) -> None:
    """Runs ``recipe`` with ``flags`` in a subprocess and kills it (SIGKILL) right after its checkpoint of ``epoch``."""
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), str(marker), str(epoch), str(recipe), *map(str, flags)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=dict(env or os.environ), cwd=cwd,
    )
    try:
        deadline = time.time() + timeout
        while not marker.exists():
            if process.poll() is not None:
                raise AssertionError(f"the run ended ({process.returncode}) before its checkpoint of epoch {epoch}:\n"
                                     f"{process.stderr.read()}")
            if time.time() > deadline:
                raise AssertionError(f"no checkpoint of epoch {epoch} after {timeout:.0f} s")
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stderr.close()


def main() -> None:
    marker, epoch, recipe, *flags = sys.argv[1:]
    attach = runs.Run.attach

    def attach_then_hold(self, trainer, *args, **kwargs):
        resumed = attach(self, trainer, *args, **kwargs)

        # Added after Run.attach's checkpoint handler, so Ignite calls it once the checkpoint is on disk.
        @trainer.on(Events.EPOCH_COMPLETED(once=int(epoch)))
        def hold(engine):
            Path(marker).write_text(f"{engine.state.epoch}\n")
            while True:
                time.sleep(60)

        return resumed

    runs.Run.attach = attach_then_hold
    sys.argv = [recipe, *flags]
    sys.path.insert(0, str(Path(recipe).resolve().parent))
    runpy.run_path(recipe, run_name="__main__")


if __name__ == "__main__":
    main()
