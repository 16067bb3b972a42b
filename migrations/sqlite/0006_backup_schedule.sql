-- Backup schedule (sqlite): at most one scheduled backup per tenant and slot. See the
-- PostgreSQL migration for why.
CREATE UNIQUE INDEX backups_scheduled_slot ON backups (tenant_id, created_at)
    WHERE kind = 'scheduled';
