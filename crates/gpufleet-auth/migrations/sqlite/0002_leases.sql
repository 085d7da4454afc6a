-- Leases for once-per-fleet work (health cycles, partition maintenance, the watchdog): one row
-- per lease name; the holder keeps it until `expires_ms` (epoch ms, the holders' clock) unless
-- it renews or releases it.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY NOT NULL,
    holder     TEXT NOT NULL,
    expires_ms INTEGER NOT NULL
) STRICT;
