"""The Docker runtime: the client, hardened worker containers, their network and output.

With the warm pool (tower/execution/pool/), the gateway container and image builds, the only
code that imports the Docker SDK.
"""
