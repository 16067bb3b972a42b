-- Backup schedule (postgres): at most one scheduled backup per tenant and slot.
--
-- A scheduled backup is recorded with `created_at` = the start of the schedule slot it is for,
-- so "is this tenant's backup for the current slot taken?" is a catalog question, not the
-- memory of one process: a restarted admin neither skips nor repeats a slot, and two admin
-- processes ticking at once cannot both enqueue it (the second insert does nothing).
CREATE UNIQUE INDEX backups_scheduled_slot ON backups (tenant_id, created_at)
    WHERE kind = 'scheduled';
