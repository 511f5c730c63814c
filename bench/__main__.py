"""`python -m bench [name ...]`: run the benchmarks, print a table, write bench/results.json."""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from bench import (
    drain,
    fair_share,
    ingest,
    io_handler,
    load,
    memory,
    open_uploads,
    reaction,
    scaleout,
    scaler_poll,
    status_polling,
    time_to_done,
    trickle,
)

BENCHMARKS = {
    "ingest": ingest.run, "drain": drain.run, "drain_failing": drain.half_failing, "io": io_handler.run,
    "memory": memory.run, "reaction": reaction.run,
    "trickle": trickle.run, "scaleout": scaleout.run, "time_to_done": time_to_done.run, "load": load.run,
    "status_polling": status_polling.run, "scaler_poll": scaler_poll.run, "fair_share": fair_share.run,
    "open_uploads": open_uploads.run,
}
RESULTS = Path(__file__).with_name("results.json")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", choices=[*BENCHMARKS, []], help="default: all")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for name in args.names or BENCHMARKS:
        started = time.monotonic()
        figures = BENCHMARKS[name]()
        print(f"{name} ({time.monotonic() - started:.0f}s)")
        for key, value in figures.items():
            print(f"  {key:40} {value}")
        results.update(figures)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
