"""Write a sample CSV for kube-job: `python data/generate_data.py [--rows N] [--out PATH] [--seed S]`.

The same seed always gives the same file. Rows are streamed to disk, so any size works.
"""

import argparse
import csv
import random
import sys
from datetime import datetime, timedelta

FIELDS = ["id", "name", "email", "city", "amount", "created_at"]
NAMES = ["Ada", "Grace", "Alan", "Barbara", "Edsger", "Frances", "Ken", "Margaret", "Dennis", "Radia"]
CITIES = ["London", "Paris", "Zürich", "São Paulo", "New York, NY", "Tokyo", "Nairobi", "Oslo"]
EPOCH = datetime(2026, 1, 1)


def rows(count: int, rng: random.Random):
    for number in range(1, count + 1):
        name = rng.choice(NAMES)
        yield {
            "id": number,
            "name": name,
            "email": f"{name.lower()}.{number}@example.com",
            "city": rng.choice(CITIES),
            "amount": f"{rng.uniform(1, 1000):.2f}",
            "created_at": (EPOCH + timedelta(seconds=rng.randrange(365 * 86400))).isoformat(),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000, help="data rows to write (default 1000)")
    parser.add_argument("--out", default="data.csv", help="file to write (default data.csv in this folder)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    with open(args.out, "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows(args.rows, random.Random(args.seed)))
    print(f"wrote {args.rows} rows to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
