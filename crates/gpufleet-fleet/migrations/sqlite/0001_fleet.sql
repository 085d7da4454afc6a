-- The host registry, the health-check history and state-change events. Host metrics live in
-- monthly tables `host_metrics_YYYY_MM`, created at run time (see src/store/sqlite.rs).
CREATE TABLE hosts (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    name                 TEXT NOT NULL UNIQUE,
    address              TEXT NOT NULL,
    agent_url            TEXT NOT NULL,
    groups_json          TEXT NOT NULL,            -- JSON array of group names
    tags_json            TEXT NOT NULL,            -- JSON object
    status               TEXT NOT NULL,            -- active | inactive | maintenance
    watchdog             INTEGER NOT NULL,         -- 0 | 1
    state                TEXT NOT NULL,            -- healthy | degraded | critical | unreachable | unknown
    last_seen_ms         INTEGER,
    last_check_ms        INTEGER,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    created_ms           INTEGER NOT NULL,
    updated_ms           INTEGER NOT NULL
) STRICT;
CREATE INDEX hosts_stale ON hosts (status, last_check_ms, id);

-- One row per check; `components` holds only the components that were not ok (NULL when all were).
CREATE TABLE health_checks (
    host_id    INTEGER NOT NULL,
    at_ms      INTEGER NOT NULL,
    state      TEXT NOT NULL,
    latency_ms REAL NOT NULL,
    error      TEXT,
    components TEXT,
    failures   INTEGER NOT NULL
) STRICT;
CREATE INDEX health_checks_host_at ON health_checks (host_id, at_ms);
CREATE INDEX health_checks_at ON health_checks (at_ms);

CREATE TABLE state_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    host_id    INTEGER NOT NULL,
    host       TEXT NOT NULL,
    at_ms      INTEGER NOT NULL,
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL,
    reason     TEXT NOT NULL
) STRICT;
CREATE INDEX state_events_at ON state_events (at_ms);
CREATE INDEX state_events_host_at ON state_events (host_id, at_ms);
