"""Named secrets (git and forge credentials), encrypted at rest with SECRETS_KEY."""
