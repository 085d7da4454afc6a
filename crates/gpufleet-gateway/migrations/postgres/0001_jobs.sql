-- Runs with search_path set to the job store's own schema: every object below lands there.

-- One row per job: status, the backend's answer or the last error, and when it expires.
CREATE TABLE gateway_jobs (
    id         TEXT PRIMARY KEY,
    status     TEXT NOT NULL,
    model      TEXT NOT NULL,
    endpoint   TEXT NOT NULL,
    priority   TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    attempts   BIGINT NOT NULL,
    result     TEXT,
    error      TEXT,
    expires_ms BIGINT
);

CREATE INDEX gateway_jobs_expiry ON gateway_jobs (expires_ms) WHERE expires_ms IS NOT NULL;

-- Dead letters already retried or discarded (each is handled once).
CREATE TABLE gateway_dlq_resolved (
    id     TEXT PRIMARY KEY,
    action TEXT NOT NULL,
    at_ms  BIGINT NOT NULL
);
