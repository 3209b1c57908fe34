-- sql/functions/60_audit.sql
-- The sealed ledger log (tables and the audit_txn_data view: sql/migrations/0006_audit.sql;
-- prose: docs/AUDIT.md): Merkle hashes and proofs, the sealer and its verification pass, the
-- checkpoint store and keys, and the auditor's reads.

CREATE FUNCTION gp_audit_leaf_hash(p_data text) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256('\x00'::bytea || convert_to(p_data, 'UTF8'))
$$;

CREATE FUNCTION gp_audit_node_hash(p_left bytea, p_right bytea) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256('\x01'::bytea || p_left || p_right)
$$;

-- Root of a compact range (the complete subtrees' roots, left to right): folded from the
-- right, as RFC 6962's MTH splits at the largest power of two.
CREATE FUNCTION gp_audit_frontier_root(p_frontier bytea[]) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    n int := coalesce(array_length(p_frontier, 1), 0);
    r bytea;
BEGIN
    IF n = 0 THEN
        RETURN sha256(''::bytea);
    END IF;
    r := p_frontier[n];
    FOR i IN REVERSE n - 1 .. 1 LOOP
        r := gp_audit_node_hash(p_frontier[i], r);
    END LOOP;
    RETURN r;
END
$$;

------------------------------------------------------------------------------------------
-- The stored tree: MTH of any range and the RFC 6962 proofs
------------------------------------------------------------------------------------------
-- MTH(D[lo:hi]) from the stored leaves and complete subtrees.
CREATE FUNCTION gp_audit_mth(p_lo bigint, p_hi bigint) RETURNS bytea
LANGUAGE plpgsql STABLE AS $$
DECLARE
    n bigint := p_hi - p_lo;
    k bigint := 1;
    lvl int := 0;
    h bytea;
BEGIN
    IF n <= 0 THEN
        RETURN sha256(''::bytea);
    ELSIF n = 1 THEN
        SELECT hash INTO h FROM audit_leaves WHERE idx = p_lo;
        RETURN h;
    END IF;
    IF n & (n - 1) = 0 AND p_lo % n = 0 THEN
        WHILE (1::bigint << lvl) < n LOOP
            lvl := lvl + 1;
        END LOOP;
        SELECT hash INTO h FROM audit_nodes WHERE level = lvl AND idx = p_lo >> lvl;
        RETURN h;
    END IF;
    WHILE k * 2 < n LOOP
        k := k * 2;
    END LOOP;
    RETURN gp_audit_node_hash(gp_audit_mth(p_lo, p_lo + k), gp_audit_mth(p_lo + k, p_hi));
END
$$;

-- RFC 6962 §2.1.1 PATH(m, D[lo:hi]), deepest sibling first.
CREATE FUNCTION gp_audit_path(p_m bigint, p_lo bigint, p_hi bigint) RETURNS bytea[]
LANGUAGE plpgsql STABLE AS $$
DECLARE
    n bigint := p_hi - p_lo;
    k bigint := 1;
BEGIN
    IF n <= 1 THEN
        RETURN '{}';
    END IF;
    WHILE k * 2 < n LOOP
        k := k * 2;
    END LOOP;
    IF p_m < p_lo + k THEN
        RETURN gp_audit_path(p_m, p_lo, p_lo + k) || gp_audit_mth(p_lo + k, p_hi);
    END IF;
    RETURN gp_audit_path(p_m, p_lo + k, p_hi) || gp_audit_mth(p_lo, p_lo + k);
END
$$;

-- RFC 6962 §2.1.2 SUBPROOF(m, D[lo:hi], b), m relative to lo.
CREATE FUNCTION gp_audit_subproof(p_m bigint, p_lo bigint, p_hi bigint, p_b boolean)
RETURNS bytea[] LANGUAGE plpgsql STABLE AS $$
DECLARE
    n bigint := p_hi - p_lo;
    k bigint := 1;
BEGIN
    IF p_m = n THEN
        RETURN CASE WHEN p_b THEN '{}'::bytea[] ELSE ARRAY[gp_audit_mth(p_lo, p_hi)] END;
    END IF;
    WHILE k * 2 < n LOOP
        k := k * 2;
    END LOOP;
    IF p_m <= k THEN
        RETURN gp_audit_subproof(p_m, p_lo, p_lo + k, p_b) || gp_audit_mth(p_lo + k, p_hi);
    END IF;
    RETURN gp_audit_subproof(p_m - k, p_lo + k, p_hi, false) || gp_audit_mth(p_lo, p_lo + k);
END
$$;

CREATE FUNCTION gp_audit_hexes(p bytea[]) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(jsonb_agg(encode(h, 'hex') ORDER BY n), '[]')
      FROM unnest(p) WITH ORDINALITY AS x (h, n)
$$;

CREATE FUNCTION gp_audit_checkpoint_json(c audit_checkpoints) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN c.size IS NULL THEN NULL ELSE
        jsonb_build_object('size', c.size, 'root', encode(c.root, 'hex'), 'at', c.at,
                           'key_id', c.key_id, 'note', c.note) END
$$;

-- The checkpoint proofs are anchored to: the given size, or the latest.
CREATE FUNCTION gp_audit_anchor(p_size bigint) RETURNS audit_checkpoints
LANGUAGE plpgsql STABLE AS $$
DECLARE
    c audit_checkpoints;
BEGIN
    IF p_size IS NULL THEN
        SELECT * INTO c FROM audit_checkpoints ORDER BY size DESC LIMIT 1;
    ELSE
        SELECT * INTO c FROM audit_checkpoints WHERE size = p_size;
        IF NOT FOUND THEN
            PERFORM gp_raise('404', 'checkpoint_not_found', 'no checkpoint of that size',
                             'checkpoint');
        END IF;
    END IF;
    RETURN c;
END
$$;

------------------------------------------------------------------------------------------
-- The sealer
------------------------------------------------------------------------------------------
-- Records an alarm once (a standing alarm with the same detail is not repeated).
CREATE FUNCTION gp_audit_raise_alarm(p_detail jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT alarm FROM audit_head) IS DISTINCT FROM p_detail THEN
        INSERT INTO audit_alarms (event, detail) VALUES ('raised', p_detail);
    END IF;
    UPDATE audit_head SET alarm = p_detail, vpos = NULL, vlast_xid = NULL, vlast_txn = NULL,
                          vfrontier = '{}', vstarted_at = NULL, vfull = NULL, vfrom = NULL,
                          cand_size = NULL,
                          cand_root = NULL, cand_at = NULL, updated_at = now();
END
$$;

-- One round of the sealer (any instance, any time; rounds of several instances serialize on
-- the head row and a busy head is skipped, never waited for):
--  1. seal: append up to p_batch committed transactions below the snapshot's xmin, in
--     (xid, id) order, as leaves idx = size, size + 1, ... with their complete subtrees;
--  2. verify: when a pass is due (p_interval_s since the last clean one, or p_max_tx sealed
--     since the last checkpoint) start one; advance it by up to p_verify_batch leaves:
--     re-derive each from the ledger rows, zip with the stored leaves, fold the re-derived
--     hashes, compare with every checkpoint crossed; a mismatch raises the alarm. A pass is
--     incremental: it starts where the last clean pass ended (its re-derived compact range and
--     sort key, vbase_*), so it costs what was sealed since. It is full (from index 0) when
--     there is no such base, when a full pass was requested (gp_audit_request_full_pass),
--     while an alarm stands (only a full clean pass clears one), and when the last full pass
--     is p_full_interval_s old;
--  3. when the pass reaches the head: clear a standing alarm, and if the log grew since the
--     last checkpoint, make the head the candidate to sign.
-- Returns {"busy"} or {"size", "sealed", "verified", "more", "alarm", "candidate": {"size",
-- "root" (base64), "at"}}; "more" asks the janitor to run again at once.
CREATE FUNCTION gp_audit_seal(p_batch int, p_verify_batch int, p_interval_s int, p_max_tx bigint,
                              p_full_interval_s int DEFAULT 86400)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = gp, public, pg_temp AS $$
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
            h.vfull := h.vbase_frontier IS NULL OR h.verified_size IS NULL OR h.full_requested
                       OR h.alarm IS NOT NULL OR h.full_verified_at IS NULL
                       OR h.full_verified_at
                          <= now() - make_interval(secs => coalesce(p_full_interval_s, 86400));
            IF h.vfull THEN
                h.vpos := 0;
                h.vlast_xid := NULL;
                h.vlast_txn := NULL;
                h.vfrontier := '{}';
            ELSE
                h.vpos := h.verified_size;
                h.vlast_xid := h.vbase_xid;
                h.vlast_txn := h.vbase_txn;
                h.vfrontier := h.vbase_frontier;
            END IF;
            h.vfrom := h.vpos;
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
            h.verified_from := h.vfrom;
            h.verified_full := h.vfull;
            h.vbase_xid := h.vlast_xid;
            h.vbase_txn := h.vlast_txn;
            h.vbase_frontier := v_front;
            IF h.vfull THEN
                h.full_verified_at := now();
                h.full_requested := false;
            END IF;
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
            h.vfull := NULL;
            h.vfrom := NULL;
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
           cand_root = h.cand_root, cand_at = h.cand_at, alarm = h.alarm, vfull = h.vfull,
           vfrom = h.vfrom, vbase_xid = h.vbase_xid, vbase_txn = h.vbase_txn,
           vbase_frontier = h.vbase_frontier, verified_from = h.verified_from,
           verified_full = h.verified_full, full_verified_at = h.full_verified_at,
           full_requested = h.full_requested, updated_at = now()
     WHERE id;
    RETURN jsonb_build_object('size', h.size, 'sealed', v_sealed, 'verified', v_verified,
                              'more', v_more, 'alarm', h.alarm, 'candidate', v_cand);
END
$$;

-- The body of the signed note of a checkpoint (docs/AUDIT.md §4): origin, size, base64 root,
-- the time line; each line ends in a newline.
CREATE FUNCTION gp_audit_note_body(p_origin text, p_size bigint, p_root bytea, p_at timestamptz)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT p_origin || E'\n' || p_size || E'\n' || encode(p_root, 'base64') || E'\n'
           || 'time ' || gp_audit_ts(p_at) || E'\n'
$$;

-- Stores a signed candidate. Refuses (stored=false with a reason) while an alarm stands, when
-- the candidate is stale, when the key is unknown or not valid at the checkpoint's time, and
-- when the root is not consistent with the previous checkpoint in the stored tree. A second
-- instance storing the same size with the same root is told "already"; with another root it
-- is a fork: the alarm is raised and nothing is stored. The UNIQUE size makes this hold even
-- between two transactions that both passed the checks.
CREATE FUNCTION gp_audit_checkpoint_store(p_size bigint, p_root_b64 text, p_at text,
                                          p_key_id text, p_note text)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = gp, public, pg_temp AS $$
DECLARE
    h audit_head;
    v_root bytea := decode(p_root_b64, 'base64');
    v_at timestamptz := p_at::timestamptz;
    c audit_checkpoints;
    prev audit_checkpoints;
    k audit_keys;
    v_detail jsonb;
BEGIN
    SELECT * INTO h FROM audit_head FOR UPDATE;
    SELECT * INTO c FROM audit_checkpoints WHERE size = p_size;
    IF FOUND THEN
        IF c.root = v_root THEN
            RETURN jsonb_build_object('stored', false, 'reason', 'already', 'size', p_size);
        END IF;
        v_detail := jsonb_build_object('reason', 'fork', 'checkpoint_size', p_size,
            'message', format('a second root was offered for the signed size %s', p_size));
        PERFORM gp_audit_raise_alarm(v_detail);
        RETURN jsonb_build_object('stored', false, 'reason', 'fork', 'alarm', v_detail);
    END IF;
    IF h.alarm IS NOT NULL THEN
        RETURN jsonb_build_object('stored', false, 'reason', 'alarm', 'alarm', h.alarm);
    END IF;
    IF h.cand_size IS DISTINCT FROM p_size OR h.cand_root IS DISTINCT FROM v_root
       OR h.cand_at IS DISTINCT FROM v_at THEN
        RETURN jsonb_build_object('stored', false, 'reason', 'stale', 'size', p_size);
    END IF;
    SELECT * INTO k FROM audit_keys WHERE key_id = p_key_id;
    IF FOUND AND k.valid_until IS NULL AND v_at < k.valid_from THEN
        -- the candidate predates the current key (created or rotated since): verify afresh
        UPDATE audit_head SET cand_size = NULL, cand_root = NULL, cand_at = NULL,
                              verified_at = NULL, updated_at = now() WHERE id;
        RETURN jsonb_build_object('stored', false, 'reason', 'stale', 'size', p_size);
    END IF;
    IF NOT FOUND OR v_at < k.valid_from OR (k.valid_until IS NOT NULL AND v_at >= k.valid_until) THEN
        RETURN jsonb_build_object('stored', false, 'reason', 'key_not_valid', 'key_id', p_key_id);
    END IF;
    IF left(p_note, length(gp_audit_note_body(k.name, p_size, v_root, v_at)) + 1)
       <> gp_audit_note_body(k.name, p_size, v_root, v_at) || E'\n' THEN
        RETURN jsonb_build_object('stored', false, 'reason', 'note_mismatch', 'size', p_size);
    END IF;
    SELECT * INTO prev FROM audit_checkpoints ORDER BY size DESC LIMIT 1;
    IF prev.size IS NOT NULL AND (prev.size >= p_size OR gp_audit_mth(0, prev.size) <> prev.root) THEN
        v_detail := jsonb_build_object('reason', 'inconsistent', 'checkpoint_size', prev.size,
            'message', format('the stored tree is not consistent with the checkpoint of size %s',
                              prev.size));
        PERFORM gp_audit_raise_alarm(v_detail);
        RETURN jsonb_build_object('stored', false, 'reason', 'inconsistent', 'alarm', v_detail);
    END IF;
    IF gp_audit_mth(0, p_size) <> v_root THEN
        v_detail := jsonb_build_object('reason', 'tree_mismatch', 'checkpoint_size', p_size,
            'message', 'the stored tree does not hash to the candidate root');
        PERFORM gp_audit_raise_alarm(v_detail);
        RETURN jsonb_build_object('stored', false, 'reason', 'tree_mismatch', 'alarm', v_detail);
    END IF;
    INSERT INTO audit_checkpoints (size, root, at, key_id, note)
    VALUES (p_size, v_root, v_at, p_key_id, p_note);
    UPDATE audit_head SET cand_size = NULL, cand_root = NULL, cand_at = NULL, updated_at = now()
     WHERE id;
    RETURN jsonb_build_object('stored', true, 'size', p_size, 'key_id', p_key_id);
END
$$;

-- Registers a signing key (CLI audit-keygen / audit-rotate-key, as the admin role): closes the
-- current key's validity now and makes this one current, in one transaction with its audit row.
CREATE FUNCTION gp_audit_key_register(p_key_id text, p_name text, p_public_key bytea,
                                      p_vkey text, p_rotate boolean)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = gp, public, pg_temp AS $$
DECLARE
    old audit_keys;
    k audit_keys;
BEGIN
    SELECT * INTO k FROM audit_keys WHERE key_id = p_key_id;
    IF FOUND THEN
        IF k.public_key <> p_public_key THEN
            PERFORM gp_raise('409', 'key_id_collision', 'another key has this key id', 'key_id');
        END IF;
        RETURN jsonb_build_object('key_id', k.key_id, 'registered', false,
                                  'current', k.valid_until IS NULL);
    END IF;
    SELECT * INTO old FROM audit_keys WHERE valid_until IS NULL FOR UPDATE;
    IF FOUND AND NOT p_rotate THEN
        PERFORM gp_raise('409', 'key_exists',
            'a signing key is already registered; rotate it with audit-rotate-key', 'key_file');
    END IF;
    UPDATE audit_keys SET valid_until = now() WHERE valid_until IS NULL;
    INSERT INTO audit_keys (key_id, name, public_key, vkey) VALUES (p_key_id, p_name, p_public_key, p_vkey)
    RETURNING * INTO k;
    PERFORM gp_audit(NULL, CASE WHEN old.key_id IS NULL THEN 'audit.key_create'
                                ELSE 'audit.key_rotate' END,
                     'audit_key', p_key_id, NULL,
                     CASE WHEN old.key_id IS NULL THEN NULL
                          ELSE jsonb_build_object('key_id', old.key_id, 'vkey', old.vkey) END,
                     jsonb_build_object('key_id', k.key_id, 'vkey', k.vkey,
                                        'valid_from', k.valid_from));
    RETURN jsonb_build_object('key_id', k.key_id, 'registered', true, 'current', true,
                              'previous', old.key_id);
END
$$;

------------------------------------------------------------------------------------------
-- Read side: status, checkpoints, keys, proofs
------------------------------------------------------------------------------------------
CREATE FUNCTION gp_audit_keys_json() RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('keys', coalesce(jsonb_agg(jsonb_build_object(
               'key_id', key_id, 'name', name, 'vkey', vkey,
               'public_key', encode(public_key, 'base64'), 'valid_from', valid_from,
               'valid_until', valid_until) ORDER BY valid_from, key_id), '[]'))
      FROM audit_keys
$$;

CREATE FUNCTION gp_audit_latest_note() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT note FROM audit_checkpoints ORDER BY size DESC LIMIT 1
$$;

-- Sealer state for operators and auditors: {"size", "root", "unsealed", "last_checkpoint",
-- "verified_at", "verified_size", "verified_from", "verified_full" (what the last clean pass
-- covered: log indexes [verified_from, verified_size)), "full_verified_at",
-- "full_pass_requested", "pass": {"position", "started_at", "from", "full"}, "candidate_size",
-- "alarm", "alarms": [recent history]}.
CREATE FUNCTION gp_audit_status(p_actor bigint) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    h audit_head;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM role_grants g JOIN persons p ON p.id = g.person_id
                    WHERE g.person_id = p_actor AND g.role IN ('auditor', 'street_admin')
                      AND p.status = 'active') THEN
        PERFORM gp_raise('403', 'forbidden', 'only auditors and street admins read the audit log');
    END IF;
    SELECT * INTO h FROM audit_head;
    RETURN jsonb_build_object(
        'size', h.size, 'root', encode(h.root, 'hex'),
        'unsealed', (SELECT count(*) FROM ledger_txns t
                      WHERE h.last_xid IS NULL OR (t.xid, t.id) > (h.last_xid, h.last_txn)),
        'last_checkpoint', (SELECT gp_audit_checkpoint_json(c) FROM audit_checkpoints c
                             ORDER BY size DESC LIMIT 1),
        'checkpoints', (SELECT count(*) FROM audit_checkpoints),
        'verified_at', h.verified_at, 'verified_size', h.verified_size,
        'verified_from', h.verified_from, 'verified_full', h.verified_full,
        'full_verified_at', h.full_verified_at, 'full_pass_requested', h.full_requested,
        'pass', CASE WHEN h.vpos IS NULL THEN NULL
                     ELSE jsonb_build_object('position', h.vpos, 'started_at', h.vstarted_at,
                                             'from', h.vfrom, 'full', h.vfull) END,
        'candidate_size', h.cand_size,
        'alarm', h.alarm,
        'alarms', (SELECT coalesce(jsonb_agg(jsonb_build_object('id', id, 'at', at,
                                   'event', event, 'detail', detail) ORDER BY id DESC), '[]')
                     FROM (SELECT * FROM audit_alarms ORDER BY id DESC LIMIT 20) a));
END
$$;

-- Checkpoints, newest first, keyset-paginated on size.
CREATE FUNCTION gp_audit_checkpoints(p_actor bigint, p_before bigint, p_limit int)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_limit int := least(greatest(coalesce(p_limit, 50), 1), 1000);
    items jsonb;
BEGIN
    PERFORM gp_audit_status(p_actor) -> 'size'; -- the role check
    SELECT coalesce(jsonb_agg(gp_audit_checkpoint_json(c) || jsonb_build_object('id', c.size)
                              ORDER BY c.size DESC), '[]')
      INTO items
      FROM (SELECT * FROM audit_checkpoints WHERE p_before IS NULL OR size < p_before
             ORDER BY size DESC LIMIT v_limit + 1) c;
    RETURN gp_page(items, v_limit);
END
$$;

-- Consistency proof between two checkpoints (RFC 6962 §2.1.2).
CREATE FUNCTION gp_audit_consistency(p_actor bigint, p_from bigint, p_to bigint)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    a audit_checkpoints;
    b audit_checkpoints;
BEGIN
    PERFORM gp_audit_status(p_actor) -> 'size';
    a := gp_audit_anchor(p_from);
    b := gp_audit_anchor(p_to);
    IF a.size > b.size THEN
        PERFORM gp_raise('400', 'invalid_range', 'from must not be larger than to', 'from');
    END IF;
    RETURN jsonb_build_object('from', gp_audit_checkpoint_json(a), 'to', gp_audit_checkpoint_json(b),
        'proof', CASE WHEN a.size = b.size THEN '[]'::jsonb
                      ELSE gp_audit_hexes(gp_audit_subproof(a.size, 0, b.size, true)) END);
END
$$;

-- Scope of the auditor API: auditors and street admins over the unit, else 404.
CREATE FUNCTION gp_audit_roles() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['auditor', 'street_admin']
$$;

-- Is the ledger transaction visible to p_actor: an account it touches belongs to a unit the
-- actor audits, or it touches the actor's own worker accounts.
CREATE FUNCTION gp_audit_txn_visible(p_actor bigint, p_txn bigint) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM postings p JOIN accounts a ON a.id = p.account_id
         WHERE p.txn_id = p_txn
           AND ((a.unit_id IS NOT NULL AND gp_has_role(p_actor, gp_audit_roles(), a.unit_id))
                OR (a.kind IN ('worker', 'worker_pending') AND a.owner_id = p_actor)))
$$;

-- One item of a proof-carrying list: log position, leaf hash, leaf data and the inclusion
-- proof against anchor `c` (NULL fields when not sealed, or sealed after c).
CREATE FUNCTION gp_audit_seal_json(p_txn bigint, c audit_checkpoints, p_with_proof boolean)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    l audit_leaves;
BEGIN
    SELECT * INTO l FROM audit_leaves WHERE txn_id = p_txn;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('log_index', NULL, 'sealed', false);
    END IF;
    RETURN jsonb_build_object('log_index', l.idx, 'sealed', true, 'leaf_hash', encode(l.hash, 'hex'),
        'leaf_data', CASE WHEN p_with_proof THEN (SELECT data FROM audit_txn_data WHERE id = p_txn) END,
        'proof', CASE WHEN p_with_proof AND c.size IS NOT NULL AND l.idx < c.size
                      THEN gp_audit_hexes(gp_audit_path(l.idx, 0, c.size)) END,
        'checkpoint_size', CASE WHEN p_with_proof AND c.size IS NOT NULL AND l.idx < c.size
                                THEN c.size END);
END
$$;

-- GET /audit/v1/transactions/{id}/proof: the receipt's later half. The transaction must be
-- visible to the actor (auditor/street admin over a unit it touches, or the worker whose
-- account it touches), else 404. Not yet sealed: {"sealed": false}; sealed but after the
-- latest checkpoint: no proof yet.
CREATE FUNCTION gp_audit_txn_proof(p_actor bigint, p_txn bigint, p_size bigint)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    c audit_checkpoints;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ledger_txns WHERE id = p_txn)
       OR NOT gp_audit_txn_visible(p_actor, p_txn) THEN
        PERFORM gp_raise('404', 'txn_not_found', 'transaction not found', 'id');
    END IF;
    c := gp_audit_anchor(p_size);
    RETURN jsonb_build_object('txn_id', p_txn, 'checkpoint', gp_audit_checkpoint_json(c))
           || gp_audit_seal_json(p_txn, c, true);
END
$$;

------------------------------------------------------------------------------------------
-- Auditor API
------------------------------------------------------------------------------------------
-- A transaction as the auditor sees it (postings with their accounts' kind, owner and unit).
CREATE FUNCTION gp_audit_txn_json(t ledger_txns) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', t.id, 'kind', t.kind, 'actor_id', t.actor_id,
        'refs', t.refs, 'memo', t.memo, 'created_at', t.created_at,
        'log_index', (SELECT idx FROM audit_leaves WHERE txn_id = t.id),
        'postings', (SELECT coalesce(jsonb_agg(jsonb_build_object('id', p.id,
                        'account_id', p.account_id, 'account_kind', a.kind, 'owner_id', a.owner_id,
                        'unit_id', a.unit_id, 'amount', p.amount, 'version', p.account_version,
                        'balance_after', p.balance_after) ORDER BY p.account_id), '[]')
                       FROM postings p LEFT JOIN accounts a ON a.id = p.account_id
                      WHERE p.txn_id = t.id))
$$;

-- Transaction search in the subtree of p_unit: p_args {account_id, kind, from, to, after,
-- limit}; newest first, keyset on the transaction id.
CREATE FUNCTION gp_audit_txn_search(p_actor bigint, p_unit bigint, p_args jsonb)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    u org_units;
    v_limit int := least(greatest(coalesce((p_args ->> 'limit')::int, 50), 1), 1000);
    v_account bigint := (p_args ->> 'account_id')::bigint;
    v_kind text := p_args ->> 'kind';
    v_from timestamptz := (p_args ->> 'from')::timestamptz;
    v_to timestamptz := (p_args ->> 'to')::timestamptz;
    v_after bigint := (p_args ->> 'after')::bigint;
    items jsonb;
BEGIN
    u := gp_require_unit(p_actor, p_unit, gp_audit_roles());
    IF v_kind IS NOT NULL AND NOT (v_kind = ANY (gp_ledger_kinds())) THEN
        PERFORM gp_raise('400', 'invalid_kind', 'unknown transaction kind', 'kind');
    END IF;
    IF v_account IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM accounts a JOIN org_units au ON au.id = a.unit_id
             WHERE a.id = v_account AND au.path <@ u.path) THEN
        PERFORM gp_raise('404', 'account_not_found', 'account not found', 'account_id');
    END IF;
    SELECT coalesce(jsonb_agg(gp_audit_txn_json(t) ORDER BY t.id DESC), '[]') INTO items
      FROM (SELECT t.* FROM ledger_txns t
             WHERE t.id IN (SELECT p.txn_id FROM postings p
                              JOIN accounts a ON a.id = p.account_id
                              JOIN org_units au ON au.id = a.unit_id
                             WHERE au.path <@ u.path
                               AND (v_account IS NULL OR a.id = v_account))
               AND (v_kind IS NULL OR t.kind = v_kind)
               AND (v_from IS NULL OR t.created_at >= v_from)
               AND (v_to IS NULL OR t.created_at < v_to)
               AND (v_after IS NULL OR t.id < v_after)
             ORDER BY t.id DESC LIMIT v_limit + 1) t;
    RETURN gp_page(items, v_limit) || jsonb_build_object('unit_id', u.id);
END
$$;

-- A worker's statement for the auditor: every posting of the worker's two accounts, newest
-- first, each with its transaction's log position and -- with p_proofs -- the leaf data and
-- its inclusion proof against the latest checkpoint, which is returned alongside.
CREATE FUNCTION gp_audit_statement(p_actor bigint, p_worker bigint, p_args jsonb)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    w persons;
    c audit_checkpoints;
    v_limit int := least(greatest(coalesce((p_args ->> 'limit')::int, 50), 1), 500);
    v_from timestamptz := (p_args ->> 'from')::timestamptz;
    v_to timestamptz := (p_args ->> 'to')::timestamptz;
    v_after bigint := (p_args ->> 'after')::bigint;
    v_proofs boolean := coalesce((p_args ->> 'proofs')::boolean, false);
    items jsonb;
BEGIN
    w := gp_require_person(p_actor, p_worker, gp_audit_roles());
    c := gp_audit_anchor(NULL);
    SELECT coalesce(jsonb_agg(jsonb_build_object('id', x.id, 'txn_id', x.txn_id, 'kind', x.kind,
               'account', CASE x.account_kind WHEN 'worker' THEN 'available' ELSE 'pending' END,
               'amount', x.amount, 'balance_after', x.balance_after, 'version', x.account_version,
               'refs', x.refs, 'memo', x.memo, 'created_at', x.created_at)
               || gp_audit_seal_json(x.txn_id, c, v_proofs) ORDER BY x.id DESC), '[]')
      INTO items
      FROM (SELECT p.id, p.txn_id, t.kind, a.kind AS account_kind, p.amount, p.balance_after,
                   p.account_version, t.refs, t.memo, t.created_at
              FROM accounts a
              JOIN postings p ON p.account_id = a.id
              JOIN ledger_txns t ON t.id = p.txn_id
             WHERE a.kind IN ('worker', 'worker_pending') AND a.owner_id = p_worker
               AND (v_from IS NULL OR t.created_at >= v_from)
               AND (v_to IS NULL OR t.created_at < v_to)
               AND (v_after IS NULL OR p.id < v_after)
             ORDER BY p.id DESC LIMIT v_limit + 1) x;
    RETURN gp_page(items, v_limit) || jsonb_build_object('worker_id', w.id, 'name', w.name,
        'balance', gp_worker_state(w.id),
        'checkpoint', CASE WHEN v_proofs THEN gp_audit_checkpoint_json(c) END);
END
$$;

-- Trial balance of a subtree, derived from the postings in one snapshot: per (unit, kind) the
-- materialized balance and the sum of the postings (they must agree), and per kind the
-- counterparts outside the subtree (issuance, expiry, settlement, other units) of every
-- transaction that touched it. total = subtree + outside = 0 (every transaction sums to 0).
CREATE FUNCTION gp_audit_trial_balance(p_actor bigint, p_unit bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    u org_units;
BEGIN
    u := gp_require_unit(p_actor, p_unit, gp_audit_roles());
    RETURN (
    WITH acc AS (SELECT a.id, a.kind, a.unit_id, a.balance FROM accounts a
                   JOIN org_units au ON au.id = a.unit_id WHERE au.path <@ u.path),
    sums AS (SELECT p.account_id, sum(p.amount) AS s FROM postings p
               WHERE p.account_id IN (SELECT id FROM acc) GROUP BY p.account_id),
    per AS (SELECT acc.unit_id, acc.kind, count(*) AS accounts, sum(acc.balance) AS balance,
                   sum(coalesce(sums.s, 0)) AS postings,
                   count(*) FILTER (WHERE acc.balance <> coalesce(sums.s, 0)) AS mismatched
              FROM acc LEFT JOIN sums ON sums.account_id = acc.id GROUP BY acc.unit_id, acc.kind),
    txns AS (SELECT DISTINCT p.txn_id FROM postings p WHERE p.account_id IN (SELECT id FROM acc)),
    outside AS (SELECT coalesce(CASE WHEN a.unit_id IS NULL THEN a.kind END, 'other_units') AS kind,
                       sum(p.amount) AS s
                  FROM postings p JOIN txns ON txns.txn_id = p.txn_id
                  LEFT JOIN accounts a ON a.id = p.account_id
                 WHERE p.account_id NOT IN (SELECT id FROM acc) GROUP BY 1)
    SELECT jsonb_build_object('unit_id', u.id,
        'rows', (SELECT coalesce(jsonb_agg(jsonb_build_object('unit_id', per.unit_id,
                        'unit', ou.name, 'level', ou.level, 'kind', per.kind,
                        'accounts', per.accounts, 'balance', per.balance,
                        'postings', per.postings, 'mismatched', per.mismatched)
                        ORDER BY ou.path, per.kind), '[]')
                   FROM per JOIN org_units ou ON ou.id = per.unit_id),
        'by_kind', (SELECT coalesce(jsonb_object_agg(kind, s), '{}')
                      FROM (SELECT kind, sum(postings) AS s FROM per GROUP BY kind) k),
        'subtree_total', (SELECT coalesce(sum(postings), 0) FROM per),
        'outside', (SELECT coalesce(jsonb_object_agg(kind, s), '{}') FROM outside),
        'outside_total', (SELECT coalesce(sum(s), 0) FROM outside),
        'total', (SELECT coalesce(sum(postings), 0) FROM per) + (SELECT coalesce(sum(s), 0) FROM outside),
        'mismatched_accounts', (SELECT coalesce(sum(mismatched), 0) FROM per),
        'as_of', now()));
END
$$;

-- Budget use of a subtree: per community (or per child unit below a community) the budget
-- held, reserved in tasks, awarded and released; per task (paginated) its reservation.
CREATE FUNCTION gp_audit_budget_use(p_actor bigint, p_unit bigint, p_after bigint, p_limit int)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    u org_units;
    v_limit int := least(greatest(coalesce(p_limit, 50), 1), 500);
    groups jsonb;
    tasks jsonb;
BEGIN
    u := gp_require_unit(p_actor, p_unit, gp_audit_roles());
    WITH g AS (SELECT c.id, c.name, c.level, c.path FROM org_units c
                WHERE (u.level = 'street' AND c.parent_id = u.id AND c.level = 'community')
                   OR (u.level <> 'street' AND c.id = u.id)),
    flows AS (SELECT g.id,
                     sum(p.amount) FILTER (WHERE a.kind = 'budget') AS budget,
                     -sum(p.amount) FILTER (WHERE a.kind = 'reservation' AND t.kind = 'award') AS awarded,
                     sum(p.amount) FILTER (WHERE a.kind = 'reservation' AND t.kind = 'reserve') AS reserved_total,
                     -sum(p.amount) FILTER (WHERE a.kind = 'reservation' AND t.kind = 'release') AS released,
                     sum(p.amount) FILTER (WHERE a.kind = 'reservation') AS reserved_now
                FROM g JOIN org_units x ON x.path <@ g.path
                JOIN accounts a ON a.unit_id = x.id AND a.kind IN ('budget', 'reservation')
                JOIN postings p ON p.account_id = a.id
                JOIN ledger_txns t ON t.id = p.txn_id
               GROUP BY g.id)
    SELECT coalesce(jsonb_agg(jsonb_build_object('unit_id', g.id, 'name', g.name, 'level', g.level,
               'budget', coalesce(f.budget, 0), 'reserved_total', coalesce(f.reserved_total, 0),
               'awarded', coalesce(f.awarded, 0), 'released', coalesce(f.released, 0),
               'reserved_now', coalesce(f.reserved_now, 0)) ORDER BY g.id), '[]')
      INTO groups FROM g LEFT JOIN flows f ON f.id = g.id;
    SELECT coalesce(jsonb_agg(jsonb_build_object('id', x.id, 'task_id', x.id, 'title', x.title,
               'unit_id', x.unit_id, 'status', x.status, 'reward', x.reward, 'slots', x.slots,
               'approved', x.approved, 'reserved', x.reserved, 'awarded', x.awarded,
               'released', x.released, 'balance', x.balance) ORDER BY x.id DESC), '[]')
      INTO tasks
      FROM (SELECT tk.id, tk.title, tk.unit_id, tk.status, tk.reward, tk.slots, tk.approved,
                   coalesce(r.reserved, 0) AS reserved, coalesce(r.awarded, 0) AS awarded,
                   coalesce(r.released, 0) AS released, coalesce(ra.balance, 0) AS balance
              FROM tasks tk JOIN org_units tu ON tu.id = tk.unit_id
              LEFT JOIN accounts ra ON ra.kind = 'reservation' AND ra.owner_id = tk.id
              LEFT JOIN LATERAL (
                  SELECT sum(p.amount) FILTER (WHERE t.kind = 'reserve') AS reserved,
                         -sum(p.amount) FILTER (WHERE t.kind = 'award') AS awarded,
                         -sum(p.amount) FILTER (WHERE t.kind = 'release') AS released
                    FROM postings p JOIN ledger_txns t ON t.id = p.txn_id
                   WHERE p.account_id = ra.id) r ON true
             WHERE tu.path <@ u.path AND (p_after IS NULL OR tk.id < p_after)
             ORDER BY tk.id DESC LIMIT v_limit + 1) x;
    RETURN jsonb_build_object('unit_id', u.id, 'groups', groups, 'tasks', gp_page(tasks, v_limit));
END
$$;

-- The audit log of privileged actions in the subtree, newest first: p_args {actor_id, action
-- (exact, or a prefix ending in '.'), object_type, object_id, from, to, after, limit}.
CREATE FUNCTION gp_audit_log_search(p_actor bigint, p_unit bigint, p_args jsonb)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    u org_units;
    v_limit int := least(greatest(coalesce((p_args ->> 'limit')::int, 50), 1), 1000);
    v_action text := p_args ->> 'action';
    items jsonb;
BEGIN
    u := gp_require_unit(p_actor, p_unit, gp_audit_roles());
    SELECT coalesce(jsonb_agg(jsonb_build_object('id', l.id, 'at', l.at, 'actor_id', l.actor_id,
               'actor', pe.name, 'action', l.action, 'object_type', l.object_type,
               'object_id', l.object_id, 'unit_id', l.unit_id, 'before', l.before,
               'after', l.after, 'reason', l.reason) ORDER BY l.id DESC), '[]')
      INTO items
      FROM (SELECT l.* FROM audit_log l LEFT JOIN org_units lu ON lu.id = l.unit_id
             WHERE (lu.path <@ u.path OR l.unit_id IS NULL) -- NULL: system-wide (signing keys)
               AND (p_args ->> 'actor_id' IS NULL OR l.actor_id = (p_args ->> 'actor_id')::bigint)
               AND (v_action IS NULL OR l.action = v_action
                    OR (right(v_action, 1) = '.' AND l.action LIKE v_action || '%'))
               AND (p_args ->> 'object_type' IS NULL OR l.object_type = p_args ->> 'object_type')
               AND (p_args ->> 'object_id' IS NULL OR l.object_id = p_args ->> 'object_id')
               AND (p_args ->> 'from' IS NULL OR l.at >= (p_args ->> 'from')::timestamptz)
               AND (p_args ->> 'to' IS NULL OR l.at < (p_args ->> 'to')::timestamptz)
               AND (p_args ->> 'after' IS NULL OR l.id < (p_args ->> 'after')::bigint)
             ORDER BY l.id DESC LIMIT v_limit + 1) l
      LEFT JOIN persons pe ON pe.id = l.actor_id;
    RETURN gp_page(items, v_limit) || jsonb_build_object('unit_id', u.id);
END
$$;

-- Anomaly rules over the work loop of a subtree in [from, to) (docs/AUDIT.md §8). p_cfg holds
-- the thresholds from the [audit] section: max_completions_per_day, min_report_after_claim_s,
-- shared_device_workers. Each item: {"rule", "subject", "at", "evidence"}; at most 100 per rule.
CREATE FUNCTION gp_audit_anomalies(p_actor bigint, p_unit bigint, p_args jsonb, p_cfg jsonb)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    u org_units;
    v_from timestamptz := coalesce((p_args ->> 'from')::timestamptz, now() - interval '30 days');
    v_to timestamptz := coalesce((p_args ->> 'to')::timestamptz, now() + interval '1 minute');
    v_rule text := p_args ->> 'rule';
    v_max int := (p_cfg ->> 'max_completions_per_day')::int;
    v_min_s int := (p_cfg ->> 'min_report_after_claim_s')::int;
    v_shared int := (p_cfg ->> 'shared_device_workers')::int;
    items jsonb := '[]';
    part jsonb;
BEGIN
    u := gp_require_unit(p_actor, p_unit, gp_audit_roles());
    IF v_rule IS NOT NULL AND v_rule NOT IN ('too_many_completions', 'report_too_soon',
            'outside_geofence', 'shared_device', 'shared_evidence', 'self_approval',
            'exchange_mismatch') THEN
        PERFORM gp_raise('400', 'invalid_rule', 'unknown anomaly rule', 'rule');
    END IF;
    -- the reports of the subtree in the window
    WITH rs AS (SELECT r.id, r.worker_id, r.assignment_id, r.task_id, r.made_at, r.received_at,
                       r.distance_m, r.flags, r.device_id, r.evidence, a.claimed_at,
                       a.decided_by, a.decided_at, a.state, t.geofence_m, t.title
                  FROM reports r JOIN tasks t ON t.id = r.task_id
                  JOIN org_units tu ON tu.id = t.unit_id
                  JOIN assignments a ON a.id = r.assignment_id
                 WHERE tu.path <@ u.path AND r.received_at >= v_from AND r.received_at < v_to)
    SELECT coalesce(jsonb_agg(x.item), '[]') INTO part FROM (
        (SELECT jsonb_build_object('rule', 'too_many_completions', 'subject',
                    jsonb_build_object('worker_id', worker_id), 'at', day,
                    'evidence', jsonb_build_object('day', day, 'completions', n,
                        'threshold', v_max, 'assignment_ids', ids)) AS item
           FROM (SELECT worker_id, to_char(made_at AT TIME ZONE 'Asia/Shanghai', 'YYYY-MM-DD') AS day,
                        count(*) AS n, (array_agg(assignment_id ORDER BY assignment_id))[1:20] AS ids
                   FROM rs WHERE state IN ('submitted', 'approved')
                  GROUP BY 1, 2 HAVING count(*) > v_max) d
          WHERE v_rule IS NULL OR v_rule = 'too_many_completions'
          ORDER BY day DESC, worker_id LIMIT 100)
        UNION ALL
        (SELECT jsonb_build_object('rule', 'report_too_soon', 'subject',
                    jsonb_build_object('worker_id', worker_id, 'assignment_id', assignment_id),
                    'at', made_at,
                    'evidence', jsonb_build_object('task_id', task_id, 'claimed_at', claimed_at,
                        'made_at', made_at,
                        'seconds', round(extract(epoch FROM made_at - claimed_at)),
                        'threshold_s', v_min_s, 'report_id', id))
           FROM rs WHERE made_at - claimed_at < make_interval(secs => v_min_s)
            AND (v_rule IS NULL OR v_rule = 'report_too_soon')
          ORDER BY made_at DESC LIMIT 100)
        UNION ALL
        (SELECT jsonb_build_object('rule', 'outside_geofence', 'subject',
                    jsonb_build_object('worker_id', worker_id, 'assignment_id', assignment_id),
                    'at', made_at,
                    'evidence', jsonb_build_object('task_id', task_id, 'report_id', id,
                        'distance_m', round(distance_m::numeric), 'geofence_m', geofence_m))
           FROM rs WHERE 'outside_geofence' = ANY (flags)
            AND (v_rule IS NULL OR v_rule = 'outside_geofence')
          ORDER BY made_at DESC LIMIT 100)
        UNION ALL
        (SELECT jsonb_build_object('rule', 'shared_device', 'subject',
                    jsonb_build_object('device_id', device_id), 'at', last_at,
                    'evidence', jsonb_build_object('workers', workers, 'report_ids', ids,
                        'threshold', v_shared))
           FROM (SELECT device_id, max(made_at) AS last_at,
                        to_jsonb(array_agg(DISTINCT worker_id)) AS workers,
                        to_jsonb((array_agg(id ORDER BY id))[1:20]) AS ids
                   FROM rs WHERE device_id IS NOT NULL GROUP BY device_id
                  HAVING count(DISTINCT worker_id) >= v_shared) d
          WHERE v_rule IS NULL OR v_rule = 'shared_device'
          ORDER BY last_at DESC LIMIT 100)
        UNION ALL
        (SELECT jsonb_build_object('rule', 'shared_evidence', 'subject',
                    jsonb_build_object('sha256', sha), 'at', last_at,
                    'evidence', jsonb_build_object('workers', workers, 'report_ids', ids,
                        'threshold', v_shared))
           FROM (SELECT e ->> 'sha256' AS sha, max(made_at) AS last_at,
                        to_jsonb(array_agg(DISTINCT worker_id)) AS workers,
                        to_jsonb((array_agg(DISTINCT id))[1:20]) AS ids
                   FROM rs CROSS JOIN LATERAL jsonb_array_elements(rs.evidence) e
                  WHERE e ->> 'sha256' IS NOT NULL GROUP BY 1
                 HAVING count(DISTINCT worker_id) >= v_shared) d
          WHERE v_rule IS NULL OR v_rule = 'shared_evidence'
          ORDER BY last_at DESC LIMIT 100)
        UNION ALL
        (SELECT jsonb_build_object('rule', 'self_approval', 'subject',
                    jsonb_build_object('worker_id', worker_id, 'assignment_id', assignment_id),
                    'at', decided_at,
                    'evidence', jsonb_build_object('task_id', task_id, 'decided_by', decided_by,
                        'decided_at', decided_at, 'state', state, 'report_id', id))
           FROM rs WHERE decided_by = worker_id
            AND (v_rule IS NULL OR v_rule = 'self_approval')
          ORDER BY decided_at DESC LIMIT 100)
    ) x;
    items := part;
    -- points exchange reconciliation (docs/EXCHANGE.md): mismatches of the unit's street
    IF v_rule IS NULL OR v_rule = 'exchange_mismatch' THEN
        items := items || gp_xchg_anomalies(u, v_from, v_to);
    END IF;
    RETURN jsonb_build_object('unit_id', u.id, 'from', v_from, 'to', v_to,
                              'thresholds', p_cfg, 'items', items);
END
$$;

-- One page of the ledger export of a subtree and time range as JSON Lines or CSV text
-- (docs/AUDIT.md §6). Only sealed transactions, in log order from the cursor p_after (a log
-- index); each JSON line carries its inclusion proof against the anchor checkpoint (the
-- latest, or p_anchor), which the first page states. The last line is the page trailer
-- {"t":"page","next_cursor"}.
CREATE FUNCTION gp_audit_export_page(p_actor bigint, p_unit bigint, p_from timestamptz,
                                     p_to timestamptz, p_after bigint, p_limit int,
                                     p_format text, p_anchor bigint)
RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    u org_units;
    c audit_checkpoints;
    v_limit int := least(greatest(coalesce(p_limit, 500), 1), 5000);
    v_out text := '';
    v_n int := 0;
    v_last bigint;
    v_more boolean := false;
    r record;
BEGIN
    u := gp_require_unit(p_actor, p_unit, gp_audit_roles());
    c := gp_audit_anchor(p_anchor);
    IF c.size IS NULL THEN
        PERFORM gp_raise('409', 'no_checkpoint', 'no signed checkpoint yet', 'checkpoint');
    END IF;
    IF p_format = 'jsonl' AND p_after IS NULL THEN
        v_out := jsonb_build_object('t', 'header', 'format', 'gridpoints-ledger-export/1',
                     'complete', false, 'unit_id', u.id, 'from', p_from, 'to', p_to,
                     'anchor_size', c.size, 'exported_at', now())::text || E'\n'
              || jsonb_build_object('t', 'checkpoint', 'size', c.size, 'note', c.note)::text
              || E'\n';
    ELSIF p_format = 'csv' AND p_after IS NULL THEN
        v_out := 'log_index,txn_id,kind,created_at,actor_id,memo,posting_id,account_id,'
                 'account_kind,amount,version,balance_after,leaf_hash' || E'\n';
    END IF;
    FOR r IN
        SELECT l.idx, l.hash, d.id, d.data, t.kind, t.created_at, t.actor_id, t.memo
          FROM audit_leaves l
          JOIN ledger_txns t ON t.id = l.txn_id
          JOIN audit_txn_data d ON d.id = l.txn_id
         WHERE l.idx < c.size AND (p_after IS NULL OR l.idx > p_after)
           AND (p_from IS NULL OR t.created_at >= p_from)
           AND (p_to IS NULL OR t.created_at < p_to)
           AND EXISTS (SELECT 1 FROM postings p JOIN accounts a ON a.id = p.account_id
                         JOIN org_units au ON au.id = a.unit_id
                        WHERE p.txn_id = l.txn_id AND au.path <@ u.path)
         ORDER BY l.idx LIMIT v_limit + 1
    LOOP
        IF v_n = v_limit THEN
            v_more := true;
            EXIT;
        END IF;
        v_n := v_n + 1;
        v_last := r.idx;
        IF p_format = 'jsonl' THEN
            v_out := v_out || '{"t":"txn","seq":' || r.idx || ',"leaf":"' || encode(r.hash, 'hex')
                     || '","proof":' || gp_audit_hexes(gp_audit_path(r.idx, 0, c.size))::text
                     || ',"txn":' || r.data || '}' || E'\n';
        ELSE
            v_out := v_out || (SELECT string_agg(concat_ws(',', r.idx, r.id, r.kind,
                                   gp_audit_ts(r.created_at), coalesce(r.actor_id::text, ''),
                                   '"' || replace(coalesce(r.memo, ''), '"', '""') || '"',
                                   p.id, p.account_id, a.kind, p.amount, p.account_version,
                                   p.balance_after, encode(r.hash, 'hex')), E'\n' ORDER BY p.account_id)
                                 FROM postings p LEFT JOIN accounts a ON a.id = p.account_id
                                WHERE p.txn_id = r.id) || E'\n';
        END IF;
    END LOOP;
    IF p_format = 'jsonl' THEN
        v_out := v_out || jsonb_build_object('t', 'page', 'count', v_n,
                     'next_cursor', CASE WHEN v_more THEN v_last::text END)::text || E'\n';
    END IF;
    RETURN v_out;
END
$$;

------------------------------------------------------------------------------------------
-- Points board (积分公示): public, per grid and month
------------------------------------------------------------------------------------------
-- A name with everything but its first character masked: 王秀英 -> 王**.
CREATE FUNCTION gp_mask_name(p text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT left(p, 1) || repeat('*', greatest(char_length(p) - 1, 1))
$$;

-- The workers of a grid (home unit in its subtree) with the points they earned in the month
-- (Asia/Shanghai), highest first, names masked; the points still in the objection period and
-- when it ends, from the street's policy. 404 for anything that is not a grid.
CREATE FUNCTION gp_points_board(p_grid bigint, p_month text) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    g org_units;
    pol ledger_policies;
    v_start timestamptz;
BEGIN
    SELECT * INTO g FROM org_units WHERE id = p_grid AND level = 'grid';
    IF NOT FOUND THEN
        PERFORM gp_raise('404', 'grid_not_found', 'grid not found', 'id');
    END IF;
    IF p_month !~ '^[0-9]{4}-(0[1-9]|1[0-2])$' THEN
        PERFORM gp_raise('400', 'invalid_month', 'month must be YYYY-MM', 'month');
    END IF;
    v_start := (p_month || '-01')::timestamp AT TIME ZONE 'Asia/Shanghai';
    SELECT * INTO pol FROM ledger_policies WHERE street_id = gp_street_of_unit(g.id);
    RETURN jsonb_build_object(
        'grid', jsonb_build_object('id', g.id, 'name', g.name,
                                   'community', (SELECT jsonb_build_object('id', c.id, 'name', c.name)
                                                   FROM org_units c WHERE c.id = g.parent_id)),
        'month', p_month,
        'objection_period_s', extract(epoch FROM coalesce(pol.objection_period, '0'))::bigint,
        'items', (SELECT coalesce(jsonb_agg(jsonb_build_object('rank', x.rank, 'name', x.masked,
                      'micro_grid', x.micro, 'points', x.points, 'pending', x.pending,
                      'objection_until', x.until,
                      'adjusted', EXISTS (SELECT 1 FROM ledger_txns t
                                           WHERE t.kind = 'adjust' AND t.created_at >= v_start
                                             AND t.created_at < v_start + interval '1 month'
                                             AND t.refs ->> 'worker_id' = x.id::text))
                      ORDER BY x.rank, x.masked), '[]')
                    FROM (SELECT p.id, gp_mask_name(p.name) AS masked, mu.name AS micro, e.points,
                                 rank() OVER (ORDER BY e.points DESC) AS rank,
                                 coalesce(pp.pending, 0) AS pending, pp.until
                            FROM worker_earnings e
                            JOIN persons p ON p.id = e.person_id
                            JOIN org_units mu ON mu.id = p.unit_id
                            LEFT JOIN LATERAL (
                                SELECT sum(amount) AS pending, max(due_at) AS until
                                  FROM pending_points q
                                 WHERE q.worker_id = p.id AND q.vest_txn_id IS NULL
                                   AND q.earned_at >= v_start
                                   AND q.earned_at < v_start + interval '1 month') pp ON true
                           WHERE e.period = p_month AND e.points > 0 AND mu.path <@ g.path) x),
        -- Manual adjustments of the month (ledger_txns_adjust_at, a partial index: they are
        -- rare) to the grid's workers, with their reason category, never the free text.
        'adjustments', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                      'name', gp_mask_name(p.name), 'micro_grid', mu.name,
                      'amount', (SELECT pt.amount FROM postings pt JOIN accounts a ON a.id = pt.account_id
                                  WHERE pt.txn_id = t.id AND a.kind = 'worker'),
                      'category', coalesce(t.refs ->> 'category', 'other'), 'at', t.created_at)
                      ORDER BY t.created_at, t.id), '[]')
                    FROM ledger_txns t
                    JOIN persons p ON p.id = (t.refs ->> 'worker_id')::bigint
                    JOIN org_units mu ON mu.id = p.unit_id
                   WHERE t.kind = 'adjust' AND t.created_at >= v_start
                     AND t.created_at < v_start + interval '1 month' AND mu.path <@ g.path),
        'generated_at', now());
END
$$;

-- The janitor's entry point: $1 is its batch size (unused: [audit] has its own), $2 the
-- [audit] settings {"batch", "verify_batch", "interval_s", "max_tx", "full_interval_s"}.
CREATE FUNCTION gp_audit_seal_sweep(p_unused int, p_args jsonb) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT gp_audit_seal((p_args ->> 'batch')::int, (p_args ->> 'verify_batch')::int,
                         (p_args ->> 'interval_s')::int, (p_args ->> 'max_tx')::bigint,
                         coalesce((p_args ->> 'full_interval_s')::int, 86400))
$$;

-- `gridpointsd audit-verify --full` (admin role): the next verification pass re-derives the
-- whole log from index 0, whatever the last pass covered; a pass in progress is abandoned (the
-- next round starts the full one, reading every row after this request). Waits for a sealer
-- round in progress (the head row's lock).
CREATE FUNCTION gp_audit_request_full_pass() RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = gp, public, pg_temp AS $$
DECLARE
    h audit_head;
BEGIN
    UPDATE audit_head SET full_requested = true, verified_at = NULL, vpos = NULL,
           vlast_xid = NULL, vlast_txn = NULL, vfrontier = '{}', vstarted_at = NULL,
           vfrom = NULL, vfull = NULL, updated_at = now()
     WHERE id RETURNING * INTO h;
    PERFORM gp_audit(NULL, 'audit.full_pass_request', 'audit_head', 'head', NULL, NULL,
                     jsonb_build_object('size', h.size), 'gridpointsd audit-verify --full');
    RETURN jsonb_build_object('size', h.size, 'full_pass_requested', true,
                              'pass_in_progress', h.vpos IS NOT NULL);
END
$$;

-- The state of the verification passes for `gridpointsd audit-verify --wait` (admin role).
CREATE FUNCTION gp_audit_pass_state() RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = gp, public, pg_temp AS $$
    SELECT jsonb_build_object('size', size, 'verified_at', verified_at,
                              'verified_size', verified_size, 'verified_from', verified_from,
                              'verified_full', verified_full, 'full_verified_at', full_verified_at,
                              'full_pass_requested', full_requested, 'alarm', alarm,
                              'pass', CASE WHEN vpos IS NULL THEN NULL ELSE
                                      jsonb_build_object('position', vpos, 'from', vfrom,
                                                         'full', vfull) END)
      FROM audit_head
$$;

REVOKE EXECUTE ON FUNCTION
    gp_audit_seal(int, int, int, bigint, int),
    gp_audit_request_full_pass(),
    gp_audit_pass_state(),
    gp_audit_checkpoint_store(bigint, text, text, text, text),
    gp_audit_key_register(text, text, bytea, text, boolean),
    gp_audit_raise_alarm(jsonb)
FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    gp_audit_seal(int, int, int, bigint, int),
    gp_audit_checkpoint_store(bigint, text, text, text, text)
TO gp_app;

