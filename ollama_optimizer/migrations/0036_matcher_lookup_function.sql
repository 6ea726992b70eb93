-- The matcher's lookup as one server-side function: windows largest first, each a small statement of its
-- own (planned once per session), so a lookup pays for the windows it reads rather than for one plan
-- holding every window. Expand only: a new function, which older releases do not call.
--
-- p_fps, p_ks: the query's fingerprint and k per window, largest window first; p_keys0..3: its probe keys
-- per block position, one row per window (rows padded with a repeat of one of their keys; a row of -1
-- has none). Returns the candidates of the top window (the largest with any of p_version): all of them
-- when it has at most p_limit rows, else at most p_limit rows per probe key, smallest stable window first.
CREATE OR REPLACE FUNCTION matcher_lookup(
    p_version integer, p_fps bigint[], p_ks integer[],
    p_keys0 integer[], p_keys1 integer[], p_keys2 integer[], p_keys3 integer[], p_limit integer
) RETURNS TABLE (template_id bigint, stable_window integer, distance bigint)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    s integer;
    q bigint;
    k integer;
    found_rows integer;
    ids bigint[];
    stables integer[];
    distances bigint[];
BEGIN
    FOR s IN 1 .. coalesce(array_length(p_fps, 1), 0) LOOP
        q := p_fps[s];
        k := p_ks[s];
        SELECT count(*), array_agg(c.template_id), array_agg(c.stable_window), array_agg(c.distance)
        INTO found_rows, ids, stables, distances
        FROM (
            SELECT f.template_id, f.stable_window, bit_count((f.fp # q)::bit(64)) AS distance
            FROM matcher_fingerprint f WHERE f.k0 = ANY(p_keys0[s:s]) AND bit_count((f.fp # q)::bit(64)) <= k
            UNION ALL
            SELECT f.template_id, f.stable_window, bit_count((f.fp # q)::bit(64))
            FROM matcher_fingerprint f WHERE f.k1 = ANY(p_keys1[s:s]) AND bit_count((f.fp # q)::bit(64)) <= k
            UNION ALL
            SELECT f.template_id, f.stable_window, bit_count((f.fp # q)::bit(64))
            FROM matcher_fingerprint f WHERE f.k2 = ANY(p_keys2[s:s]) AND bit_count((f.fp # q)::bit(64)) <= k
            UNION ALL
            SELECT f.template_id, f.stable_window, bit_count((f.fp # q)::bit(64))
            FROM matcher_fingerprint f WHERE f.k3 = ANY(p_keys3[s:s]) AND bit_count((f.fp # q)::bit(64)) <= k
            LIMIT p_limit + 1
        ) c;
        IF found_rows = 0 THEN
            CONTINUE;
        ELSIF found_rows <= p_limit THEN
            RETURN QUERY
            SELECT c.template_id, c.stable_window, c.distance
            FROM unnest(ids, stables, distances) AS c(template_id, stable_window, distance)
            JOIN matcher_template t ON t.id = c.template_id AND t.algorithm_version = p_version;
        ELSE
            RETURN QUERY
            SELECT x.template_id, x.stable_window, x.distance
            FROM (  -- one row per template (a template found through several keys is looked up once)
                SELECT z.template_id, min(z.stable_window) AS stable_window, min(z.distance) AS distance FROM (
                SELECT y.* FROM (SELECT DISTINCT unnest(p_keys0[s:s])) AS p(key) CROSS JOIN LATERAL (
                    SELECT f.template_id, f.stable_window, bit_count((f.fp # q)::bit(64)) AS distance
                    FROM matcher_fingerprint f WHERE f.k0 = p.key AND bit_count((f.fp # q)::bit(64)) <= k
                    ORDER BY f.stable_window LIMIT p_limit) y
                UNION ALL
                SELECT y.* FROM (SELECT DISTINCT unnest(p_keys1[s:s])) AS p(key) CROSS JOIN LATERAL (
                    SELECT f.template_id, f.stable_window, bit_count((f.fp # q)::bit(64)) AS distance
                    FROM matcher_fingerprint f WHERE f.k1 = p.key AND bit_count((f.fp # q)::bit(64)) <= k
                    ORDER BY f.stable_window LIMIT p_limit) y
                UNION ALL
                SELECT y.* FROM (SELECT DISTINCT unnest(p_keys2[s:s])) AS p(key) CROSS JOIN LATERAL (
                    SELECT f.template_id, f.stable_window, bit_count((f.fp # q)::bit(64)) AS distance
                    FROM matcher_fingerprint f WHERE f.k2 = p.key AND bit_count((f.fp # q)::bit(64)) <= k
                    ORDER BY f.stable_window LIMIT p_limit) y
                UNION ALL
                SELECT y.* FROM (SELECT DISTINCT unnest(p_keys3[s:s])) AS p(key) CROSS JOIN LATERAL (
                    SELECT f.template_id, f.stable_window, bit_count((f.fp # q)::bit(64)) AS distance
                    FROM matcher_fingerprint f WHERE f.k3 = p.key AND bit_count((f.fp # q)::bit(64)) <= k
                    ORDER BY f.stable_window LIMIT p_limit) y
                ) z GROUP BY z.template_id
            ) x
            JOIN matcher_template t ON t.id = x.template_id AND t.algorithm_version = p_version;
        END IF;
        IF FOUND THEN
            RETURN;
        END IF;
    END LOOP;
END
$$;
