-- One service's database and its two roles. Run by a superuser (or a role with CREATEROLE
-- and CREATEDB) with psql, once per service; safe to run again (it changes passwords to the
-- ones given and leaves data alone):
--
--   psql --set ON_ERROR_STOP=1 --set database=order \
--        --set owner_role=order_owner --set owner_password=... \
--        --set app_role=order_app --set app_password=... --file provision.sql
--
-- The owner role owns the database and its schema `public`; the service runs its migrations
-- (and the rebuild commands) as the owner, through DATABASE_MIGRATION_URL. The app role is
-- what the service runs as, through DATABASE_URL: it may connect to this database only, and
-- only read and write rows (SELECT, INSERT, UPDATE, DELETE; sequences for serial ids) — no
-- CREATE, ALTER, DROP or TRUNCATE, no temporary tables, no other service's database.
--
-- The single source of these statements: the compose Postgres runs it from its init script
-- (init-databases.sh), the Kubernetes example from a Job (kustomization.yaml here), and the
-- end-to-end harness for every test system (tests/src/databases.rs).

\set ON_ERROR_STOP on

-- The roles. Neither may create roles or databases; the app role does not inherit, so a
-- grant to it later cannot smuggle in the privileges of another role.
SELECT format('CREATE ROLE %I', :'owner_role')
    WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'owner_role') \gexec
ALTER ROLE :"owner_role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    PASSWORD :'owner_password';
SELECT format('CREATE ROLE %I', :'app_role')
    WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app_role') \gexec
ALTER ROLE :"app_role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOINHERIT
    PASSWORD :'app_password';

-- The database, owned by the owner role. Nobody else may connect (PUBLIC has CONNECT and
-- TEMPORARY on every new database), except the app role.
SELECT format('CREATE DATABASE %I OWNER %I', :'database', :'owner_role')
    WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'database') \gexec
ALTER DATABASE :"database" OWNER TO :"owner_role";
REVOKE ALL ON DATABASE :"database" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"database" TO :"app_role";

\connect :database

-- The schema the migrations create their tables in: the owner's; the app role may only use
-- it (before Postgres 15, PUBLIC could also create in it).
ALTER SCHEMA public OWNER TO :"owner_role";
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO :"app_role";

-- Every table and sequence the owner creates from now on (migrations, a rebuilt read model)
-- is the app role's to read and write, and no more.
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner_role"
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"app_role";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner_role"
    GRANT USAGE, SELECT ON SEQUENCES TO :"app_role";

-- And those that exist already (a database migrated before it had these roles).
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO :"app_role";
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO :"app_role";
