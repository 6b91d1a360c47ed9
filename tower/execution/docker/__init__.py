"""Everything that talks to Docker: images now; container lifecycle and the warm pool next.

This package is the only one allowed to import the Docker SDK.
"""
