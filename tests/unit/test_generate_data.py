"""data/generate_data.py writes valid, reproducible CSVs of any size."""

import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def generate(tmp_path: Path, *args: str) -> Path:
    subprocess.run([sys.executable, str(ROOT / "data" / "generate_data.py"), *args], cwd=tmp_path, check=True)
    return tmp_path


def test_default_is_data_csv_in_the_current_folder(tmp_path: Path) -> None:
    with open(generate(tmp_path) / "data.csv", newline="") as f:
        records = list(csv.DictReader(f))
    assert len(records) == 1000
    assert list(records[0]) == ["id", "name", "email", "city", "amount", "created_at"]
    assert [r["id"] for r in records] == [str(i) for i in range(1, 1001)]


def test_rows_out_and_seed_make_it_reproducible(tmp_path: Path) -> None:
    generate(tmp_path, "--rows", "50", "--out", "a.csv", "--seed", "7")
    generate(tmp_path, "--rows", "50", "--out", "b.csv", "--seed", "7")
    generate(tmp_path, "--rows", "50", "--out", "c.csv", "--seed", "8")
    a, b, c = ((tmp_path / name).read_bytes() for name in ("a.csv", "b.csv", "c.csv"))
    assert a == b and a != c
    assert a.count(b"\n") == 51
