"""`python -m producer.keys create|list|revoke|weight`: tenants' API keys, kept in the ledger (DATABASE_URL) as
hashes, and their weights in the fair share of the workers.

`create` prints the new key once, alone on the last line of its standard output; only its
SHA-256 is stored, so a lost key cannot be shown again: revoke it and create another. `list`
and the logs name a key by its id, the part after `kj_`. A revoked key is refused by a running
producer within API_KEY_CACHE_SECONDS. `weight` sets how many shares of the workers a tenant's
uploads get against 1 for a tenant without one (worker.share); workers take it up within half a
second. Exits 1 for an unknown key, 3 if
PostgreSQL does not answer.
"""

import argparse
import logging
import re
import sys
from datetime import UTC, datetime, timedelta

import psycopg

from kubejob import ledger, logs
from kubejob.settings import load_or_exit
from producer.auth import SCOPES, digest, new_key
from producer.settings import Settings

log = logging.getLogger("producer.keys")
TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
MAX_WEIGHT = 1000  # as the ledger's CHECK on tenants.weight


def create(conn: psycopg.Connection, *, tenant: str, scopes: list[str], expires_in_days: float | None) -> str:
    """Make a key of `tenant` (made too if it is new) with `scopes`; return the key, which is not kept."""
    key_id, key = new_key()
    expires = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days is not None else None
    with conn.transaction():
        conn.execute("INSERT INTO tenants (name) VALUES (%s) ON CONFLICT DO NOTHING", (tenant,))
        conn.execute("INSERT INTO api_keys (id, tenant, secret_sha256, scopes, expires_at) VALUES (%s, %s, %s, %s, %s)",
                     (key_id, tenant, digest(key), sorted(set(scopes)), expires))
    log.info("API key created", extra={"key_id": key_id, "tenant": tenant, "scopes": ",".join(sorted(set(scopes))),
                                       "expires_at": expires.isoformat() if expires else None})
    return key


def listing(conn: psycopg.Connection) -> list[str]:
    """One line per key, oldest first: its id, tenant, scopes and dates, never a secret."""
    rows = conn.execute("""SELECT id, tenant, array_to_string(scopes, ','), created_at, expires_at, revoked_at,
                                  last_used_at FROM api_keys ORDER BY created_at, id""").fetchall()
    header = ("id", "tenant", "scopes", "created", "expires", "revoked", "last_used")
    cells = [header] + [(key_id, tenant, scopes, *map(_when, dates)) for key_id, tenant, scopes, *dates in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]


def revoke(conn: psycopg.Connection, key_id: str) -> bool:
    """Revoke the key; False if there is no such key. Revoking a revoked key keeps its first date."""
    found = conn.execute("SELECT tenant FROM api_keys WHERE id = %s", (key_id,)).fetchone()
    if found is None:
        return False
    conn.execute("UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s", (key_id,))
    log.info("API key revoked", extra={"key_id": key_id, "tenant": found[0]})
    return True


def weigh(conn: psycopg.Connection, *, tenant: str, weight: int) -> None:
    """Give `tenant` (made if it is new) `weight` shares of the workers."""
    conn.execute("""INSERT INTO tenants (name, weight) VALUES (%s, %s)
                    ON CONFLICT (name) DO UPDATE SET weight = excluded.weight""", (tenant, weight))
    log.info("tenant weight set", extra={"tenant": tenant, "weight": weight})


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "-"


def _tenant(value: str) -> str:
    if not TENANT.fullmatch(value):
        raise argparse.ArgumentTypeError("a tenant is 1 to 100 letters, digits, `.`, `_` or `-`, starting with "
                                         "a letter or digit")
    return value


def _weight(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= MAX_WEIGHT:
        raise argparse.ArgumentTypeError(f"a weight is a whole number from 1 to {MAX_WEIGHT}")
    return int(value)


def _days(value: str) -> float:
    days = float(value)
    if not days > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return days


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m producer.keys", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    made = commands.add_parser("create", help="make a key and print it, once, on the last line")
    made.add_argument("--tenant", required=True, type=_tenant)
    made.add_argument("--scope", required=True, action="append", choices=SCOPES, dest="scopes")
    made.add_argument("--expires-in", type=_days, metavar="DAYS", help="the key is refused after this many days")
    commands.add_parser("list", help="every key, without its secret")
    revoked = commands.add_parser("revoke", help="refuse the key from now on")
    revoked.add_argument("key_id", help="the id `list` shows (the part of the key after `kj_`)")
    weighed = commands.add_parser("weight", help="the tenant's shares of the workers (1 unless set)")
    weighed.add_argument("--tenant", required=True, type=_tenant)
    weighed.add_argument("weight", type=_weight)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = load_or_exit(Settings, "producer.keys")
    logs.configure(settings.log_level, secrets=settings.secrets())
    url, timeout = settings.database_url.get_secret_value(), settings.database_timeout_seconds
    try:
        ledger.migrate(url, connect_timeout=timeout)  # keys may be made before the producer first starts
        with psycopg.connect(url, autocommit=True, connect_timeout=int(max(1, timeout))) as conn:
            if args.command == "create":
                key = create(conn, tenant=args.tenant, scopes=args.scopes, expires_in_days=args.expires_in)
                sys.stdout.write(f"{key}\n")
            elif args.command == "list":
                sys.stdout.write("".join(f"{line}\n" for line in listing(conn)))
            elif args.command == "weight":
                weigh(conn, tenant=args.tenant, weight=args.weight)
            elif not revoke(conn, args.key_id):
                sys.stderr.write(f"producer.keys: no API key {args.key_id!r}\n")
                return 1
    except psycopg.Error as exc:
        log.error("ledger unavailable", extra={"error": ledger.reason(exc)})
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
