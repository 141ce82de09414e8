-- Second factors: TOTP authenticators and recovery codes (passkeys follow).
-- A TOTP factor is saved unconfirmed while the person scans its QR code and
-- counts only once a code has confirmed it. `last_step` is the newest time
-- step a code of it was accepted for: a code is taken only for a later step,
-- in one UPDATE, so no code works twice, on any worker or replica.
-- `secret_sealed` is AES-GCM under a key derived from the secret key, bound
-- to the user: the table alone holds no usable secret.

CREATE TABLE totp_factors (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          text NOT NULL,
    secret_sealed bytea NOT NULL,
    created_at    timestamptz NOT NULL,
    confirmed_at  timestamptz,
    last_step     bigint,
    last_used_at  timestamptz
);
CREATE INDEX totp_factors_user_id ON totp_factors (user_id);

-- Only a keyed hash of each code; `used_at` set once, by the one UPDATE that takes it.
CREATE TABLE recovery_codes (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  bytea NOT NULL,
    created_at timestamptz NOT NULL,
    used_at    timestamptz,
    UNIQUE (user_id, code_hash)
);
