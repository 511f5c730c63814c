"""A worker handler for the end-to-end test: the real checksum work, then a note of the row's id.

The test points WORKER_HANDLER at `record_row` and E2E_RECORD_DIR at a temp dir through the
ConfigMap, so the worker processes that the node agent runs leave proof of each row they handled.
"""

import os

from worker.handlers import checksum_row


def record_row(row: dict[str, str]) -> None:
    """Do the default work, then append the row's id to this process's file."""
    checksum_row(row)
    # One file per process and one short append per row: no two writers share a file.
    with open(os.path.join(os.environ["E2E_RECORD_DIR"], f"{os.getpid()}.ids"), "a") as out:
        out.write(row["id"] + "\n")
