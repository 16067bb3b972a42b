-- Data retention: the tables whose old rows are deleted when the tenant's
-- settings.data_retention_days is set (the admin's daily data_retention job, audited with
-- counts), and the column that dates a row (BIGINT milliseconds since the Unix epoch). A later
-- migration marks a new table by inserting its row here.
CREATE TABLE retention_managed (
    table_name       TEXT PRIMARY KEY,
    timestamp_column TEXT NOT NULL
);
INSERT INTO retention_managed (table_name, timestamp_column) VALUES ('items', 'created_at');
