"""Where a batched cleanup's time goes on SQLite, without the store: Python's sqlite3 on
copies of one table shaped like `migrate()`'s (500,000 tokens, four types, 80% expired,
expiry growing with the rowid, a unique index of random token hashes).

    python3 benches/sqlite_commit_costs.py [--rounds 2] [--dir /tmp/sqlite-costs]

Each variant deletes the expired rows, either in one statement or in rowid windows
holding 1000 of them, each window its own transaction, with some connection setting
changed. Printed: every round's seconds, then each variant's best time as a ratio to
the single statement's best. BENCHMARKS.md quotes a run of it (session 11).
"""

import argparse
import os
import secrets
import shutil
import sqlite3
import time

N = 500_000
START = 1_700_000_000
CUTOFF = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(START + int(N * 0.8) * 10))
BIG_CACHE = -262_144  # 256 MiB

# (name, batch size or 0 for one statement, pragmas)
VARIANTS = [
    ("one DELETE", 0, {}),
    ("one DELETE, 256 MiB cache", 0, {"cache_size": BIG_CACHE}),
    ("batches", 1000, {}),
    ("batches, 256 MiB cache", 1000, {"cache_size": BIG_CACHE}),
    ("batches, checkpoints without sync", 1000, {"synchronous": "off"}),
    ("batches, checkpoint every 10,000 pages", 1000, {"wal_autocheckpoint": 10_000}),
    ("batches, checkpoint every 50,000 pages, 256 MiB cache", 1000,
     {"wal_autocheckpoint": 50_000, "cache_size": BIG_CACHE}),
    ("batches, no checkpoint", 1000, {"wal_autocheckpoint": 0}),
    ("batches, no checkpoint, 256 MiB cache", 1000,
     {"wal_autocheckpoint": 0, "cache_size": BIG_CACHE}),
]


def remove(path):
    for suffix in ("", "-wal", "-shm"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass


def seed(path):
    c = sqlite3.connect(path)
    c.execute("PRAGMA journal_mode = wal")
    c.execute(
        "CREATE TABLE verification_tokens (id INTEGER PRIMARY KEY, token_type TEXT NOT NULL,"
        " token_hash TEXT NOT NULL UNIQUE, user_id TEXT, expires_at TEXT NOT NULL,"
        " used_at TEXT, created_at TEXT)"
    )
    c.execute("CREATE INDEX vt_type_exp ON verification_tokens (token_type, expires_at)")
    c.execute("CREATE INDEX vt_type_used ON verification_tokens (token_type, used_at)")
    types = ["email_verification", "password_reset", "magic_link", "invite"]
    stamp = lambda t: time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t))
    rows = (
        (i + 1, types[i % 4], "sha256:" + secrets.token_hex(32), None,
         stamp(START + i * 10),
         stamp(START + i * 10 - 1800) if (i // 4) % 10 == 0 else None, None)
        for i in range(N)
    )
    c.executemany("INSERT INTO verification_tokens VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    c.commit()
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()


def run(template, path, batch, pragmas):
    remove(path)
    shutil.copy(template, path)
    c = sqlite3.connect(path, isolation_level=None)
    settings = {"journal_mode": "wal", "synchronous": "normal"}
    settings.update(pragmas)
    for name, value in settings.items():
        c.execute(f"PRAGMA {name} = {value}")
    started = time.perf_counter()
    deleted = 0
    if batch == 0:
        deleted = c.execute(
            "DELETE FROM verification_tokens WHERE expires_at < ?", (CUTOFF,)
        ).rowcount
    else:
        width, lo = int(batch / 0.8), 0
        while lo < N:
            c.execute("BEGIN IMMEDIATE")
            deleted += c.execute(
                "DELETE FROM verification_tokens WHERE id > ? AND id <= ? AND expires_at < ?",
                (lo, lo + width, CUTOFF),
            ).rowcount
            c.execute("COMMIT")
            lo += width
    took = time.perf_counter() - started
    c.close()
    remove(path)
    assert deleted == int(N * 0.8), deleted
    return took


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dir", default="/tmp/sqlite-costs")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    template = os.path.join(args.dir, "template.db")
    if not os.path.exists(template):
        seed(template)
    times = {}
    for _ in range(args.rounds):
        for name, batch, pragmas in VARIANTS:
            took = run(template, os.path.join(args.dir, "run.db"), batch, pragmas)
            times.setdefault(name, []).append(took)
            print(f"{name}: {took:.2f} s", flush=True)
    base = min(times["one DELETE"])
    print()
    for name, runs in times.items():
        print(f"{name}: {' / '.join(f'{t:.2f}' for t in runs)} s, {min(runs) / base:.2f}x")


if __name__ == "__main__":
    main()
