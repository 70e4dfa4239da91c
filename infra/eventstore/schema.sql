-- Append-only event store. One row per event; es_head serialises appends (see store.py).
-- A stream's version is its highest event version (the unique (stream, version) index finds it).
CREATE TABLE IF NOT EXISTS es_events (
    position       bigint      PRIMARY KEY,
    stream         text        NOT NULL,
    version        integer     NOT NULL,
    event_id       uuid        NOT NULL,
    type           text        NOT NULL,
    schema_version integer     NOT NULL,
    source         text        NOT NULL,
    data           jsonb       NOT NULL,
    meta           jsonb       NOT NULL,
    occurred_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT es_events_stream_version UNIQUE (stream, version),
    CONSTRAINT es_events_event_id UNIQUE (event_id)
);
CREATE TABLE IF NOT EXISTS es_head (
    id       smallint PRIMARY KEY CHECK (id = 1),
    position bigint   NOT NULL
);
INSERT INTO es_head VALUES (1, 0) ON CONFLICT DO NOTHING;

-- Checkpoints of readers that live beside the store (the relay).
CREATE TABLE IF NOT EXISTS es_checkpoints (
    name       text        PRIMARY KEY,
    position   bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION es_forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event store is append-only (% refused)', TG_OP USING ERRCODE = 'ES003';
END $$;
DROP TRIGGER IF EXISTS es_events_append_only ON es_events;
CREATE TRIGGER es_events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON es_events
    FOR EACH STATEMENT EXECUTE FUNCTION es_forbid_change();

-- One call = one round trip = one transaction (the caller runs it in autocommit mode), carrying
-- one or more append requests (store.py groups concurrent appends of a process into one call).
-- Per request r: its streams are p_streams[p_stream_lo[r] .. p_stream_hi[r]] (expected NULL = any
-- version, 0 = a new stream), its events p_event_*[p_event_lo[r] .. p_event_hi[r]] in append order.
-- Each request gets its own outcome rows (o_request = r): 'ok' (one row per stored event),
-- 'duplicate' (every event id already stored: the stored rows), 'partial' (some but not all
-- already stored; nothing stored) or 'conflict' (o_stream is at version o_actual; nothing stored).
-- Requests run in order, so a later request sees what an earlier one of the same call stored.
DROP FUNCTION IF EXISTS es_append(jsonb, jsonb);
DROP FUNCTION IF EXISTS es_append(text[], integer[], text[], uuid[], text[], integer[], text[],
                                  jsonb[], jsonb[], timestamptz[]);
CREATE OR REPLACE FUNCTION es_append(
    p_stream_lo integer[], p_stream_hi integer[], p_event_lo integer[], p_event_hi integer[],
    p_streams text[], p_expected integer[],
    p_event_stream text[], p_event_ids uuid[], p_types text[], p_schema integer[], p_sources text[],
    p_data jsonb[], p_meta jsonb[], p_occurred timestamptz[])
RETURNS TABLE (o_event_id uuid, o_stream text, o_version integer, o_position bigint, o_duplicate boolean,
               o_request integer, o_status text, o_actual integer)
LANGUAGE plpgsql AS $$
DECLARE
    v_head    bigint;
    v_start   bigint;
    v_n       integer;
    v_dup     integer;
    v_cur     integer;
    v_bad     boolean;
    v_lo      integer;
    v_hi      integer;
    v_current integer[];
BEGIN
    -- The gap-free mechanism: the head row lock is taken first and held until commit, so
    -- positions are handed out in commit order (a reader that has read up to p never later meets
    -- a committed event below p), and every check below runs with no other append in flight.
    SELECT h.position INTO v_head FROM es_head h WHERE h.id = 1 FOR UPDATE;
    v_start := v_head;

    FOR r IN 1 .. cardinality(p_event_lo) LOOP
        v_lo := p_event_lo[r];
        v_hi := p_event_hi[r];
        v_n := v_hi - v_lo + 1;
        SELECT count(*) INTO v_dup FROM es_events e WHERE e.event_id = ANY (p_event_ids[v_lo:v_hi]);
        IF v_dup = v_n THEN
            RETURN QUERY SELECT e.event_id, e.stream, e.version, e.position, true, r, 'duplicate'::text, NULL::integer
              FROM es_events e WHERE e.event_id = ANY (p_event_ids[v_lo:v_hi]);
            CONTINUE;
        ELSIF v_dup > 0 THEN
            RETURN QUERY SELECT NULL::uuid, NULL::text, NULL::integer, NULL::bigint, false, r, 'partial'::text, v_dup;
            CONTINUE;
        END IF;

        v_bad := false;
        v_current := '{}';
        FOR s IN p_stream_lo[r] .. p_stream_hi[r] LOOP
            SELECT e.version INTO v_cur FROM es_events e WHERE e.stream = p_streams[s]
             ORDER BY e.version DESC LIMIT 1;
            v_cur := coalesce(v_cur, 0);
            IF p_expected[s] IS NOT NULL AND p_expected[s] <> v_cur THEN
                RETURN QUERY SELECT NULL::uuid, p_streams[s], NULL::integer, NULL::bigint, false, r,
                                    'conflict'::text, v_cur;
                v_bad := true;
                EXIT;
            END IF;
            v_current := v_current || v_cur;
        END LOOP;
        CONTINUE WHEN v_bad;

        RETURN QUERY
        INSERT INTO es_events (position, stream, version, event_id, type, schema_version, source, data, meta, occurred_at)
        SELECT v_head + e.ord,
               e.stream,
               c.cur + (row_number() OVER (PARTITION BY e.stream ORDER BY e.ord))::integer,
               e.id, e.type, e.sv, e.src, e.data, e.meta, e.occ
          FROM unnest(p_event_stream[v_lo:v_hi], p_event_ids[v_lo:v_hi], p_types[v_lo:v_hi],
                      p_schema[v_lo:v_hi], p_sources[v_lo:v_hi], p_data[v_lo:v_hi], p_meta[v_lo:v_hi],
                      p_occurred[v_lo:v_hi])
                   WITH ORDINALITY AS e(stream, id, type, sv, src, data, meta, occ, ord)
          JOIN unnest(p_streams[p_stream_lo[r]:p_stream_hi[r]], v_current) AS c(name, cur) ON c.name = e.stream
        RETURNING es_events.event_id, es_events.stream, es_events.version, es_events.position, false, r,
                  'ok'::text, NULL::integer;
        v_head := v_head + v_n;
    END LOOP;

    IF v_head > v_start THEN
        UPDATE es_head SET position = v_head WHERE id = 1;
        PERFORM pg_notify('es_appended', v_head::text);
    END IF;
END $$;
