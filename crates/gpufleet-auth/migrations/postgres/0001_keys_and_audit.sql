-- Runs with search_path set to the store's own schema: every object below lands there.

-- API keys: only the SHA-256 of each key is stored, never the key.
CREATE TABLE api_keys (
    prefix         TEXT PRIMARY KEY,
    hash           BYTEA NOT NULL,
    owner          TEXT NOT NULL,
    role           TEXT NOT NULL,
    label          TEXT,
    created_at_ms  BIGINT NOT NULL,
    expires_at_ms  BIGINT,
    revoked_at_ms  BIGINT,
    last_used_ms   BIGINT,
    allowed_models TEXT -- JSON array of model names; NULL = every model
);

-- The audit chain. `id` is the chain position, assigned by the appender inside its write
-- transaction (last id + 1, under a table lock), not by a sequence.
CREATE TABLE audit_log (
    id         BIGINT PRIMARY KEY,
    time_ms    BIGINT NOT NULL,
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
    prev_hash  BYTEA NOT NULL,
    hash       BYTEA NOT NULL
);

CREATE INDEX audit_log_time ON audit_log (time_ms);
CREATE INDEX audit_log_action ON audit_log (action, id);
CREATE INDEX audit_log_key_prefix ON audit_log (key_prefix, id);
CREATE INDEX audit_log_owner ON audit_log (owner, id);

-- Records are never updated, and deleted only by retention, which sets the transaction-local
-- `gpufleet.audit_retention` to 'on' first. This stops mistakes, not an attacker with write
-- access (who can drop the trigger); the hash chain is what detects that.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('gpufleet.audit_retention', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP;
END
$$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- Where the chain starts after retention removed its oldest records: the last removed record.
CREATE TABLE audit_anchor (
    singleton SMALLINT PRIMARY KEY CHECK (singleton = 1),
    last_id   BIGINT NOT NULL,
    last_hash BYTEA NOT NULL
);
