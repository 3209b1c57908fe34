-- sql/functions/80_care.sql
-- Care visits from the red / yellow / blue lists (tables: sql/migrations/0015_care.sql;
-- prose: docs/CARE.md): the colour policy, residents, the schedule of due visits, visits,
-- follow-ups, coverage, the care budget and the sweep (escalation and retention).
--
-- Personal data arrives sealed by the server ("v1.<hex>", server/care_crypto.c) and leaves
-- sealed: a reply names each sealed value by its key, and the server opens it on the way out:
--   "<field>_sealed": "v1..."         opened into "<field>"
--   "<field>_sealed_masked": "v1..."  opened and masked into "<field>" (staff lists)
-- so this file decides what each audience sees (gp_care_resident_json), the server only
-- decrypts. Lock order: the resident row, then its due, then the ledger.

------------------------------------------------------------------------------------------
-- Policy
------------------------------------------------------------------------------------------
-- The street's rule for a colour; the defaults (red weekly, yellow fortnightly, blue monthly)
-- when the street has set none.
CREATE FUNCTION gp_care_rule(p_street bigint, p_colour text) RETURNS care_policies
LANGUAGE plpgsql STABLE AS $$
DECLARE
    p care_policies;
BEGIN
    SELECT * INTO p FROM care_policies WHERE street_id = p_street AND colour = p_colour;
    IF NOT FOUND THEN
        p.street_id := p_street;
        p.colour := p_colour;
        p.every := CASE p_colour WHEN 'red' THEN interval '7 days'
                                 WHEN 'yellow' THEN interval '14 days' ELSE interval '30 days' END;
        p.grace := CASE p_colour WHEN 'red' THEN interval '1 day'
                                 WHEN 'yellow' THEN interval '2 days' ELSE interval '5 days' END;
        p.points := CASE p_colour WHEN 'red' THEN 10 WHEN 'yellow' THEN 8 ELSE 5 END;
        p.geofence_m := 200;
        p.geofence_enforced := false;
    END IF;
    RETURN p;
END
$$;

CREATE FUNCTION gp_care_policy_json(p_street bigint) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('street_id', p_street, 'colours', jsonb_object_agg(c, jsonb_build_object(
               'every_s', gp_secs(r.every), 'grace_s', gp_secs(r.grace), 'points', r.points,
               'geofence_m', r.geofence_m, 'geofence_enforced', r.geofence_enforced)))
      FROM unnest(ARRAY['red', 'yellow', 'blue']) c, LATERAL gp_care_rule(p_street, c) r
$$;

-- The policy of a street (staff and auditors of the street).
CREATE FUNCTION gp_care_policy_get(p_actor bigint, p_street bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    u org_units := gp_require_unit(p_actor, p_street, gp_reader_roles(), 'street_id');
BEGIN
    IF u.level <> 'street' THEN
        PERFORM gp_raise('400', 'not_a_street', 'the unit is not a street', 'street_id');
    END IF;
    RETURN gp_care_policy_json(u.id);
END
$$;

-- p_args: {colours: {red|yellow|blue: {every_s (1..31622400), grace_s (0..31622400), points
-- (0..100000), geofence_m? (10..100000), geofence_enforced?}}}: street admins. Colours not
-- named keep their rule. Open due visits keep their dates; the next ones use the new rule.
CREATE FUNCTION gp_care_policy_set(p_actor bigint, p_street bigint, p_args jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    u org_units := gp_require_unit(p_actor, p_street, gp_staff_roles(), 'street_id');
    v_args jsonb;
    v_cols jsonb;
    c text;
    e jsonb;
    r care_policies;
    v_before jsonb;
BEGIN
    IF u.level <> 'street' THEN
        PERFORM gp_raise('400', 'not_a_street', 'the unit is not a street', 'street_id');
    END IF;
    IF NOT gp_has_role(p_actor, ARRAY['street_admin'], u.id) THEN
        PERFORM gp_raise('403', 'not_street_admin', 'only a street admin sets the care policy',
                         'street_id');
    END IF;
    v_args := gp_targ_object(p_args, ARRAY['colours']);
    v_cols := gp_targ_value(v_args, 'colours', true);
    IF jsonb_typeof(v_cols) <> 'object' THEN
        PERFORM gp_raise('400', 'invalid_type', 'colours must be an object', 'colours');
    END IF;
    PERFORM gp_targ_object(v_cols, ARRAY['red', 'yellow', 'blue']);
    v_before := gp_care_policy_json(u.id);
    FOR c, e IN SELECT * FROM jsonb_each(v_cols) LOOP
        IF jsonb_typeof(e) <> 'object' THEN
            PERFORM gp_raise('400', 'invalid_type', format('colours.%s must be an object', c), c);
        END IF;
        PERFORM gp_targ_object(e, ARRAY['every_s', 'grace_s', 'points', 'geofence_m',
                                        'geofence_enforced']);
        r := gp_care_rule(u.id, c);
        r.every := make_interval(secs => gp_targ_int(e, 'every_s', 1, 31622400, true));
        r.grace := make_interval(secs => gp_targ_int(e, 'grace_s', 0, 31622400, true));
        r.points := gp_targ_int(e, 'points', 0, 100000, true);
        r.geofence_m := coalesce(gp_targ_int(e, 'geofence_m', 10, 100000), r.geofence_m);
        r.geofence_enforced := coalesce(gp_targ_bool(e, 'geofence_enforced'), r.geofence_enforced);
        INSERT INTO care_policies (street_id, colour, every, grace, points, geofence_m,
                                   geofence_enforced, updated_by, updated_at)
        VALUES (u.id, c, r.every, r.grace, r.points, r.geofence_m, r.geofence_enforced, p_actor,
                now())
        ON CONFLICT (street_id, colour) DO UPDATE
           SET every = EXCLUDED.every, grace = EXCLUDED.grace, points = EXCLUDED.points,
               geofence_m = EXCLUDED.geofence_m, geofence_enforced = EXCLUDED.geofence_enforced,
               updated_by = EXCLUDED.updated_by, updated_at = EXCLUDED.updated_at;
    END LOOP;
    PERFORM gp_audit(p_actor, 'care.policy.set', 'street', u.id::text, u.id, v_before,
                     gp_care_policy_json(u.id));
    RETURN gp_care_policy_json(u.id);
END
$$;

------------------------------------------------------------------------------------------
-- JSON shapes and scope
------------------------------------------------------------------------------------------
CREATE FUNCTION gp_care_due_json(d care_dues) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN d.id IS NOT NULL THEN jsonb_build_object(
        'id', d.id, 'resident_id', d.resident_id, 'colour', d.colour, 'due_at', d.due_at,
        'grace_until', d.grace_until, 'state', d.state, 'reason', d.reason,
        'overdue', d.state = 'open' AND now() > d.grace_until,
        'escalated_at', d.escalated_at, 'visit_id', d.visit_id, 'done_at', d.done_at,
        'on_time', CASE WHEN d.state = 'done' THEN d.done_at <= d.grace_until END) END
$$;

-- The resident as an audience sees it:
--   'worker'  what a visit needs: name, phone, address, health notes, place; no ID number;
--   'masked'  staff lists and records: name, phone and address masked by the server, no ID
--             number and no health notes;
--   'open'    a record opened with a reason (audited), or an export: everything.
CREATE FUNCTION gp_care_resident_json(r care_residents, p_view text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'id', r.id, 'street_id', r.street_id, 'unit_id', r.unit_id, 'colour', r.colour,
        'categories', to_jsonb(r.categories), 'worker_id', r.worker_id, 'backup_id', r.backup_id,
        'status', r.status, 'status_reason', r.status_reason, 'entered_at', r.entered_at,
        'last_visit_at', r.last_visit_at, 'removed_at', r.removed_at, 'purged_at', r.purged_at,
        'lat', CASE WHEN p_view <> 'masked' THEN r.lat END,
        'lng', CASE WHEN p_view <> 'masked' THEN r.lng END,
        'has_id_number', r.id_number_sealed IS NOT NULL,
        'view', p_view))
    || CASE p_view
         WHEN 'masked' THEN jsonb_strip_nulls(jsonb_build_object(
             'name_sealed_masked', r.name_sealed, 'phone_sealed_masked', r.phone_sealed,
             'address_sealed_masked', r.address_sealed))
         WHEN 'worker' THEN jsonb_strip_nulls(jsonb_build_object(
             'name_sealed', r.name_sealed, 'phone_sealed', r.phone_sealed,
             'address_sealed', r.address_sealed, 'health_notes_sealed', r.health_sealed))
         ELSE jsonb_strip_nulls(jsonb_build_object(
             'name_sealed', r.name_sealed, 'phone_sealed', r.phone_sealed,
             'address_sealed', r.address_sealed, 'health_notes_sealed', r.health_sealed,
             'id_number_sealed', r.id_number_sealed, 'created_by', r.created_by))
       END
$$;

CREATE FUNCTION gp_care_is_staff(p_actor bigint, p_unit bigint) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT gp_has_role(p_actor, gp_staff_roles(), p_unit)
$$;

-- The resident if the actor may act on it in p_mode, else 404 (no existence oracle):
--   'staff'  staff over the resident's micro-grid;
--   'visit'  the responsible worker or the backup (an active worker or volunteer);
--   'read'   either. p_lock locks the row.
CREATE FUNCTION gp_care_require(p_actor bigint, p_resident bigint, p_mode text,
                                p_lock boolean DEFAULT false) RETURNS care_residents
LANGUAGE plpgsql AS $$
DECLARE
    r care_residents;
BEGIN
    IF p_lock THEN
        SELECT * INTO r FROM care_residents WHERE id = p_resident FOR UPDATE;
    ELSE
        SELECT * INTO r FROM care_residents WHERE id = p_resident;
    END IF;
    IF FOUND THEN
        IF p_mode IN ('staff', 'read') AND gp_care_is_staff(p_actor, r.unit_id) THEN
            RETURN r;
        END IF;
        IF p_mode IN ('visit', 'read') AND p_actor IN (r.worker_id, r.backup_id)
           AND r.status <> 'removed' AND gp_task_is_worker(p_actor) THEN
            RETURN r;
        END IF;
    END IF;
    PERFORM gp_raise('404', 'resident_not_found', 'resident not found', 'resident_id');
    RETURN r;
END
$$;

-- The care list's worker must be an active worker or volunteer living in the resident's grid.
CREATE FUNCTION gp_care_check_worker(p_person bigint, p_unit bigint, p_field text)
RETURNS void LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_person IS NULL THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM persons p
                     JOIN org_units pu ON pu.id = p.unit_id
                     JOIN org_units mu ON mu.id = p_unit
                     JOIN org_units g ON g.id = mu.parent_id
                    WHERE p.id = p_person AND pu.path <@ g.path)
       OR NOT gp_task_is_worker(p_person) THEN
        PERFORM gp_raise('400', 'invalid_worker',
            format('%s must be an active worker or volunteer of the resident''s grid', p_field),
            p_field);
    END IF;
END
$$;

------------------------------------------------------------------------------------------
-- The schedule
------------------------------------------------------------------------------------------
-- Opens the next due visit of an active resident: base + the colour's interval (not before
-- now() for a resume). The caller has locked the resident and closed any open due.
CREATE FUNCTION gp_care_schedule(r care_residents, p_reason text, p_base timestamptz)
RETURNS care_dues LANGUAGE plpgsql AS $$
DECLARE
    p care_policies := gp_care_rule(r.street_id, r.colour);
    d care_dues;
    v_due timestamptz := p_base + p.every;
BEGIN
    IF p_reason = 'resume' THEN
        v_due := greatest(v_due, now());
    END IF;
    INSERT INTO care_dues (street_id, resident_id, colour, due_at, grace_until, reason)
    VALUES (r.street_id, r.id, r.colour, v_due, v_due + p.grace, p_reason)
    RETURNING * INTO d;
    RETURN d;
END
$$;

-- Cancels the resident's open due (colour change, pause, removal); closes its escalation.
CREATE FUNCTION gp_care_cancel_due(p_resident bigint, p_actor bigint, p_note text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_due bigint;
BEGIN
    UPDATE care_dues SET state = 'cancelled', closed_at = now()
     WHERE resident_id = p_resident AND state = 'open' RETURNING id INTO v_due;
    IF v_due IS NOT NULL THEN
        UPDATE care_followups SET state = 'closed', closed_at = now(), closed_by = p_actor,
                                  close_note = p_note
         WHERE due_id = v_due AND state = 'open';
    END IF;
END
$$;

CREATE FUNCTION gp_care_open_due(p_resident bigint) RETURNS care_dues LANGUAGE sql STABLE AS $$
    SELECT * FROM care_dues WHERE resident_id = p_resident AND state = 'open'
$$;

------------------------------------------------------------------------------------------
-- Residents
------------------------------------------------------------------------------------------
-- The sealed fields the server passes (p_sealed): {name_sealed, phone_sealed, address_sealed,
-- id_number_sealed, health_sealed, phone_hash, id_hash}, each a string or absent; the server
-- has checked and sealed them (the request body's name, phone, address, id_number,
-- health_notes). An empty string clears an optional one (update).
CREATE FUNCTION gp_care_sealed(p_sealed jsonb, p_key text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_sealed ->> p_key
$$;

-- p_args: {unit_id (a micro-grid), colour, categories? (<= 8 tags), worker_id, backup_id?,
-- lat?, lng?} (staff over the micro-grid); name (required), phone, address, id_number and
-- health_notes come sealed in p_sealed. The first visit falls due at entry + the colour's
-- interval. Returns the resident (masked view) and its due visit.
CREATE FUNCTION gp_care_resident_create(p_actor bigint, p_args jsonb, p_sealed jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_args jsonb;
    u org_units;
    r care_residents;
    d care_dues;
BEGIN
    v_args := gp_targ_object(p_args, ARRAY['unit_id', 'colour', 'categories', 'worker_id',
                                           'backup_id', 'lat', 'lng']);
    r.unit_id := gp_targ_int(v_args, 'unit_id', 1, 9223372036854775807, true);
    r.colour := gp_targ_text(v_args, 'colour', 1, 10, true);
    IF r.colour NOT IN ('red', 'yellow', 'blue') THEN
        PERFORM gp_raise('400', 'invalid_colour', 'colour must be red, yellow or blue', 'colour');
    END IF;
    r.categories := gp_targ_tags(v_args, 'categories');
    IF cardinality(r.categories) > 8 THEN
        PERFORM gp_raise('400', 'invalid_tags', 'at most 8 categories', 'categories');
    END IF;
    r.worker_id := gp_targ_int(v_args, 'worker_id', 1, 9223372036854775807, true);
    r.backup_id := gp_targ_int(v_args, 'backup_id', 1, 9223372036854775807);
    r.lat := gp_targ_num(v_args, 'lat', -90, 90);
    r.lng := gp_targ_num(v_args, 'lng', -180, 180);
    IF (r.lat IS NULL) <> (r.lng IS NULL) THEN
        PERFORM gp_raise('400', 'invalid_place', 'lat and lng must be given together',
                         CASE WHEN r.lat IS NULL THEN 'lat' ELSE 'lng' END);
    END IF;
    u := gp_require_unit(p_actor, r.unit_id, gp_staff_roles());
    IF u.level <> 'micro_grid' THEN
        PERFORM gp_raise('400', 'not_a_micro_grid', 'a resident belongs to a micro-grid',
                         'unit_id');
    END IF;
    IF r.backup_id = r.worker_id THEN
        PERFORM gp_raise('400', 'invalid_backup', 'the backup must be another worker',
                         'backup_id');
    END IF;
    PERFORM gp_care_check_worker(r.worker_id, u.id, 'worker_id');
    PERFORM gp_care_check_worker(r.backup_id, u.id, 'backup_id');
    IF coalesce(gp_care_sealed(p_sealed, 'name_sealed'), '') = '' THEN
        PERFORM gp_raise('400', 'missing_field', 'name is required', 'name');
    END IF;
    INSERT INTO care_residents (street_id, unit_id, colour, categories, worker_id, backup_id,
        name_sealed, phone_sealed, address_sealed, id_number_sealed, health_sealed, phone_hash,
        id_hash, lat, lng, created_by)
    VALUES (gp_street_of_unit(u.id), u.id, r.colour, r.categories, r.worker_id, r.backup_id,
        gp_care_sealed(p_sealed, 'name_sealed'),
        nullif(gp_care_sealed(p_sealed, 'phone_sealed'), ''),
        nullif(gp_care_sealed(p_sealed, 'address_sealed'), ''),
        nullif(gp_care_sealed(p_sealed, 'id_number_sealed'), ''),
        nullif(gp_care_sealed(p_sealed, 'health_sealed'), ''),
        nullif(gp_care_sealed(p_sealed, 'phone_hash'), ''),
        nullif(gp_care_sealed(p_sealed, 'id_hash'), ''), r.lat, r.lng, p_actor)
    RETURNING * INTO r;
    d := gp_care_schedule(r, 'entry', r.entered_at);
    -- the audit row names what changed, never the personal data itself
    PERFORM gp_audit(p_actor, 'care.resident.create', 'care_resident', r.id::text, r.unit_id,
                     NULL, jsonb_build_object('colour', r.colour, 'worker_id', r.worker_id,
                                              'backup_id', r.backup_id,
                                              'categories', to_jsonb(r.categories)));
    RETURN gp_care_resident_json(r, 'masked') || jsonb_build_object('due', gp_care_due_json(d));
END
$$;

-- p_args: {colour?, categories?, worker_id?, backup_id? (null: none), lat?, lng?} and sealed
-- replacements in p_sealed (staff). A colour change cancels the open due visit and schedules
-- the next from the last completed visit (or the list entry) with the new colour's interval:
-- once per change; the same colour again changes nothing. A new worker or backup takes over
-- the open due visit (reassignment). 409 resident_removed on a removed resident.
CREATE FUNCTION gp_care_resident_update(p_actor bigint, p_resident bigint, p_args jsonb,
                                        p_sealed jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_args jsonb;
    r care_residents;
    n care_residents;
    d care_dues;
    v_before jsonb;
    v_rescheduled boolean := false;
    k text;
BEGIN
    v_args := gp_targ_object(p_args, ARRAY['colour', 'categories', 'worker_id', 'backup_id',
                                           'lat', 'lng']);
    r := gp_care_require(p_actor, p_resident, 'staff', true);
    IF r.status = 'removed' THEN
        PERFORM gp_raise('409', 'resident_removed', 'the resident was removed from the lists',
                         'resident_id');
    END IF;
    n := r;
    IF v_args ? 'colour' THEN
        n.colour := gp_targ_text(v_args, 'colour', 1, 10, true);
        IF n.colour NOT IN ('red', 'yellow', 'blue') THEN
            PERFORM gp_raise('400', 'invalid_colour', 'colour must be red, yellow or blue',
                             'colour');
        END IF;
    END IF;
    IF v_args ? 'categories' THEN
        n.categories := gp_targ_tags(v_args, 'categories');
        IF cardinality(n.categories) > 8 THEN
            PERFORM gp_raise('400', 'invalid_tags', 'at most 8 categories', 'categories');
        END IF;
    END IF;
    IF v_args ? 'worker_id' THEN
        n.worker_id := gp_targ_int(v_args, 'worker_id', 1, 9223372036854775807, true);
        PERFORM gp_care_check_worker(n.worker_id, r.unit_id, 'worker_id');
    END IF;
    IF v_args ? 'backup_id' THEN
        n.backup_id := gp_targ_int(v_args, 'backup_id', 1, 9223372036854775807);
        PERFORM gp_care_check_worker(n.backup_id, r.unit_id, 'backup_id');
    END IF;
    IF n.backup_id = n.worker_id THEN
        PERFORM gp_raise('400', 'invalid_backup', 'the backup must be another worker',
                         'backup_id');
    END IF;
    IF v_args ? 'lat' OR v_args ? 'lng' THEN
        n.lat := gp_targ_num(v_args, 'lat', -90, 90);
        n.lng := gp_targ_num(v_args, 'lng', -180, 180);
        IF (n.lat IS NULL) <> (n.lng IS NULL) THEN
            PERFORM gp_raise('400', 'invalid_place', 'lat and lng must be given together',
                             CASE WHEN n.lat IS NULL THEN 'lat' ELSE 'lng' END);
        END IF;
    END IF;
    FOR k IN SELECT jsonb_object_keys(coalesce(p_sealed, '{}')) LOOP
        CASE k
            WHEN 'name_sealed' THEN n.name_sealed := nullif(p_sealed ->> k, '');
            WHEN 'phone_sealed' THEN n.phone_sealed := nullif(p_sealed ->> k, '');
            WHEN 'address_sealed' THEN n.address_sealed := nullif(p_sealed ->> k, '');
            WHEN 'id_number_sealed' THEN n.id_number_sealed := nullif(p_sealed ->> k, '');
            WHEN 'health_sealed' THEN n.health_sealed := nullif(p_sealed ->> k, '');
            WHEN 'phone_hash' THEN n.phone_hash := nullif(p_sealed ->> k, '');
            WHEN 'id_hash' THEN n.id_hash := nullif(p_sealed ->> k, '');
            ELSE NULL;
        END CASE;
    END LOOP;
    IF n.name_sealed IS NULL THEN
        PERFORM gp_raise('400', 'invalid_length', 'name cannot be cleared', 'name');
    END IF;
    v_before := jsonb_build_object('colour', r.colour, 'worker_id', r.worker_id,
                                   'backup_id', r.backup_id, 'categories', to_jsonb(r.categories));
    UPDATE care_residents SET colour = n.colour, categories = n.categories,
           worker_id = n.worker_id, backup_id = n.backup_id, lat = n.lat, lng = n.lng,
           name_sealed = n.name_sealed, phone_sealed = n.phone_sealed,
           address_sealed = n.address_sealed, id_number_sealed = n.id_number_sealed,
           health_sealed = n.health_sealed, phone_hash = n.phone_hash, id_hash = n.id_hash,
           updated_at = now()
     WHERE id = r.id RETURNING * INTO n;
    IF n.colour <> r.colour AND n.status = 'active' THEN
        PERFORM gp_care_cancel_due(n.id, p_actor, 'colour changed');
        d := gp_care_schedule(n, 'colour', coalesce(n.last_visit_at, n.entered_at));
        v_rescheduled := true;
    ELSE
        d := gp_care_open_due(n.id);
    END IF;
    PERFORM gp_audit(p_actor, 'care.resident.update', 'care_resident', n.id::text, n.unit_id,
        v_before, jsonb_build_object('colour', n.colour, 'worker_id', n.worker_id,
                                     'backup_id', n.backup_id,
                                     'categories', to_jsonb(n.categories),
                                     'sealed_changed', (SELECT coalesce(jsonb_agg(x), '[]')
                                        FROM jsonb_object_keys(coalesce(p_sealed, '{}')) x)));
    RETURN gp_care_resident_json(n, 'masked') || jsonb_build_object(
        'due', gp_care_due_json(d), 'rescheduled', v_rescheduled);
END
$$;

-- Pause (in hospital, away: the open due is cancelled), resume (the next due from the last
-- visit or entry, not before now), remove (with a reason; the sealed fields are purged after
-- the retention period by the sweep). p_op: 'pause' | 'resume' | 'remove'.
CREATE FUNCTION gp_care_resident_status(p_actor bigint, p_resident bigint, p_op text,
                                        p_reason text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    r care_residents;
    d care_dues;
BEGIN
    r := gp_care_require(p_actor, p_resident, 'staff', true);
    IF r.status = 'removed' THEN
        PERFORM gp_raise('409', 'resident_removed', 'the resident was removed from the lists',
                         'resident_id');
    END IF;
    IF p_op = 'pause' THEN
        IF r.status = 'paused' THEN
            PERFORM gp_raise('409', 'already_paused', 'the resident is paused', 'resident_id');
        END IF;
        PERFORM gp_care_cancel_due(r.id, p_actor, 'paused');
        UPDATE care_residents SET status = 'paused', status_reason = p_reason, updated_at = now()
         WHERE id = r.id RETURNING * INTO r;
    ELSIF p_op = 'resume' THEN
        IF r.status <> 'paused' THEN
            PERFORM gp_raise('409', 'not_paused', 'the resident is not paused', 'resident_id');
        END IF;
        UPDATE care_residents SET status = 'active', status_reason = NULL, updated_at = now()
         WHERE id = r.id RETURNING * INTO r;
        d := gp_care_schedule(r, 'resume', coalesce(r.last_visit_at, r.entered_at));
    ELSE
        PERFORM gp_care_cancel_due(r.id, p_actor, 'removed');
        UPDATE care_residents SET status = 'removed', status_reason = p_reason,
               removed_at = now(), updated_at = now()
         WHERE id = r.id RETURNING * INTO r;
        UPDATE care_followups SET state = 'closed', closed_at = now(), closed_by = p_actor,
                                  close_note = 'resident removed'
         WHERE resident_id = r.id AND state = 'open';
    END IF;
    PERFORM gp_audit(p_actor, 'care.resident.' || p_op, 'care_resident', r.id::text, r.unit_id,
                     NULL, jsonb_build_object('status', r.status), p_reason);
    RETURN gp_care_resident_json(r, 'masked') || jsonb_build_object('due', gp_care_due_json(d));
END
$$;

-- One resident: staff see the masked record, the responsible worker or backup the visit view;
-- both with the open due and the last 5 visits.
CREATE FUNCTION gp_care_resident_get(p_actor bigint, p_resident bigint) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    r care_residents := gp_care_require(p_actor, p_resident, 'read');
    v_staff boolean := gp_care_is_staff(p_actor, r.unit_id);
BEGIN
    RETURN gp_care_resident_json(r, CASE WHEN v_staff THEN 'masked' ELSE 'worker' END)
        || jsonb_build_object('due', gp_care_due_json(gp_care_open_due(r.id)),
                              'visits', (SELECT coalesce(jsonb_agg(x.j ORDER BY x.made_at DESC),
                                                         '[]')
                                           FROM (SELECT v.made_at, gp_care_visit_json(v, false) AS j
                                                   FROM care_visits v
                                                  WHERE v.resident_id = r.id
                                                  ORDER BY v.made_at DESC LIMIT 5) x));
END
$$;

-- Opens a record in full (staff over the resident, p_reason 1..500): written to the audit log
-- with who, when and why before anything is returned.
CREATE FUNCTION gp_care_resident_open(p_actor bigint, p_resident bigint, p_reason text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    r care_residents := gp_care_require(p_actor, p_resident, 'read');
BEGIN
    IF NOT gp_care_is_staff(p_actor, r.unit_id) THEN
        PERFORM gp_raise('403', 'not_staff', 'only staff open a resident''s record',
                         'resident_id');
    END IF;
    PERFORM gp_audit(p_actor, 'care.resident.open', 'care_resident', r.id::text, r.unit_id,
                     NULL, NULL, p_reason);
    RETURN gp_care_resident_json(r, 'open') || jsonb_build_object(
        'opened_at', now(), 'opened_by', p_actor);
END
$$;

-- Residents: staff get their subtree (or unit_id's), masked; a worker the residents they are
-- responsible for or back up, in the visit view. p_args: {unit_id?, colour?, status?, mine?,
-- cursor?, limit?}; by id.
CREATE FUNCTION gp_care_resident_list(p_actor bigint, p_args jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_args jsonb := gp_targ_object(p_args, ARRAY['unit_id', 'colour', 'status', 'mine',
                                                 'cursor', 'limit']);
    v_page record := gp_page_args(v_args);
    v_unit bigint := gp_targ_int(v_args, 'unit_id', 1, 9223372036854775807);
    v_colour text := gp_targ_text(v_args, 'colour', 1, 10);
    v_status text := gp_targ_text(v_args, 'status', 1, 10);
    v_mine boolean := coalesce(gp_targ_bool(v_args, 'mine'), false);
    v_path ltree;
    v_items jsonb;
BEGIN
    IF v_unit IS NOT NULL THEN
        v_path := (gp_require_unit(p_actor, v_unit, gp_staff_roles())).path;
    END IF;
    IF v_mine OR (v_unit IS NULL AND NOT EXISTS (
            SELECT 1 FROM role_grants WHERE person_id = p_actor
                                        AND role = ANY (gp_staff_roles()))) THEN
        SELECT coalesce(jsonb_agg(x.j ORDER BY x.id), '[]')
          INTO v_items
          FROM (SELECT r.id, gp_care_resident_json(r, 'worker')
                       || jsonb_build_object('as_backup', r.backup_id = p_actor) AS j
                  FROM care_residents r
                 WHERE p_actor IN (r.worker_id, r.backup_id) AND r.status <> 'removed'
                   AND r.id > coalesce(v_page.after, 0)
                   AND (v_colour IS NULL OR r.colour = v_colour)
                   AND (v_status IS NULL OR r.status = v_status)
                   AND gp_task_is_worker(p_actor)
                 ORDER BY r.id LIMIT v_page.lim + 1) x;
        RETURN gp_page(v_items, v_page.lim);
    END IF;
    SELECT coalesce(jsonb_agg(x.j ORDER BY x.id), '[]')
      INTO v_items
      FROM (SELECT r.id, gp_care_resident_json(r, 'masked') AS j
              FROM care_residents r JOIN org_units u ON u.id = r.unit_id
             WHERE r.id > coalesce(v_page.after, 0)
               AND (v_path IS NULL OR u.path <@ v_path)
               AND gp_role_covers(p_actor, gp_staff_roles(), u.path)
               AND (v_colour IS NULL OR r.colour = v_colour)
               AND (v_status IS NULL OR r.status = v_status)
             ORDER BY r.id LIMIT v_page.lim + 1) x;
    RETURN gp_page(v_items, v_page.lim);
END
$$;

-- Finds residents by phone or ID number (staff): p_field 'phone' | 'id_number', p_hash the
-- server's keyed hash of the value. Masked records in the actor's scope; audited.
CREATE FUNCTION gp_care_lookup(p_actor bigint, p_field text, p_hash text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_items jsonb;
    v_street bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM role_grants WHERE person_id = p_actor
                                               AND role = ANY (gp_staff_roles())) THEN
        PERFORM gp_raise('403', 'not_staff', 'only staff look residents up', p_field);
    END IF;
    SELECT coalesce(jsonb_agg(gp_care_resident_json(r, 'masked') ORDER BY r.id), '[]'),
           min(r.street_id)
      INTO v_items, v_street
      FROM care_residents r JOIN org_units u ON u.id = r.unit_id
     WHERE CASE p_field WHEN 'phone' THEN r.phone_hash ELSE r.id_hash END = p_hash
       AND gp_role_covers(p_actor, gp_staff_roles(), u.path);
    PERFORM gp_audit(p_actor, 'care.resident.lookup', 'care_lookup', p_field, v_street, NULL,
                     jsonb_build_object('found', jsonb_array_length(v_items)));
    RETURN jsonb_build_object('items', v_items);
END
$$;

------------------------------------------------------------------------------------------
-- Due visits
------------------------------------------------------------------------------------------
-- Open due visits, soonest first. A worker: the residents they are responsible for, and the
-- overdue ones they back up ("as_backup"), in the visit view. Staff with unit_id: the open
-- due visits of that subtree, masked. p_args: {unit_id?, overdue?: bool, cursor?, limit?}.
CREATE FUNCTION gp_care_due_list(p_actor bigint, p_args jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_args jsonb := gp_targ_object(p_args, ARRAY['unit_id', 'overdue', 'cursor', 'limit']);
    v_page record := gp_page_args(v_args, 'care_due', 2);
    v_unit bigint := gp_targ_int(v_args, 'unit_id', 1, 9223372036854775807);
    v_overdue boolean := gp_targ_bool(v_args, 'overdue');
    v_path ltree;
    v_at timestamptz;
    v_id bigint;
    v_items jsonb;
BEGIN
    IF v_page.cursor IS NOT NULL THEN
        v_at := gp_tcursor_ts(v_page.cursor[1]);
        v_id := gp_tcursor_bigint(v_page.cursor[2]);
    END IF;
    IF v_unit IS NOT NULL THEN
        v_path := (gp_require_unit(p_actor, v_unit, gp_staff_roles())).path;
        SELECT coalesce(jsonb_agg(x.j ORDER BY x.due_at, x.id), '[]') INTO v_items
          FROM (SELECT d.id, d.due_at, gp_care_due_json(d) || jsonb_build_object(
                       'resident', gp_care_resident_json(r, 'masked'),
                       '_cursor', gp_tcursor_encode(ARRAY['care_due', gp_ts_micros(d.due_at),
                                                          d.id::text])) AS j
                  FROM care_dues d JOIN care_residents r ON r.id = d.resident_id
                  JOIN org_units u ON u.id = r.unit_id
                 WHERE d.state = 'open' AND u.path <@ v_path
                   AND (v_overdue IS NULL OR (now() > d.grace_until) = v_overdue)
                   AND (v_at IS NULL OR (d.due_at, d.id) > (v_at, v_id))
                 ORDER BY d.due_at, d.id LIMIT v_page.lim + 1) x;
        RETURN gp_page(v_items, v_page.lim);
    END IF;
    IF NOT gp_task_is_worker(p_actor) THEN
        PERFORM gp_raise('403', 'not_a_worker',
            'only workers and volunteers have due visits; staff pass unit_id', 'unit_id');
    END IF;
    SELECT coalesce(jsonb_agg(x.j ORDER BY x.due_at, x.id), '[]') INTO v_items
      FROM (SELECT d.id, d.due_at, gp_care_due_json(d) || jsonb_build_object(
                   'as_backup', r.worker_id <> p_actor,
                   'resident', gp_care_resident_json(r, 'worker'),
                   '_cursor', gp_tcursor_encode(ARRAY['care_due', gp_ts_micros(d.due_at),
                                                      d.id::text])) AS j
              FROM care_dues d JOIN care_residents r ON r.id = d.resident_id
             WHERE d.state = 'open'
               AND (r.worker_id = p_actor OR (r.backup_id = p_actor AND now() > d.grace_until))
               AND (v_overdue IS NULL OR (now() > d.grace_until) = v_overdue)
               AND (v_at IS NULL OR (d.due_at, d.id) > (v_at, v_id))
             ORDER BY d.due_at, d.id LIMIT v_page.lim + 1) x;
    RETURN gp_page(v_items, v_page.lim);
END
$$;

------------------------------------------------------------------------------------------
-- Visits
------------------------------------------------------------------------------------------
CREATE FUNCTION gp_care_visit_json(v care_visits, p_notes boolean DEFAULT true) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'id', v.id, 'resident_id', v.resident_id, 'due_id', v.due_id, 'worker_id', v.worker_id,
        'client_visit_id', v.client_visit_id, 'made_at', v.made_at,
        'received_at', v.received_at, 'lat', v.lat, 'lng', v.lng,
        'distance_m', round(v.distance_m::numeric, 1), 'outcome', v.outcome,
        'help_kind', v.help_kind, 'photos', to_jsonb(v.photos),
        'photo_consent', v.photo_consent, 'flags', to_jsonb(v.flags), 'points', v.points,
        'award_txn', v.award_txn,
        'notes_sealed', CASE WHEN p_notes THEN v.notes_sealed END))
$$;

CREATE FUNCTION gp_care_followup_json(f care_followups) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN f.id IS NOT NULL THEN jsonb_strip_nulls(jsonb_build_object(
        'id', f.id, 'unit_id', f.unit_id, 'resident_id', f.resident_id, 'kind', f.kind,
        'help_kind', f.help_kind, 'visit_id', f.visit_id, 'due_id', f.due_id,
        'state', f.state, 'opened_at', f.opened_at, 'closed_at', f.closed_at,
        'closed_by', f.closed_by, 'close_note', f.close_note)) END
$$;

-- The grid (parent of the micro-grid) of a resident: whose care budget pays its visits.
CREATE FUNCTION gp_care_grid_of(p_unit bigint) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT parent_id FROM org_units WHERE id = p_unit
$$;

-- Submits a visit made (possibly offline) by the responsible worker or the backup.
-- p_args: {resident_id, client_visit_id (1..64 of [A-Za-z0-9_.:-]), made_at (RFC 3339),
--          lat?, lng?, outcome: well|needs_help|not_home|moved, help_kind (needs_help only:
--          health|meals|repairs|mood|other), photos?: [sha256] (<= 9, uploaded through
--          /api/v1/evidence by the caller), photo_consent?: bool (required true with photos)};
-- p_notes_sealed: the sealed notes (or NULL), p_notes_hash: the server's keyed hash of them
-- (part of the request's identity, since a sealed value differs every time); p_skew: the
-- tolerated client clock skew.
-- Exactly once: the same (worker, client_visit_id) again returns the stored first response
-- with "idempotent_replay": true and changes nothing; with a different body 422
-- client_visit_id_reused. well, needs_help and moved complete the open due visit (on time
-- when made before its grace ran out; a visit within half an interval of the last completed
-- one is an "extra": recorded, not paid, the due visit stays open) and earn the colour's points from the grid's care
-- budget (flag unpaid_no_budget when it cannot pay); the next due visit is made_at + the
-- interval. not_home is recorded and leaves the due visit open. needs_help raises a
-- follow-up for grid staff; moved raises one and pauses the resident.
CREATE FUNCTION gp_care_visit_submit(p_actor bigint, p_args jsonb, p_notes_sealed text,
                                     p_notes_hash text, p_skew interval DEFAULT '2 minutes')
RETURNS gp_reply LANGUAGE plpgsql AS $$
DECLARE
    v_args jsonb;
    v_cvid text;
    v_hash text;
    v care_visits;
    old care_visits;
    r care_residents;
    d care_dues;
    nd care_dues;
    p care_policies;
    f care_followups;
    e jsonb;
    v_award jsonb;
    v_care bigint;
    v_resp jsonb;
BEGIN
    v_args := gp_targ_object(p_args, ARRAY['resident_id', 'client_visit_id', 'made_at', 'lat',
                                           'lng', 'outcome', 'help_kind', 'photos',
                                           'photo_consent']);
    v_cvid := gp_targ_text(v_args, 'client_visit_id', 1, 64, true);
    IF v_cvid !~ '^[A-Za-z0-9_.:-]{1,64}$' THEN
        PERFORM gp_raise('400', 'invalid_client_visit_id',
            'client_visit_id must be 1 to 64 letters, digits or _.:-', 'client_visit_id');
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('gp_care_visit/' || p_actor || '/' || v_cvid, 0));
    v_hash := md5(v_args::text || '/' || coalesce(p_notes_hash, ''));
    SELECT * INTO old FROM care_visits WHERE worker_id = p_actor AND client_visit_id = v_cvid;
    IF FOUND THEN
        IF old.request_hash <> v_hash THEN
            PERFORM gp_raise('422', 'client_visit_id_reused',
                'this client_visit_id was already used for a different visit',
                'client_visit_id');
        END IF;
        RETURN gp_out(old.response || jsonb_build_object('idempotent_replay', true));
    END IF;

    v.made_at := gp_targ_ts(v_args, 'made_at', true);
    IF v.made_at > now() + p_skew THEN
        PERFORM gp_raise('400', 'visit_in_future', 'made_at is in the future', 'made_at');
    END IF;
    v.lat := gp_targ_num(v_args, 'lat', -90, 90);
    v.lng := gp_targ_num(v_args, 'lng', -180, 180);
    IF (v.lat IS NULL) <> (v.lng IS NULL) THEN
        PERFORM gp_raise('400', 'invalid_place', 'lat and lng must be given together',
                         CASE WHEN v.lat IS NULL THEN 'lat' ELSE 'lng' END);
    END IF;
    v.outcome := gp_targ_text(v_args, 'outcome', 1, 20, true);
    IF v.outcome NOT IN ('well', 'needs_help', 'not_home', 'moved') THEN
        PERFORM gp_raise('400', 'invalid_outcome',
                         'outcome must be well, needs_help, not_home or moved', 'outcome');
    END IF;
    v.help_kind := gp_targ_text(v_args, 'help_kind', 1, 20);
    IF (v.outcome = 'needs_help') <> (v.help_kind IS NOT NULL) THEN
        PERFORM gp_raise('400', 'invalid_help_kind',
                         'help_kind is given exactly when outcome is needs_help', 'help_kind');
    END IF;
    IF v.help_kind NOT IN ('health', 'meals', 'repairs', 'mood', 'other') THEN
        PERFORM gp_raise('400', 'invalid_help_kind',
                         'help_kind must be health, meals, repairs, mood or other', 'help_kind');
    END IF;
    v.photo_consent := coalesce(gp_targ_bool(v_args, 'photo_consent'), false);
    e := gp_targ_value(v_args, 'photos', false);
    v.photos := '{}';
    IF e IS NOT NULL THEN
        IF jsonb_typeof(e) <> 'array' OR jsonb_array_length(e) > 9 OR EXISTS (
               SELECT 1 FROM jsonb_array_elements(e) x
                WHERE jsonb_typeof(x) <> 'string' OR (x #>> '{}') !~ '^[0-9A-Fa-f]{64}$') THEN
            PERFORM gp_raise('400', 'invalid_photos',
                             'photos must be a list of at most 9 sha256 digests', 'photos');
        END IF;
        v.photos := ARRAY(SELECT DISTINCT lower(x) FROM jsonb_array_elements_text(e) x ORDER BY 1);
    END IF;
    IF cardinality(v.photos) > 0 AND NOT v.photo_consent THEN
        PERFORM gp_raise('400', 'consent_required',
                         'photos are taken only with the resident''s consent (photo_consent)',
                         'photo_consent');
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(v.photos) h
                WHERE NOT EXISTS (SELECT 1 FROM evidence_uploaders eu JOIN evidence ev
                                    ON ev.sha256 = eu.sha256 AND ev.state = 'stored'
                                   WHERE eu.sha256 = h AND eu.person_id = p_actor)) THEN
        PERFORM gp_raise('400', 'photo_not_uploaded',
                         'upload each photo through /api/v1/evidence first', 'photos');
    END IF;
    r := gp_care_require(p_actor, gp_targ_int(v_args, 'resident_id', 1, 9223372036854775807,
                                              true), 'visit', true);
    IF v.made_at < r.entered_at - p_skew THEN
        PERFORM gp_raise('409', 'visit_before_entry',
                         'made_at is before the resident entered the lists', 'made_at');
    END IF;
    p := gp_care_rule(r.street_id, r.colour);
    v.flags := '{}';
    IF r.lat IS NOT NULL THEN
        IF v.lat IS NULL THEN
            IF p.geofence_enforced THEN
                PERFORM gp_raise('400', 'location_required', 'this visit needs its place', 'lat');
            END IF;
            v.flags := v.flags || 'no_location'::text;
        ELSE
            v.distance_m := gp_distance_m(r.lat, r.lng, v.lat, v.lng);
            IF v.distance_m > p.geofence_m THEN
                IF p.geofence_enforced THEN
                    PERFORM gp_raise('409', 'outside_geofence',
                        format('the visit is %s m from the home, more than %s m',
                               round(v.distance_m::numeric), p.geofence_m), 'lat');
                END IF;
                v.flags := v.flags || 'outside_geofence'::text;
            END IF;
        END IF;
    END IF;
    IF r.worker_id <> p_actor THEN
        v.flags := v.flags || 'by_backup'::text;
    END IF;
    d := gp_care_open_due(r.id);
    IF d.id IS NOT NULL THEN
        PERFORM 1 FROM care_dues WHERE id = d.id FOR UPDATE;
    END IF;

    v.id := nextval('care_visits_id_seq');
    v.street_id := r.street_id;
    v.resident_id := r.id;
    v.worker_id := p_actor;
    v.client_visit_id := v_cvid;
    v.received_at := now();
    v.notes_sealed := p_notes_sealed;
    v.points := 0;
    -- a visit too soon after the last completed one (within half an interval) is an extra:
    -- recorded, not paid, and the due visit stays open
    IF v.outcome <> 'not_home' AND d.id IS NOT NULL AND r.status = 'active'
       AND (r.last_visit_at IS NULL OR v.made_at >= r.last_visit_at + p.every / 2) THEN
        v.due_id := d.id;
        IF v.made_at > d.grace_until THEN
            v.flags := v.flags || 'late'::text;
        END IF;
    ELSIF v.outcome <> 'not_home' THEN
        v.flags := v.flags || 'extra'::text;
    END IF;
    IF now() > v.made_at + interval '1 hour' THEN
        v.flags := v.flags || 'late_sync'::text;
    END IF;
    -- the row first (the award's refs and the follow-up point at it), then the due, the pay
    INSERT INTO care_visits (id, street_id, resident_id, due_id, worker_id, client_visit_id,
        made_at, received_at, lat, lng, distance_m, outcome, help_kind, notes_sealed, photos,
        photo_consent, flags, points, request_hash, response)
    VALUES (v.id, v.street_id, v.resident_id, v.due_id, v.worker_id, v.client_visit_id,
        v.made_at, v.received_at, v.lat, v.lng, v.distance_m, v.outcome, v.help_kind,
        v.notes_sealed, v.photos, v.photo_consent, v.flags, 0, v_hash, '{}');
    IF v.due_id IS NOT NULL THEN
        UPDATE care_dues SET state = 'done', visit_id = v.id, done_at = v.made_at,
                             closed_at = now()
         WHERE id = d.id RETURNING * INTO d;
        UPDATE care_followups SET state = 'closed', closed_at = now(), closed_by = p_actor,
                                  close_note = 'visited'
         WHERE due_id = d.id AND state = 'open';
        UPDATE care_residents SET last_visit_at = greatest(last_visit_at, v.made_at),
                                  updated_at = now()
         WHERE id = r.id RETURNING * INTO r;
        IF v.outcome = 'moved' THEN
            UPDATE care_residents SET status = 'paused', status_reason = 'moved (visit)'
             WHERE id = r.id RETURNING * INTO r;
        ELSE
            nd := gp_care_schedule(r, 'visit', v.made_at);
        END IF;
        IF p.points > 0 THEN
            BEGIN
                v_care := gp_account_of('care', gp_care_grid_of(r.unit_id));
                v_award := gp_award_from(v_care, jsonb_build_object('care_visit_id', v.id,
                                                                    'resident_id', r.id),
                                         p_actor, p.points, p_actor);
                v.points := p.points;
                v.award_txn := (v_award ->> 'txn_id')::bigint;
            EXCEPTION WHEN SQLSTATE 'GP402' THEN
                v.flags := v.flags || 'unpaid_no_budget'::text;
            END;
        END IF;
    END IF;
    IF v.outcome IN ('needs_help', 'moved') THEN
        INSERT INTO care_followups (street_id, unit_id, resident_id, kind, help_kind, visit_id)
        VALUES (r.street_id, r.unit_id, r.id, v.outcome, v.help_kind, v.id)
        RETURNING * INTO f;
        INSERT INTO outbox (topic, person_id, payload)
        SELECT 'care.' || v.outcome, g.person_id, jsonb_build_object('followup_id', f.id,
                   'resident_id', r.id, 'visit_id', v.id, 'help_kind', v.help_kind,
                   'unit_id', r.unit_id)
          FROM org_units mu JOIN role_grants g ON g.unit_id = mu.parent_id
                                              AND g.role = 'grid_staff'
         WHERE mu.id = r.unit_id;
    END IF;
    v_resp := jsonb_build_object('visit', gp_care_visit_json(v), 'due', gp_care_due_json(d),
                                 'next_due', gp_care_due_json(nd),
                                 'followup', gp_care_followup_json(f),
                                 'award', CASE WHEN v_award IS NOT NULL THEN
                                     jsonb_build_object('txn_id', v.award_txn,
                                                        'amount', v.points,
                                                        'available', v_award -> 'available',
                                                        'pending', v_award -> 'pending') END);
    UPDATE care_visits SET points = v.points, award_txn = v.award_txn, flags = v.flags,
                           response = v_resp
     WHERE id = v.id;
    RETURN gp_out(v_resp, jsonb_build_object('awards', CASE WHEN v_award IS NOT NULL
                                                            THEN jsonb_build_array(v_award) END));
END
$$;

------------------------------------------------------------------------------------------
-- Follow-ups
------------------------------------------------------------------------------------------
-- Follow-ups in the actor's staff scope (or unit_id's subtree), open first by default.
-- p_args: {unit_id?, state?: open|closed, kind?, cursor?, limit?}; by id.
CREATE FUNCTION gp_care_followup_list(p_actor bigint, p_args jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_args jsonb := gp_targ_object(p_args, ARRAY['unit_id', 'state', 'kind', 'cursor', 'limit']);
    v_page record := gp_page_args(v_args);
    v_unit bigint := gp_targ_int(v_args, 'unit_id', 1, 9223372036854775807);
    v_state text := coalesce(gp_targ_text(v_args, 'state', 1, 10), 'open');
    v_kind text := gp_targ_text(v_args, 'kind', 1, 20);
    v_path ltree;
    v_items jsonb;
BEGIN
    IF v_unit IS NOT NULL THEN
        v_path := (gp_require_unit(p_actor, v_unit, gp_staff_roles())).path;
    ELSIF NOT EXISTS (SELECT 1 FROM role_grants WHERE person_id = p_actor
                                                  AND role = ANY (gp_staff_roles())) THEN
        PERFORM gp_raise('403', 'not_staff', 'only staff see follow-ups', 'unit_id');
    END IF;
    SELECT coalesce(jsonb_agg(x.j ORDER BY x.id), '[]')
      INTO v_items
      FROM (SELECT f.id, gp_care_followup_json(f) || jsonb_build_object(
                       'resident', gp_care_resident_json(r, 'masked')) AS j
              FROM care_followups f JOIN org_units u ON u.id = f.unit_id
              JOIN care_residents r ON r.id = f.resident_id
             WHERE f.id > coalesce(v_page.after, 0) AND f.state = v_state
               AND (v_kind IS NULL OR f.kind = v_kind)
               AND (v_path IS NULL OR u.path <@ v_path)
               AND gp_role_covers(p_actor, gp_staff_roles(), u.path)
             ORDER BY f.id LIMIT v_page.lim + 1) x;
    RETURN gp_page(v_items, v_page.lim);
END
$$;

CREATE FUNCTION gp_care_followup_close(p_actor bigint, p_followup bigint, p_note text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    f care_followups;
BEGIN
    SELECT * INTO f FROM care_followups WHERE id = p_followup FOR UPDATE;
    IF NOT FOUND OR NOT gp_care_is_staff(p_actor, f.unit_id) THEN
        PERFORM gp_raise('404', 'followup_not_found', 'follow-up not found', 'followup_id');
    END IF;
    IF f.state = 'closed' THEN
        PERFORM gp_raise('409', 'followup_closed', 'the follow-up is already closed',
                         'followup_id');
    END IF;
    UPDATE care_followups SET state = 'closed', closed_at = now(), closed_by = p_actor,
                              close_note = p_note
     WHERE id = f.id RETURNING * INTO f;
    PERFORM gp_audit(p_actor, 'care.followup.close', 'care_followup', f.id::text, f.unit_id,
                     jsonb_build_object('state', 'open'), gp_care_followup_json(f), p_note);
    RETURN gp_care_followup_json(f);
END
$$;

------------------------------------------------------------------------------------------
-- Coverage
------------------------------------------------------------------------------------------
-- Coverage of a unit (street, community, grid or micro-grid; staff over it) for a period:
-- p_args: {unit_id, from?, to? (RFC 3339; default the current month, Asia/Shanghai)}.
-- residents by colour and status; of the visits that fell due in the period: done on time
-- (before the grace ran out), late, missed (still open after the grace), open (grace not yet
-- over); the 10 active residents not seen for longest; the same counts per child unit.
CREATE FUNCTION gp_care_coverage(p_actor bigint, p_args jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    -- (limit: the server's page argument of every GET with filters; no page here)
    v_args jsonb := gp_targ_object(p_args, ARRAY['unit_id', 'from', 'to', 'limit']);
    u org_units;
    v_from timestamptz := gp_targ_ts(v_args, 'from');
    v_to timestamptz := gp_targ_ts(v_args, 'to');
BEGIN
    u := gp_require_unit(p_actor, gp_targ_int(v_args, 'unit_id', 1, 9223372036854775807, true),
                         gp_staff_roles());
    v_from := coalesce(v_from, date_trunc('month', now() AT TIME ZONE 'Asia/Shanghai')
                                   AT TIME ZONE 'Asia/Shanghai');
    v_to := coalesce(v_to, (date_trunc('month', now() AT TIME ZONE 'Asia/Shanghai')
                            + interval '1 month') AT TIME ZONE 'Asia/Shanghai');
    IF v_to <= v_from OR v_to - v_from > interval '366 days' THEN
        PERFORM gp_raise('400', 'invalid_period', 'to must be after from, at most a year later',
                         'to');
    END IF;
    RETURN jsonb_build_object(
        'unit_id', u.id, 'level', u.level, 'name', u.name, 'from', v_from, 'to', v_to,
        'as_of', now())
        || gp_care_counts(u.path, v_from, v_to)
        || jsonb_build_object(
            'not_seen_longest', (SELECT coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                    'resident_id', r.id, 'unit_id', r.unit_id, 'colour', r.colour,
                    'name_sealed_masked', r.name_sealed,
                    'last_seen_at', coalesce(r.last_visit_at, r.entered_at),
                    'never_visited', r.last_visit_at IS NULL,
                    'days', floor(extract(epoch FROM now() - coalesce(r.last_visit_at,
                                                                      r.entered_at)) / 86400)))
                    ORDER BY coalesce(r.last_visit_at, r.entered_at), r.id), '[]')
                  FROM (SELECT r.* FROM care_residents r JOIN org_units ru ON ru.id = r.unit_id
                         WHERE ru.path <@ u.path AND r.status = 'active'
                         ORDER BY coalesce(r.last_visit_at, r.entered_at), r.id LIMIT 10) r),
            'children', (SELECT coalesce(jsonb_agg(jsonb_build_object('unit_id', c.id,
                                    'level', c.level, 'name', c.name)
                                    || gp_care_counts(c.path, v_from, v_to) ORDER BY c.id), '[]')
                           FROM org_units c WHERE c.parent_id = u.id));
END
$$;

CREATE FUNCTION gp_care_counts(p_path ltree, p_from timestamptz, p_to timestamptz)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'residents', (SELECT jsonb_build_object(
                'total', count(*) FILTER (WHERE r.status <> 'removed'),
                'red', count(*) FILTER (WHERE r.status <> 'removed' AND r.colour = 'red'),
                'yellow', count(*) FILTER (WHERE r.status <> 'removed' AND r.colour = 'yellow'),
                'blue', count(*) FILTER (WHERE r.status <> 'removed' AND r.colour = 'blue'),
                'paused', count(*) FILTER (WHERE r.status = 'paused'))
              FROM care_residents r JOIN org_units ru ON ru.id = r.unit_id
             WHERE ru.path <@ p_path),
        'visits', (SELECT jsonb_build_object(
                'due', count(*) FILTER (WHERE d.state <> 'cancelled'),
                'done_on_time', count(*) FILTER (WHERE d.state = 'done'
                                                   AND d.done_at <= d.grace_until),
                'done_late', count(*) FILTER (WHERE d.state = 'done'
                                                AND d.done_at > d.grace_until),
                'missed', count(*) FILTER (WHERE d.state = 'open' AND now() > d.grace_until),
                'open', count(*) FILTER (WHERE d.state = 'open' AND now() <= d.grace_until))
              FROM care_dues d JOIN care_residents r ON r.id = d.resident_id
              JOIN org_units ru ON ru.id = r.unit_id
             WHERE ru.path <@ p_path AND d.due_at >= p_from AND d.due_at < p_to))
$$;

------------------------------------------------------------------------------------------
-- Export (street admins, with a reason), the care budget
------------------------------------------------------------------------------------------
-- One page of the residents of unit_id's subtree, opened in full. p_args: {unit_id, cursor?,
-- limit?}, p_reason (1..500, checked by the server). Every page is written to the audit log
-- with the reason.
CREATE FUNCTION gp_care_export(p_actor bigint, p_args jsonb, p_reason text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_args jsonb := gp_targ_object(p_args, ARRAY['unit_id', 'cursor', 'limit']);
    v_page record := gp_page_args(v_args);
    v_reason text := p_reason;
    u org_units;
    v_items jsonb;
BEGIN
    u := gp_require_unit(p_actor, gp_targ_int(v_args, 'unit_id', 1, 9223372036854775807, true),
                         gp_staff_roles());
    IF NOT gp_has_role(p_actor, ARRAY['street_admin'], u.id) THEN
        PERFORM gp_raise('403', 'not_street_admin', 'only a street admin exports residents',
                         'unit_id');
    END IF;
    SELECT coalesce(jsonb_agg(x.j ORDER BY x.id), '[]')
      INTO v_items
      FROM (SELECT r.id, gp_care_resident_json(r, 'open') AS j
              FROM care_residents r JOIN org_units ru ON ru.id = r.unit_id
             WHERE ru.path <@ u.path AND r.id > coalesce(v_page.after, 0)
             ORDER BY r.id LIMIT v_page.lim + 1) x;
    PERFORM gp_audit(p_actor, 'care.export', 'org_unit', u.id::text, u.id, NULL,
                     jsonb_build_object('rows', least(jsonb_array_length(v_items), v_page.lim),
                                        'after', v_page.after), v_reason);
    RETURN gp_page(v_items, v_page.lim);
END
$$;

-- Moves p_amount of the grid's budget into its care budget (staff over the grid).
CREATE FUNCTION gp_care_fund(p_actor bigint, p_unit bigint, p_amount bigint, p_memo text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    u org_units := gp_require_unit(p_actor, p_unit, gp_staff_roles());
    v_budget bigint;
    v_care bigint;
    v_txn bigint;
BEGIN
    IF u.level <> 'grid' THEN
        PERFORM gp_raise('400', 'not_a_grid', 'a care budget belongs to a grid', 'unit_id');
    END IF;
    v_budget := gp_account_of('budget', u.id);
    v_care := gp_account_of('care', u.id);
    v_txn := gp_ledger_post_legs('reserve', p_actor,
        jsonb_build_object('care_unit_id', u.id), p_memo, ARRAY[v_budget, v_care],
        ARRAY[-p_amount, p_amount]);
    PERFORM gp_audit(p_actor, 'care.fund', 'org_unit', u.id::text, u.id, NULL,
                     jsonb_build_object('amount', p_amount, 'txn_id', v_txn), p_memo);
    RETURN jsonb_build_object('txn_id', v_txn, 'unit_id', u.id, 'amount', p_amount,
        'care_balance', (SELECT balance FROM accounts WHERE id = v_care),
        'budget_balance', (SELECT balance FROM accounts WHERE id = v_budget));
END
$$;

-- The care budget of a grid (staff and auditors over it).
CREATE FUNCTION gp_care_budget(p_actor bigint, p_unit bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    u org_units := gp_require_unit(p_actor, p_unit, gp_reader_roles());
BEGIN
    IF u.level <> 'grid' THEN
        PERFORM gp_raise('400', 'not_a_grid', 'a care budget belongs to a grid', 'unit_id');
    END IF;
    RETURN jsonb_build_object('unit_id', u.id,
        'care_balance', coalesce((SELECT balance FROM accounts
                                   WHERE kind = 'care' AND owner_id = u.id), 0),
        'paid', coalesce((SELECT -sum(p.amount) FROM accounts a
                            JOIN postings p ON p.account_id = a.id
                            JOIN ledger_txns t ON t.id = p.txn_id AND t.kind = 'award'
                           WHERE a.kind = 'care' AND a.owner_id = u.id), 0));
END
$$;

------------------------------------------------------------------------------------------
-- The sweep (server/sweeps.c, every timer.sweep_interval on every instance)
------------------------------------------------------------------------------------------
-- Escalates due visits whose grace ran out to grid staff (a follow-up of kind 'overdue'),
-- exactly once each: the due row is claimed with FOR UPDATE SKIP LOCKED and marked in the
-- same transaction, and a unique index backs it; the grid's staff get an outbox notice
-- (care.overdue, ids only). Then purges the sealed fields of residents
-- removed more than p_args.retention_s seconds ago (care.retention).
-- Returns {escalated, purged, more}.
CREATE FUNCTION gp_care_sweep(p_batch int, p_args jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_keep interval := make_interval(secs => coalesce((p_args ->> 'retention_s')::bigint,
                                                      31536000));
    v_esc int;
    v_purged int;
BEGIN
    WITH due AS (
        SELECT d.id, d.street_id, d.resident_id FROM care_dues d
         WHERE d.state = 'open' AND d.escalated_at IS NULL AND d.grace_until < now()
         ORDER BY d.grace_until LIMIT p_batch FOR UPDATE SKIP LOCKED),
    marked AS (
        UPDATE care_dues d SET escalated_at = now() FROM due WHERE d.id = due.id
        RETURNING d.id, d.street_id, d.resident_id),
    ins AS (
        INSERT INTO care_followups (street_id, unit_id, resident_id, kind, due_id)
        SELECT m.street_id, r.unit_id, m.resident_id, 'overdue', m.id
          FROM marked m JOIN care_residents r ON r.id = m.resident_id
        RETURNING *),
    told AS (
        INSERT INTO outbox (topic, person_id, payload)
        SELECT 'care.overdue', g.person_id, jsonb_build_object('followup_id', i.id,
                   'resident_id', i.resident_id, 'due_id', i.due_id, 'unit_id', i.unit_id)
          FROM ins i JOIN org_units mu ON mu.id = i.unit_id
          JOIN role_grants g ON g.unit_id = mu.parent_id AND g.role = 'grid_staff'
        RETURNING 1)
    SELECT count(*) INTO v_esc FROM ins;
    WITH gone AS (
        SELECT id FROM care_residents
         WHERE status = 'removed' AND purged_at IS NULL
           AND removed_at <= now() - v_keep
         ORDER BY removed_at LIMIT p_batch FOR UPDATE SKIP LOCKED),
    purged AS (
        UPDATE care_residents r SET name_sealed = NULL, phone_sealed = NULL,
               address_sealed = NULL, id_number_sealed = NULL, health_sealed = NULL,
               phone_hash = NULL, id_hash = NULL, lat = NULL, lng = NULL, purged_at = now()
          FROM gone WHERE r.id = gone.id
        RETURNING r.id),
    -- visit notes (and the stored replies that hold them) go with the resident
    notes AS (
        UPDATE care_visits v SET notes_sealed = NULL, response = '{}'
         WHERE v.resident_id IN (SELECT id FROM purged)
        RETURNING 1)
    SELECT count(*) INTO v_purged FROM purged;
    RETURN jsonb_build_object('escalated', v_esc, 'purged', v_purged,
                              'more', v_esc >= p_batch OR v_purged >= p_batch);
END
$$;
