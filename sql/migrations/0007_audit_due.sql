-- sql/0007_audit_due.sql
-- Audit sealer fix (sql/0006_audit.sql, docs/AUDIT.md §4): when is a verification pass due.
--
-- 0006 started a pass as soon as audit.checkpoint_max_tx transactions were sealed since the
-- last *stored* checkpoint. Where no checkpoint can be stored (no instance holds a key, or the
-- key is not registered) that condition stays true, and passes ran back to back forever. Now
-- the count runs from the last clean pass, so a pass is due after checkpoint_interval or after
-- checkpoint_max_tx new transactions, whichever comes first, whether or not the previous
-- candidate was signed. And p_verify_batch = 0 means "seal only": instances without a signing
-- key pass 0 (server/audit.c), so they never spend database time on passes nobody will sign.

-- One round of the sealer (any instance, any time; rounds of several instances serialize on
-- the head row and a busy head is skipped, never waited for):
--  1. seal: append up to p_batch committed transactions below the snapshot's xmin, in
--     (xid, id) order, as leaves idx = size, size + 1, ... with their complete subtrees;
--  2. verify: when a pass is due (p_interval_s since the last clean one, or p_max_tx sealed
--     since the last checkpoint) start one; advance it by up to p_verify_batch leaves:
--     re-derive each from the ledger rows, zip with the stored leaves, fold the re-derived
--     hashes, compare with every checkpoint crossed; a mismatch raises the alarm;
--  3. when the pass reaches the head: clear a standing alarm, and if the log grew since the
--     last checkpoint, make the head the candidate to sign.
-- Returns {"busy"} or {"size", "sealed", "verified", "more", "alarm", "candidate": {"size",
-- "root" (base64), "at"}}; "more" asks the janitor to run again at once.
CREATE OR REPLACE FUNCTION gp_audit_seal(p_batch int, p_verify_batch int, p_interval_s int, p_max_tx bigint)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    h audit_head;
    v_xmin xid8;
    r record;
    v_size bigint;
    v_front bytea[];
    v_carry bytea;
    v_n bigint;
    v_lvl int;
    v_sealed int := 0;
    v_verified int := 0;
    v_last_cp audit_checkpoints;
    v_due boolean;
    v_end bigint;
    v_cp_root bytea;
    v_detail jsonb;
    v_cand jsonb;
    v_more boolean := false;
BEGIN
    SELECT * INTO h FROM audit_head FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('busy', true);
    END IF;

    -- 1. seal. Everything below xmin has finished: what is committed is visible to the next
    -- statement's (newer) snapshot, and nothing can still commit below it.
    v_xmin := pg_snapshot_xmin(pg_current_snapshot());
    v_size := h.size;
    v_front := h.frontier;
    FOR r IN
        SELECT d.id, d.xid, d.data FROM audit_txn_data d
         WHERE d.xid < v_xmin
           AND (h.last_xid IS NULL OR (d.xid, d.id) > (h.last_xid, h.last_txn))
         ORDER BY d.xid, d.id LIMIT p_batch
    LOOP
        v_carry := gp_audit_leaf_hash(r.data);
        INSERT INTO audit_leaves (idx, txn_id, txn_xid, hash) VALUES (v_size, r.id, r.xid, v_carry);
        v_n := v_size;
        v_lvl := 0;
        WHILE v_n & 1 = 1 LOOP
            v_carry := gp_audit_node_hash(v_front[array_length(v_front, 1)], v_carry);
            v_front := v_front[1:array_length(v_front, 1) - 1];
            v_lvl := v_lvl + 1;
            INSERT INTO audit_nodes (level, idx, hash) VALUES (v_lvl, v_size >> v_lvl, v_carry);
            v_n := v_n >> 1;
        END LOOP;
        v_front := v_front || v_carry;
        v_size := v_size + 1;
        v_sealed := v_sealed + 1;
        h.last_xid := r.xid;
        h.last_txn := r.id;
    END LOOP;
    IF v_sealed > 0 THEN
        h.size := v_size;
        h.frontier := v_front;
        h.root := gp_audit_frontier_root(v_front);
        v_more := v_sealed >= p_batch;
    END IF;

    -- 2. verify
    SELECT * INTO v_last_cp FROM audit_checkpoints ORDER BY size DESC LIMIT 1;
    IF h.vpos IS NULL THEN
        v_due := p_verify_batch > 0 AND h.size > 0 AND (h.verified_at IS NULL
                 OR h.verified_at <= now() - make_interval(secs => p_interval_s)
                 OR h.size - coalesce(h.verified_size, 0) >= p_max_tx);
        IF v_due THEN
            h.vpos := 0;
            h.vlast_xid := NULL;
            h.vlast_txn := NULL;
            h.vfrontier := '{}';
            h.vstarted_at := now();
        END IF;
    END IF;
    IF h.vpos IS NOT NULL AND p_verify_batch > 0 THEN
        v_end := least(h.vpos + p_verify_batch, h.size);
        v_front := h.vfrontier;
        FOR r IN
            WITH lv AS (
                SELECT l.idx, l.txn_id, l.hash, row_number() OVER (ORDER BY l.idx) AS k
                  FROM audit_leaves l WHERE l.idx >= h.vpos AND l.idx < v_end),
            tx AS (
                SELECT d.id, d.xid, d.data, row_number() OVER (ORDER BY d.xid, d.id) AS k
                  FROM (SELECT * FROM audit_txn_data d
                         WHERE (h.vlast_xid IS NULL OR (d.xid, d.id) > (h.vlast_xid, h.vlast_txn))
                           AND (d.xid, d.id) <= (h.last_xid, h.last_txn)
                         ORDER BY d.xid, d.id LIMIT v_end - h.vpos) d)
            SELECT lv.idx, lv.txn_id AS leaf_txn, lv.hash AS leaf_hash, tx.id AS txn, tx.xid,
                   tx.data, coalesce(lv.k, tx.k) AS k
              FROM lv FULL JOIN tx ON tx.k = lv.k
             ORDER BY coalesce(lv.k, tx.k)
        LOOP
            v_detail := NULL;
            IF r.idx IS NULL THEN
                v_detail := jsonb_build_object('reason', 'inserted', 'txn_id', r.txn,
                    'log_index', h.vpos + r.k - 1,
                    'message', format('transaction %s is in the ledger before the head of the '
                                      'log but was never sealed (inserted into sealed history)',
                                      r.txn));
            ELSIF r.txn IS NULL OR r.txn <> r.leaf_txn THEN
                IF NOT EXISTS (SELECT 1 FROM ledger_txns WHERE id = r.leaf_txn) THEN
                    v_detail := jsonb_build_object('reason', 'deleted', 'txn_id', r.leaf_txn,
                        'log_index', r.idx,
                        'message', format('transaction %s sealed at log index %s is missing '
                                          'from the ledger', r.leaf_txn, r.idx));
                ELSIF r.txn IS NOT NULL
                      AND NOT EXISTS (SELECT 1 FROM audit_leaves WHERE txn_id = r.txn) THEN
                    v_detail := jsonb_build_object('reason', 'inserted', 'txn_id', r.txn,
                        'log_index', r.idx,
                        'message', format('transaction %s is in the ledger before the head of '
                                          'the log but was never sealed (inserted into sealed '
                                          'history at log index %s)', r.txn, r.idx));
                ELSE
                    v_detail := jsonb_build_object('reason', 'reordered', 'txn_id', r.leaf_txn,
                        'log_index', r.idx, 'found_txn_id', r.txn,
                        'message', format('log index %s holds transaction %s but the ledger '
                                          'now orders transaction %s there', r.idx,
                                          r.leaf_txn, r.txn));
                END IF;
            ELSIF gp_audit_leaf_hash(r.data) <> r.leaf_hash THEN
                v_detail := jsonb_build_object('reason', 'altered', 'txn_id', r.txn,
                    'log_index', r.idx,
                    'message', format('transaction %s at log index %s differs from its sealed '
                                      'leaf (a posting or a field was changed)', r.txn, r.idx));
            END IF;
            IF v_detail IS NOT NULL THEN
                PERFORM gp_audit_raise_alarm(v_detail);
                UPDATE audit_head SET size = h.size, root = h.root, frontier = h.frontier,
                       last_xid = h.last_xid, last_txn = h.last_txn WHERE id;
                RETURN jsonb_build_object('size', h.size, 'sealed', v_sealed,
                                          'verified', v_verified, 'more', v_more,
                                          'alarm', v_detail, 'new_alarm', true);
            END IF;
            -- fold the re-derived hash (equal to the stored one here)
            v_carry := r.leaf_hash;
            v_n := r.idx;
            WHILE v_n & 1 = 1 LOOP
                v_carry := gp_audit_node_hash(v_front[array_length(v_front, 1)], v_carry);
                v_front := v_front[1:array_length(v_front, 1) - 1];
                v_n := v_n >> 1;
            END LOOP;
            v_front := v_front || v_carry;
            h.vpos := r.idx + 1;
            h.vlast_xid := r.xid;
            h.vlast_txn := r.txn;
            v_verified := v_verified + 1;
            SELECT root INTO v_cp_root FROM audit_checkpoints WHERE size = h.vpos;
            IF FOUND AND v_cp_root <> gp_audit_frontier_root(v_front) THEN
                v_detail := jsonb_build_object('reason', 'checkpoint_mismatch',
                    'log_index', h.vpos - 1, 'checkpoint_size', h.vpos,
                    'message', format('the leaves up to log index %s no longer hash to the '
                                      'signed checkpoint of size %s', h.vpos - 1, h.vpos));
                PERFORM gp_audit_raise_alarm(v_detail);
                UPDATE audit_head SET size = h.size, root = h.root, frontier = h.frontier,
                       last_xid = h.last_xid, last_txn = h.last_txn WHERE id;
                RETURN jsonb_build_object('size', h.size, 'sealed', v_sealed,
                                          'verified', v_verified, 'more', v_more,
                                          'alarm', v_detail, 'new_alarm', true);
            END IF;
        END LOOP;
        h.vfrontier := v_front;
        IF h.vpos < h.size THEN
            v_more := true;
        ELSE
            -- 3. the pass reached the head
            IF gp_audit_frontier_root(v_front) <> h.root THEN
                v_detail := jsonb_build_object('reason', 'tree_mismatch', 'log_index', h.size - 1,
                    'message', 'the stored tree head differs from the tree re-derived from '
                               'the ledger');
                PERFORM gp_audit_raise_alarm(v_detail);
                UPDATE audit_head SET size = h.size, root = h.root, frontier = h.frontier,
                       last_xid = h.last_xid, last_txn = h.last_txn WHERE id;
                RETURN jsonb_build_object('size', h.size, 'sealed', v_sealed,
                                          'verified', v_verified, 'alarm', v_detail,
                                          'new_alarm', true);
            END IF;
            IF h.alarm IS NOT NULL THEN
                INSERT INTO audit_alarms (event, detail) VALUES ('cleared', h.alarm);
                h.alarm := NULL;
            END IF;
            h.verified_at := now();
            h.verified_size := h.size;
            IF h.size > coalesce(v_last_cp.size, 0) THEN
                h.cand_size := h.size;
                h.cand_root := h.root;
                h.cand_at := date_trunc('milliseconds', now());
            END IF;
            h.vpos := NULL;
            h.vlast_xid := NULL;
            h.vlast_txn := NULL;
            h.vfrontier := '{}';
            h.vstarted_at := NULL;
        END IF;
    END IF;

    IF h.cand_size IS NOT NULL AND h.alarm IS NULL THEN
        v_cand := jsonb_build_object('size', h.cand_size, 'root', encode(h.cand_root, 'base64'),
                                     'at', gp_audit_ts(h.cand_at));
    END IF;
    UPDATE audit_head SET size = h.size, root = h.root, frontier = h.frontier,
           last_xid = h.last_xid, last_txn = h.last_txn, vpos = h.vpos, vlast_xid = h.vlast_xid,
           vlast_txn = h.vlast_txn, vfrontier = h.vfrontier, vstarted_at = h.vstarted_at,
           verified_at = h.verified_at, verified_size = h.verified_size, cand_size = h.cand_size,
           cand_root = h.cand_root, cand_at = h.cand_at, alarm = h.alarm, updated_at = now()
     WHERE id;
    RETURN jsonb_build_object('size', h.size, 'sealed', v_sealed, 'verified', v_verified,
                              'more', v_more, 'alarm', h.alarm, 'candidate', v_cand);
END
$$;
