-- Sign-in attempts counted per username and per client IP within login.window.
-- Kept in PostgreSQL so the limit holds across workers and replicas.
-- A row is written *before* the password is checked (so parallel guesses
-- cannot all slip under the limit) and removed again if the attempt
-- succeeds or is refused; what remains are failures. `cleared` marks
-- failures a later successful sign-in forgave for the username's count; the
-- IP's count still sees them.
CREATE TABLE login_failures (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       timestamptz NOT NULL,
    username text NOT NULL,
    ip       text NOT NULL,
    cleared  boolean NOT NULL DEFAULT false
);
CREATE INDEX login_failures_username_at ON login_failures (username, at);
CREATE INDEX login_failures_ip_at ON login_failures (ip, at);
