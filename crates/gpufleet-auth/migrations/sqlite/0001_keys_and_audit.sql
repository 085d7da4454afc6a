-- API keys: only the SHA-256 of each key is stored, never the key.
CREATE TABLE api_keys (
    prefix         TEXT PRIMARY KEY NOT NULL,
    hash           BLOB NOT NULL,
    owner          TEXT NOT NULL,
    role           TEXT NOT NULL,
    label          TEXT,
    created_at_ms  INTEGER NOT NULL,
    expires_at_ms  INTEGER,
    revoked_at_ms  INTEGER,
    last_used_ms   INTEGER,
    allowed_models TEXT -- JSON array of model names; NULL = every model
) STRICT;

-- The audit chain. `id` is the chain position, assigned by the appender inside its write
-- transaction (last id + 1), not by AUTOINCREMENT.
CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY NOT NULL,
    time_ms    INTEGER NOT NULL,
    key_prefix TEXT,
    owner      TEXT,
    role       TEXT,
    client_ip  TEXT,
    method     TEXT NOT NULL,
    route      TEXT NOT NULL,
    target     TEXT NOT NULL,
    action     TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    request_id TEXT,
    prev_hash  BLOB NOT NULL,
    hash       BLOB NOT NULL
) STRICT;

CREATE INDEX audit_log_time ON audit_log (time_ms);
CREATE INDEX audit_log_action ON audit_log (action, id);
CREATE INDEX audit_log_key_prefix ON audit_log (key_prefix, id);
CREATE INDEX audit_log_owner ON audit_log (owner, id);

-- Records are never updated. This stops mistakes, not an attacker with write access (who can drop
-- the trigger); the hash chain is what detects that.
CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

-- Where the chain starts after retention removed its oldest records: the last removed record.
CREATE TABLE audit_anchor (
    singleton INTEGER PRIMARY KEY NOT NULL CHECK (singleton = 1),
    last_id   INTEGER NOT NULL,
    last_hash BLOB NOT NULL
) STRICT;
