"""Where a batched cleanup's time goes on MariaDB/MySQL, without the store: stored
procedures run by the `mysql` command-line client on copies of one table shaped like
`migrate()`'s (1,000,000 tokens, four types, 78% expired, expiry growing with the key,
`hash-<id>` token hashes as `bench_backends --sequential-hashes` seeds them).

    python3 benches/mariadb_batch_costs.py [--rounds 2] [--mysql "mysql -uroot -h127.0.0.1"]

It works in a database of its own (`token_cleanup_costs`, dropped and recreated), and
each variant deletes the expired rows of a fresh copy, either in one statement or in
batches of 1000 rows inside one `CALL` (so no round trip is counted). After each
variant it waits until InnoDB has purged what the variant deleted, so that the next one
does not share the machine with that purge, and it reports that time too. Printed:
every round's seconds, then each variant's median as a ratio to the single statement's
median. BENCHMARKS.md quotes a run of it (session 12).

"Purge held back" variants run while a second connection holds a consistent snapshot
(`START TRANSACTION WITH CONSISTENT SNAPSHOT`), which stops InnoDB's purge for the
whole server until it ends: that is how the single statement's purge behaves (it starts
only once the statement commits), and something a library must not do to its host.
"""

import argparse
import re
import shlex
import statistics
import subprocess
import time

DB = "token_cleanup_costs"
TOKENS = 1_000_000
EXPIRED = TOKENS * 78 // 100
TYPES = "'email_verification','password_reset','magic_link','invite'"
CUTOFF = f"TIMESTAMP('2026-01-01') + INTERVAL {EXPIRED} SECOND"
EXPIRED_COND = f"token_type IN ({TYPES}) AND expires_at < {CUTOFF}"

SETUP = f"""
DROP DATABASE IF EXISTS {DB}; CREATE DATABASE {DB}; USE {DB};
CREATE TABLE seed (id BIGINT PRIMARY KEY, token_type VARCHAR(64) NOT NULL,
  token_hash VARCHAR(128) NOT NULL, expires_at DATETIME(6) NOT NULL);
SET SESSION max_recursive_iterations = {TOKENS + 1};
INSERT INTO seed
  SELECT n, ELT(1 + n % 4, {TYPES}), CONCAT('hash-', n), TIMESTAMP('2026-01-01') + INTERVAL n SECOND
  FROM (WITH RECURSIVE a(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM a WHERE n < {TOKENS})
        SELECT n FROM a) numbered;
DELIMITER //
-- Key windows of `step` keys, bounds known in advance: no probe at all.
CREATE PROCEDURE windows(IN step INT)
BEGIN
  DECLARE k BIGINT DEFAULT 0;
  WHILE k < {TOKENS} DO
    DELETE FROM t WHERE id > k AND id <= k + step AND {EXPIRED_COND};
    SET k = k + step;
  END WHILE;
END//
-- What a sweep batch of the store does: a READ COMMITTED transaction that finds the key
-- of the `lim`-th expired row after its position (in primary key order), then deletes
-- the expired rows up to it.
CREATE PROCEDURE probed(IN lim INT)
BEGIN
  DECLARE pos BIGINT DEFAULT 0;
  DECLARE hi BIGINT;
  DECLARE n BIGINT;
  SET SESSION tx_isolation = 'READ-COMMITTED';
  batches: LOOP
    START TRANSACTION;
    SELECT COUNT(*), MAX(k) INTO n, hi FROM (
      SELECT id AS k FROM t FORCE INDEX (PRIMARY)
      WHERE id > pos AND id <= {TOKENS} AND {EXPIRED_COND} ORDER BY id LIMIT lim) s;
    IF hi IS NULL THEN COMMIT; LEAVE batches; END IF;
    DELETE FROM t WHERE id > pos AND id <= hi AND {EXPIRED_COND};
    COMMIT;
    SET pos = hi;
  END LOOP;
END//
DELIMITER ;
"""

FRESH = f"""
USE {DB}; DROP TABLE IF EXISTS t;
CREATE TABLE t (id BIGINT AUTO_INCREMENT PRIMARY KEY, token_type VARCHAR(64) NOT NULL,
  token_hash VARCHAR(128) NOT NULL UNIQUE, subject VARCHAR(255) NULL,
  expires_at DATETIME(6) NOT NULL, created_at DATETIME(6) NULL, used_at DATETIME(6) NULL,
  KEY type_expires (token_type, expires_at), KEY type_used (token_type, used_at));
INSERT INTO t (id, token_type, token_hash, expires_at)
  SELECT id, token_type, token_hash, expires_at FROM seed ORDER BY id;
ANALYZE TABLE t;
"""

# (name, SQL, whether purge is held back while it runs)
VARIANTS = [
    ("one DELETE", f"DELETE FROM t WHERE {EXPIRED_COND}", False),
    ("windows of 1000 keys, each committed", "CALL windows(1000)", False),
    ("the same windows, one transaction", "SET autocommit = 0; CALL windows(1000); COMMIT", False),
    ("probe + delete per batch of 1000, each committed", "CALL probed(1000)", False),
    ("windows of 1000 keys, each committed, purge held back", "CALL windows(1000)", True),
    ("probe + delete per batch of 1000, purge held back", "CALL probed(1000)", True),
]


class Client:
    def __init__(self, command):
        self.command = shlex.split(command)

    def run(self, sql, database=None):
        args = self.command + ["-N", "-B"] + ([database] if database else [])
        done = subprocess.run(args, input=sql, text=True, capture_output=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"mysql failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def hold_purge(self):
        """A connection holding a read view (which stops purge) until it is killed."""
        holder = subprocess.Popen(
            self.command + [DB],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        holder.stdin.write(
            "START TRANSACTION WITH CONSISTENT SNAPSHOT; SELECT COUNT(*) FROM seed WHERE id = 1;\n"
        )
        holder.stdin.flush()
        time.sleep(1)
        return holder

    def innodb_status(self):
        return self.run("SHOW ENGINE INNODB STATUS\\G")

    def wait_for_purge(self):
        """Waits until purge has caught up with every transaction so far."""
        number = lambda label, text: int(re.search(label + r"\s*(\d+)", text).group(1))
        target = number("Trx id counter", self.innodb_status())
        while number(r"Purge done for trx's n:o <", self.innodb_status()) < target:
            time.sleep(0.2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--mysql", default="mysql -uroot -h127.0.0.1")
    args = parser.parse_args()
    client = Client(args.mysql)
    client.run(SETUP)
    timings = {name: [] for name, _, _ in VARIANTS}
    purged = {name: [] for name, _, _ in VARIANTS}
    for round_ in range(args.rounds):
        for name, sql, held in VARIANTS:
            client.run(FRESH)
            client.wait_for_purge()
            holder = client.hold_purge() if held else None
            started = time.monotonic()
            client.run(sql, DB)
            took = time.monotonic() - started
            if holder:
                holder.stdin.close()  # the client commits nothing and quits: the view ends
                holder.wait()
            client.wait_for_purge()
            until_purged = time.monotonic() - started
            timings[name].append(took)
            purged[name].append(until_purged)
            print(f"round {round_ + 1}: {name}: {took:.2f} s (until purged {until_purged:.2f} s)")
    single = statistics.median(timings[VARIANTS[0][0]])
    single_purged = statistics.median(purged[VARIANTS[0][0]])
    print(f"\nmedians of {args.rounds}, as ratios to one DELETE ({single:.2f} s; "
          f"{single_purged:.2f} s until purged)")
    for name, _, _ in VARIANTS:
        ratio = statistics.median(timings[name]) / single
        ratio_purged = statistics.median(purged[name]) / single_purged
        print(f"  {name:<58} {ratio:5.2f}x   until purged {ratio_purged:5.2f}x")
    client.run(f"DROP DATABASE {DB}")


if __name__ == "__main__":
    main()
