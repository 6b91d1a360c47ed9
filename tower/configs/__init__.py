"""Profiles, engines and templates: parsing, validation, the store and its routes."""
