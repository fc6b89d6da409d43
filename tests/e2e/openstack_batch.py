"""Runs `openstack` commands for the end-to-end tests, one process for many commands.

The `openstack` console script is `openstackclient.shell:main`; started afresh, it spends
seconds importing and scanning plugins before its first request (2-8 s a command on a busy
machine). This process runs the command its own arguments name once, its output
discarded, so that everything is imported and scanned, then forks a child per command
(stdin: one JSON list of arguments a line): each command runs the real `main`, as the
console script does, in a process of its own, and is answered with one JSON line:
`returncode`, `stdout`, `stderr`. Configuration comes from the environment, as for the
console script.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile

# cliff names the program after argv[0] when it is imported: as the console script's.
sys.argv[0] = "openstack"

import openstackclient.shell  # noqa: E402


def run_command(argv: list[str]) -> int:
    try:
        return openstackclient.shell.main(argv)
    except SystemExit as exit:  # argparse's usage errors
        return exit.code if isinstance(exit.code, int) else 2


def run_forked(argv: list[str]) -> dict[str, object]:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:  # the child: the console script's `main`, its output in the files
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            code = run_command(argv)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        out.seek(0)
        err.seek(0)
        return {
            "returncode": os.waitstatus_to_exitcode(status),
            "stdout": out.read().decode(errors="replace"),
            "stderr": err.read().decode(errors="replace"),
        }


def warm_up(argv: list[str]) -> None:
    """Run `argv` once, its output discarded, and take back the log handlers it set up
    (each command sets up its own: kept, they would print every error twice)."""
    handlers = list(logging.root.handlers)
    answers, errors = os.dup(1), os.dup(2)
    with open(os.devnull, "w") as discard:
        os.dup2(discard.fileno(), 1)
        os.dup2(discard.fileno(), 2)
        run_command(argv)
        sys.stdout.flush()
        sys.stderr.flush()
    os.dup2(answers, 1)
    os.dup2(errors, 2)
    os.close(answers)
    os.close(errors)
    logging.root.handlers[:] = handlers


def main() -> None:
    answers = os.fdopen(os.dup(1), "w")
    warm_up(sys.argv[1:])
    for line in sys.stdin:
        answers.write(json.dumps(run_forked(json.loads(line))) + "\n")
        answers.flush()


if __name__ == "__main__":
    main()
