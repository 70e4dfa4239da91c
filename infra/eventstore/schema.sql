-- Append-only event store. One row per event; es_head serialises appends (see store.py).
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
CREATE TABLE IF NOT EXISTS es_streams (
    stream  text    PRIMARY KEY,
    version integer NOT NULL
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

-- p_expect: [{"stream": s, "expected": n | null, "count": k}], p_events: [{event row}] in order.
-- One call = one round trip = one transaction (the caller runs it in autocommit mode).
CREATE OR REPLACE FUNCTION es_append(p_expect jsonb, p_events jsonb)
RETURNS TABLE (o_event_id uuid, o_stream text, o_version integer, o_position bigint, o_duplicate boolean)
LANGUAGE plpgsql AS $$
DECLARE
    s       record;
    cur     integer;
    dup     integer;
    total   integer := jsonb_array_length(p_events);
    head    bigint;
    starts  jsonb := '{}'::jsonb;
BEGIN
    SELECT count(*) INTO dup FROM es_events e
     WHERE e.event_id IN (SELECT (x->>'event_id')::uuid FROM jsonb_array_elements(p_events) x);
    IF dup = total THEN
        RETURN QUERY SELECT e.event_id, e.stream, e.version, e.position, true FROM es_events e
         WHERE e.event_id IN (SELECT (x->>'event_id')::uuid FROM jsonb_array_elements(p_events) x);
        RETURN;
    ELSIF dup > 0 THEN
        RAISE EXCEPTION '% of % events are already stored', dup, total USING ERRCODE = 'ES002';
    END IF;

    -- Stream rows are locked in name order, then the head row: no lock cycle between appenders.
    FOR s IN SELECT x->>'stream' AS stream, (x->>'expected')::integer AS expected, (x->>'count')::integer AS cnt
               FROM jsonb_array_elements(p_expect) x ORDER BY 1 LOOP
        cur := NULL;
        IF s.expected IS NULL THEN
            INSERT INTO es_streams AS t VALUES (s.stream, s.cnt)
                ON CONFLICT (stream) DO UPDATE SET version = t.version + s.cnt
                RETURNING t.version INTO cur;
        ELSIF s.expected = 0 THEN
            INSERT INTO es_streams VALUES (s.stream, s.cnt) ON CONFLICT DO NOTHING RETURNING version INTO cur;
        ELSE
            UPDATE es_streams SET version = version + s.cnt
             WHERE stream = s.stream AND version = s.expected RETURNING version INTO cur;
        END IF;
        IF cur IS NULL THEN
            SELECT version INTO cur FROM es_streams WHERE stream = s.stream;
            RAISE EXCEPTION 'stream % is at version %, expected %', s.stream, coalesce(cur, 0), s.expected
                USING ERRCODE = 'ES001', DETAIL = coalesce(cur, 0)::text;
        END IF;
        starts := starts || jsonb_build_object(s.stream, cur - s.cnt + 1);
    END LOOP;

    -- The head row lock is held until commit, so positions are handed out in commit order:
    -- a reader that has seen position p can never later meet a committed event below p.
    UPDATE es_head SET position = position + total WHERE id = 1 RETURNING position INTO head;

    RETURN QUERY
    INSERT INTO es_events (position, stream, version, event_id, type, schema_version, source, data, meta, occurred_at)
    SELECT head - total + x.ord,
           x.e->>'stream',
           (starts->>(x.e->>'stream'))::integer
               + (row_number() OVER (PARTITION BY x.e->>'stream' ORDER BY x.ord))::integer - 1,
           (x.e->>'event_id')::uuid,
           x.e->>'type',
           (x.e->>'schema_version')::integer,
           x.e->>'source',
           x.e->'data',
           x.e->'meta',
           (x.e->>'occurred_at')::timestamptz
      FROM jsonb_array_elements(p_events) WITH ORDINALITY AS x(e, ord)
    RETURNING event_id, stream, version, position, false;

    PERFORM pg_notify('es_appended', head::text);
END $$;
