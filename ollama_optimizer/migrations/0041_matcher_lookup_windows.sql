-- The matcher's lookup at every window of the query, not only the largest with a candidate: a template
-- whose fixed head ends below a window stays visible when other templates are within k at that window.
-- Each window is matcher_lookup (0036) on that window alone, so each is bounded as there (all of a window's
-- candidates when it has at most p_limit rows, else at most p_limit rows per probe key). Expand only: a new
-- function, which older releases do not call.
CREATE OR REPLACE FUNCTION matcher_lookup_windows(
    p_version integer, p_windows integer[], p_fps bigint[], p_ks integer[],
    p_keys0 integer[], p_keys1 integer[], p_keys2 integer[], p_keys3 integer[], p_limit integer
) RETURNS TABLE (template_id bigint, window_size integer, stable_window integer, distance bigint)
LANGUAGE sql STABLE AS $$
    SELECT l.template_id, p_windows[s], l.stable_window, l.distance
    FROM generate_subscripts(p_fps, 1) AS s
    CROSS JOIN LATERAL matcher_lookup(
        p_version, p_fps[s:s], p_ks[s:s], p_keys0[s:s], p_keys1[s:s], p_keys2[s:s], p_keys3[s:s], p_limit
    ) AS l
$$;
