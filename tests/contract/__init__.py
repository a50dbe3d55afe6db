"""The messages other systems send: the contract files, schemas, refusals, payload checks."""
