"""Moved to `mentorflow.start_options` (the activities that start workflows import it too, and
activities never import workflows). Kept until every caller imports it from there."""

from mentorflow.start_options import (
    relationship_id_of,
    relationship_start_options,
    relationship_workflow_id,
    round_start_options,
)

__all__ = ["relationship_id_of", "relationship_start_options", "relationship_workflow_id", "round_start_options"]
