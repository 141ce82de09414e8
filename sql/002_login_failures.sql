-- Failed sign-ins, counted per username and per client IP within login.window.
-- Kept in PostgreSQL so the limit holds across workers and replicas.
CREATE TABLE login_failures (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       timestamptz NOT NULL,
    username text NOT NULL,
    ip       text NOT NULL
);
CREATE INDEX login_failures_username_at ON login_failures (username, at);
CREATE INDEX login_failures_ip_at ON login_failures (ip, at);
