-- Epoch fencing (issue 14): the route epoch of the catalog that made this copy the tenant's
-- current one. The app refuses a request signed with an older epoch (503 tenant_moved), so an
-- edge with a stale route can never use an old copy after a move. One row (id = 1), written
-- only by tenantgate's administrative jobs (provisioning, restore, moves); empty until the
-- first of those writes it, which fences nothing. The app never writes it; moves do not
-- replicate it (each copy records its own epoch).
CREATE TABLE tenantgate_epoch (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch BIGINT NOT NULL
);
