"""A read-only role for analysts and BI tools (issue 14): zoo_reader, SELECT on the catalogue's tables and views.

Created where the migrating user may create roles. Where it may not, the role is left out (logged) and `zoo db
reader-sql` prints the statements for a DBA; if a DBA created the role already, the grants are still made here,
since they need only the tables' owner. The statements live in db/reader_role.py, one copy for both uses.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

import logging

from alembic import op
import sqlalchemy as sa

from db import reader_role

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    if not reader_role.apply(op.get_bind()):
        log.warning("the read-only role %s was not created: this database user may not create roles; "
                    "give the output of `zoo db reader-sql` to a DBA", reader_role.READER_ROLE)


def downgrade() -> None:
    conn = op.get_bind()
    if not reader_role.reader_exists(conn):
        return
    for statement in reader_role.revoke_statements(*reader_role.database_and_owner(conn)):
        conn.execute(sa.text(statement))
    if reader_role.may_manage_roles(conn):
        conn.execute(sa.text(
            f"DO $$ BEGIN DROP ROLE {reader_role.READER_ROLE}; "
            "EXCEPTION WHEN dependent_objects_still_exist THEN NULL; "  # still granted in another database
            "END $$"))
