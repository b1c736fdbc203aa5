"""entity keys of any shape: a stored score's entity is the text of its id (core/features/keys.py)

`batch_predictions.entity_id bigint` becomes `entity_key text`: the decimal id of an int key (existing rows
convert as they are), the string of a string key, the canonical JSON of a composite key. Collation "C": keys
are only ever compared for equality, and bytewise comparison keeps COPY's index upkeep cheap.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 12:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision: the column becomes text, renamed with its index."""
    op.execute(
        'ALTER TABLE tandem.batch_predictions ALTER COLUMN entity_id TYPE text COLLATE "C" USING entity_id::text'
    )
    op.alter_column("batch_predictions", "entity_id", new_column_name="entity_key", schema="tandem")
    op.execute("ALTER INDEX tandem.ix_batch_predictions_entity_id RENAME TO ix_batch_predictions_entity_key")


def downgrade() -> None:
    """Revert this revision (fails for stored scores of string or composite keys, which bigint can't hold)."""
    op.execute("ALTER INDEX tandem.ix_batch_predictions_entity_key RENAME TO ix_batch_predictions_entity_id")
    op.alter_column("batch_predictions", "entity_key", new_column_name="entity_id", schema="tandem")
    op.execute(
        "ALTER TABLE tandem.batch_predictions ALTER COLUMN entity_id TYPE bigint USING entity_id::bigint"
    )
