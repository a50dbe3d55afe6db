"""The PostgreSQL event store: appends, owners, projections, data keys, races."""
