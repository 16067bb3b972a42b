-- Tenant-restricted admin tokens (postgres).
--
-- `tenant_ids` NULL: the token reaches the whole fleet, as every token did before. A JSON array
-- of tenant ids: the token sees and changes only those tenants; fleet-wide routes (shards,
-- tokens, resolve, fleet migrations, creating tenants) answer it 403. Ids, not slugs, so a
-- restriction follows the tenant it was made for; a purged tenant's id matches nothing, so the
-- token fails closed.
ALTER TABLE admin_tokens ADD COLUMN tenant_ids jsonb;
