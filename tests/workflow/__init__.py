"""The Relationship workflow on Temporal: lifecycle, replay, versioning, long life."""
