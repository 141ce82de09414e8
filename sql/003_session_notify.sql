-- Tell every gateway process when sessions end or users change, so their
-- in-process session caches drop the entry at once. Triggers rather than
-- application code: a revocation by the CLI, by SQL, by the purge or by
-- another replica is announced the same way. NOTIFY is sent on commit.
-- Payloads: 's:<hex sha256>,...' for ended sessions, 'u:<user id>' for a
-- changed or deleted user, 'all' when too many ended at once to list.

CREATE FUNCTION gateway_sessions_ended() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ended integer;
    hashes text;
BEGIN
    SELECT count(*), string_agg(encode(token_hash, 'hex'), ',')
    INTO ended, hashes FROM ended_sessions;
    IF ended > 100 THEN  -- NOTIFY payloads stop at 8000 bytes
        PERFORM pg_notify('gateway_sessions', 'all');
    ELSIF ended > 0 THEN
        PERFORM pg_notify('gateway_sessions', 's:' || hashes);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER sessions_ended AFTER DELETE ON sessions
    REFERENCING OLD TABLE AS ended_sessions
    FOR EACH STATEMENT EXECUTE FUNCTION gateway_sessions_ended();

CREATE FUNCTION gateway_sessions_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('gateway_sessions', 'all');
    RETURN NULL;
END $$;

CREATE TRIGGER sessions_truncated AFTER TRUNCATE ON sessions
    FOR EACH STATEMENT EXECUTE FUNCTION gateway_sessions_truncated();

CREATE FUNCTION gateway_user_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('gateway_sessions', 'u:' || OLD.id);
    RETURN NULL;
END $$;

-- Only what a cached identity holds; a password change leaves sessions alone.
CREATE TRIGGER users_changed AFTER UPDATE OF username, email, display_name, groups, disabled
    OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION gateway_user_changed();
