"""``yolo-trainer [--config FILE]``: runs one job; its outcome becomes an exit code + termination message.

The exit code is the contract with the operator's podFailurePolicy (see exitcodes.py); the termination
message (``Reason: message``, one line) is what the operator copies into the TrainingJob's condition.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

from yolo_contract.exitcodes import ExitCode

from .classify import classify

TERMINATION_LOG_ENV = "YOLO_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
MAX_MESSAGE = 3500  # Kubernetes keeps 4096 bytes of the termination message

log = logging.getLogger("yolo_trainer")


def termination_message(code: ExitCode, message: str) -> str:
    one_line = " ".join(message.split())
    return f"{code.reason}: {one_line}"[:MAX_MESSAGE]


def write_termination_message(text: str, environ: dict[str, str] | None = None) -> None:
    env = os.environ if environ is None else environ
    path = Path(env.get(TERMINATION_LOG_ENV) or DEFAULT_TERMINATION_LOG)
    print(text, file=sys.stderr, flush=True)
    try:
        if path.parent.is_dir() and (
            (path.exists() and os.access(path, os.W_OK)) or os.access(path.parent, os.W_OK)
        ):
            path.write_text(text + "\n")
    except OSError:
        pass  # outside a pod there is no termination log; stderr has it


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="yolo-trainer", description=__doc__)
    parser.add_argument("--config", help="YAML/JSON TrainerConfig file (default: $YOLO_TRAINER_CONFIG)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("YOLO_TRAINER_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )

    from pydantic import ValidationError
    from yolo_contract.trainer_config import load_config

    try:
        cfg = load_config(args.config).with_data_connection()
    except (ValidationError, ValueError, OSError) as e:
        code, msg = ExitCode.CONFIG_INVALID, f"invalid trainer configuration: {_short_validation(e)}"
        write_termination_message(termination_message(code, msg))
        return int(code)

    try:
        from .pipeline import run

        run(cfg)
    except BaseException as e:
        code, msg = classify(e)
        if code in (ExitCode.TRAINING_ERROR,):
            log.exception("training failed")
        write_termination_message(termination_message(code, msg))
        if code in (ExitCode.INTERRUPTED, ExitCode.PEER_LOST):  # the gang's other pods are stopped meanwhile
            exit_now(code)
        return int(code)
    return int(ExitCode.SUCCEEDED)


def exit_now(code: ExitCode) -> NoReturn:
    """Exits without the interpreter's teardown. After SIGTERM the kubelet SIGKILLs the container when the
    deletion's grace period ends, which may be a few seconds (preemption, ``kubectl delete --grace-period``),
    whatever the pod spec says; the checkpoint is flushed and the termination message written by now, and the
    teardown (a full garbage collection of torch and Ultralytics objects) alone takes seconds on a busy node.
    Killed during it, the container would exit 137 instead of 75, and the disruption would count as a failure.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(int(code))


def _short_validation(e: Exception) -> str:
    from pydantic import ValidationError

    if isinstance(e, ValidationError):
        parts = []
        for err in e.errors()[:5]:
            loc = ".".join(str(x) for x in err["loc"])
            got = err.get("input")
            # the value itself for a scalar, so an enum's error says which entry was wrong, not only what is allowed
            shown = f" (got {got!r})" if isinstance(got, str | int | float) and len(repr(got)) <= 80 else ""
            parts.append(f"{loc}: {err['msg']}{shown}")
        return "; ".join(parts)
    return str(e)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
