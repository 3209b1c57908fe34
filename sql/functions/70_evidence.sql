-- sql/functions/70_evidence.sql
-- Evidence photos (server/api_evidence.c, server/evidence.c; tables in
-- sql/migrations/0014_evidence.sql). The server has checked the bytes before any of these run:
-- p_sha is the SHA-256 of what it received, p_type what the bytes are (not what the client
-- said). The bytes themselves live in the evidence store, never here.

-- What an uploader and a reader see of a photo.
CREATE FUNCTION gp_evidence_json(e evidence) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('sha256', e.sha256, 'size', e.size, 'content_type', e.content_type,
                              'path', '/api/v1/evidence/' || e.sha256,
                              'created_at', e.created_at, 'expires_at', e.expires_at)
$$;

-- Does a report that p_actor may read refer to the photo? Staff and auditors whose subtree
-- holds the report's task (the readers of gp_assignment_get besides the worker).
CREATE FUNCTION gp_evidence_in_scope(p_actor bigint, p_sha text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM reports r JOIN tasks t ON t.id = r.task_id
         WHERE r.evidence @> jsonb_build_array(jsonb_build_object('sha256', p_sha))
           AND gp_report_reader(p_actor, t.unit_id, r.worker_id))
$$;

-- Records an upload whose bytes the server checked, BEFORE it stores them (so that the store
-- never holds bytes no row accounts for, which the retention sweep could never find).
-- -> {"created": true when this call made the photo known (201), "evidence": ...}. The same
-- bytes again, by anyone, answer the same evidence with created = false (200). Bytes being
-- deleted right now answer 503 evidence_busy (retry: they are stored again once gone); bytes
-- deleted earlier are known again from now on, with a new retention.
CREATE FUNCTION gp_evidence_put(p_actor bigint, p_sha text, p_size bigint, p_type text,
                                p_retention_s int)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    e evidence;
    v_created boolean := false;
    v_retention interval := make_interval(secs => p_retention_s);
BEGIN
    INSERT INTO evidence (sha256, size, content_type, uploaded_by, retention, expires_at)
    VALUES (p_sha, p_size, p_type, p_actor, v_retention, now() + v_retention)
    ON CONFLICT (sha256) DO NOTHING
    RETURNING * INTO e;
    IF FOUND THEN
        v_created := true;
    ELSE
        SELECT * INTO e FROM evidence WHERE sha256 = p_sha FOR UPDATE;
        IF e.state = 'deleting' THEN
            PERFORM gp_raise('503', 'evidence_busy',
                             'this photo is being deleted: send it again shortly', 'sha256');
        ELSIF e.state = 'deleted' THEN
            UPDATE evidence
               SET state = 'stored', deleted_at = NULL, size = p_size, content_type = p_type,
                   uploaded_by = p_actor, created_at = now(), retention = v_retention,
                   expires_at = now() + v_retention
             WHERE sha256 = p_sha
            RETURNING * INTO e;
            v_created := true;
        ELSIF e.size <> p_size OR e.content_type <> p_type THEN
            -- Same SHA-256, other bytes: not for a real photo. Refuse rather than mix them.
            PERFORM gp_raise('409', 'evidence_conflict',
                             'a different photo is stored under this hash', 'sha256');
        END IF;
    END IF;
    INSERT INTO evidence_uploaders (sha256, person_id) VALUES (p_sha, p_actor)
    ON CONFLICT DO NOTHING;
    RETURN jsonb_build_object('created', v_created, 'evidence', gp_evidence_json(e));
END
$$;

-- A photo for p_actor to download: its uploaders, and staff and auditors who may read a
-- report that refers to it. Anyone else gets the 404 of a photo that does not exist.
CREATE FUNCTION gp_evidence_get(p_actor bigint, p_sha text) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    e evidence;
BEGIN
    SELECT * INTO e FROM evidence WHERE sha256 = p_sha AND state = 'stored';
    IF NOT FOUND
       OR NOT (EXISTS (SELECT 1 FROM evidence_uploaders u
                        WHERE u.sha256 = p_sha AND u.person_id = p_actor)
               OR gp_evidence_in_scope(p_actor, p_sha)) THEN
        PERFORM gp_raise('404', 'evidence_not_found', 'evidence not found', 'sha256');
    END IF;
    RETURN gp_evidence_json(e);
END
$$;

-- The retention timer (server/evidence.c, run by the janitor on the database clock).
-- p_args: {"retention_s", "flagged_retention_s"} from the config. Takes up to p_batch stored
-- photos past their expiry: one that a flagged or rejected report refers to is kept until
-- created_at + flagged_retention (once; "extended" counts them); the others are leased for 5
-- minutes ("deleting") and returned in "claimed" for the server to remove from the store,
-- after which gp_evidence_deleted marks them. Leases that ran out (a server died while
-- removing) are claimed again. SKIP LOCKED and the lease keep two instances off one photo.
CREATE FUNCTION gp_evidence_sweep(p_batch int, p_args jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_flagged interval := make_interval(secs => coalesce((p_args ->> 'flagged_retention_s')::int, 0));
    v_lease interval := interval '5 minutes';
    e evidence;
    v_claimed jsonb := '[]';
    v_extended int := 0;
BEGIN
    FOR e IN SELECT * FROM evidence
              WHERE state = 'stored' AND expires_at <= now()
              ORDER BY expires_at LIMIT p_batch
              FOR UPDATE SKIP LOCKED LOOP
        IF e.created_at + v_flagged > now() AND EXISTS (
               SELECT 1 FROM reports r JOIN assignments a ON a.id = r.assignment_id
                WHERE r.evidence @> jsonb_build_array(jsonb_build_object('sha256', e.sha256))
                  AND (cardinality(r.flags) > 0 OR a.state = 'rejected')) THEN
            UPDATE evidence SET expires_at = e.created_at + v_flagged WHERE sha256 = e.sha256;
            v_extended := v_extended + 1;
        ELSE
            UPDATE evidence SET state = 'deleting', lease_until = now() + v_lease
             WHERE sha256 = e.sha256;
            v_claimed := v_claimed || to_jsonb(e.sha256);
        END IF;
    END LOOP;
    FOR e IN SELECT * FROM evidence
              WHERE state = 'deleting' AND lease_until <= now()
              ORDER BY lease_until LIMIT greatest(p_batch - jsonb_array_length(v_claimed), 0)
              FOR UPDATE SKIP LOCKED LOOP
        UPDATE evidence SET lease_until = now() + v_lease WHERE sha256 = e.sha256;
        v_claimed := v_claimed || to_jsonb(e.sha256);
    END LOOP;
    RETURN jsonb_build_object('claimed', v_claimed, 'extended', v_extended,
                              'more', jsonb_array_length(v_claimed) + v_extended >= p_batch);
END
$$;

-- The claimed photos whose bytes the server removed: marked deleted, each once (a photo whose
-- lease ran out and that another sweep claimed again is marked by whichever comes first), with
-- an audit row each (actor: the system; unit: the first uploader's) -> {"deleted": [...]}.
CREATE FUNCTION gp_evidence_deleted(p_hashes jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    e evidence;
    v_out jsonb := '[]';
BEGIN
    IF jsonb_typeof(p_hashes) IS DISTINCT FROM 'array' THEN
        PERFORM gp_raise('400', 'invalid_argument', 'a list of hashes is required');
    END IF;
    FOR e IN UPDATE evidence SET state = 'deleted', lease_until = NULL, deleted_at = now()
              WHERE sha256 IN (SELECT jsonb_array_elements_text(p_hashes))
                AND state = 'deleting'
             RETURNING * LOOP
        PERFORM gp_audit(NULL, 'evidence.delete', 'evidence', e.sha256,
                         (SELECT unit_id FROM persons WHERE id = e.uploaded_by),
                         gp_evidence_json(e) || jsonb_build_object('uploaded_by', e.uploaded_by),
                         jsonb_build_object('state', 'deleted', 'deleted_at', e.deleted_at),
                         'retention');
        v_out := v_out || (gp_evidence_json(e) || jsonb_build_object('deleted_at', e.deleted_at));
    END LOOP;
    RETURN jsonb_build_object('deleted', v_out);
END
$$;
