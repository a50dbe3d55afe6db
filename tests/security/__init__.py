"""Keys, the codec, confidentiality, forgetting, audit, the deployment's security."""
