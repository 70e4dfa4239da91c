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

-- One call = one round trip = one transaction (the caller runs it in autocommit mode).
-- p_streams/p_expected: one entry per stream (expected NULL = any version, 0 = a new stream);
-- the other arrays: one entry per event, in append order.
DROP FUNCTION IF EXISTS es_append(jsonb, jsonb);
CREATE OR REPLACE FUNCTION es_append(
    p_streams text[], p_expected integer[],
    p_event_stream text[], p_event_ids uuid[], p_types text[], p_schema integer[], p_sources text[],
    p_data jsonb[], p_meta jsonb[], p_occurred timestamptz[])
RETURNS TABLE (o_event_id uuid, o_stream text, o_version integer, o_position bigint, o_duplicate boolean)
LANGUAGE plpgsql AS $$
DECLARE
    total   integer := cardinality(p_event_ids);
    head    bigint;
    dup     integer;
    cur     integer;
    current integer[] := '{}';
BEGIN
    -- The gap-free mechanism: the head row lock is taken first and held until commit, so
    -- positions are handed out in commit order (a reader that has read up to p never later meets
    -- a committed event below p), and every check below runs with no other append in flight.
    UPDATE es_head SET position = position + total WHERE id = 1 RETURNING position INTO head;

    SELECT count(*) INTO dup FROM es_events e WHERE e.event_id = ANY (p_event_ids);
    IF dup > 0 THEN
        UPDATE es_head SET position = position - total WHERE id = 1;  -- nothing appended: no hole
        IF dup < total THEN
            RAISE EXCEPTION '% of % events are already stored', dup, total USING ERRCODE = 'ES002';
        END IF;
        RETURN QUERY SELECT e.event_id, e.stream, e.version, e.position, true FROM es_events e
         WHERE e.event_id = ANY (p_event_ids);
        RETURN;
    END IF;

    FOR i IN 1 .. cardinality(p_streams) LOOP
        SELECT e.version INTO cur FROM es_events e WHERE e.stream = p_streams[i]
         ORDER BY e.version DESC LIMIT 1;
        cur := coalesce(cur, 0);
        IF p_expected[i] IS NOT NULL AND p_expected[i] <> cur THEN
            RAISE EXCEPTION 'stream % is at version %, expected %', p_streams[i], cur, p_expected[i]
                USING ERRCODE = 'ES001', DETAIL = cur::text;
        END IF;
        current := current || cur;
    END LOOP;

    RETURN QUERY
    INSERT INTO es_events (position, stream, version, event_id, type, schema_version, source, data, meta, occurred_at)
    SELECT head - total + e.ord,
           e.stream,
           c.cur + (row_number() OVER (PARTITION BY e.stream ORDER BY e.ord))::integer,
           e.id, e.type, e.sv, e.src, e.data, e.meta, e.occ
      FROM unnest(p_event_stream, p_event_ids, p_types, p_schema, p_sources, p_data, p_meta, p_occurred)
               WITH ORDINALITY AS e(stream, id, type, sv, src, data, meta, occ, ord)
      JOIN unnest(p_streams, current) AS c(name, cur) ON c.name = e.stream
    RETURNING event_id, stream, version, position, false;

    PERFORM pg_notify('es_appended', head::text);
END $$;
