# The tower image: the API, the dispatcher and the warm pool of one replica. It drives
# the host's Docker daemon through its socket (mounted by docker-compose.yml) to create
# worker containers. Build it with BuildKit (`parpaing images build --tower`, or
# `docker compose build` with Compose v2). No "# syntax=" line on purpose: that would
# pull a frontend image, and registry-less hosts cannot. Optional build input: a CA
# bundle as the secret "ca", trusted by apt and pip (worker/build/with-ca; docs/images.md).

FROM debian:bookworm-slim

ENV LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/parpaing/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

RUN --mount=type=secret,id=ca \
    --mount=type=bind,source=worker/build/with-ca,target=/usr/local/bin/with-ca \
    with-ca sh -c 'apt-get update -q \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
           python3 python3-venv ca-certificates \
      && rm -rf /var/lib/apt/lists/*' \
 && python3 -m venv /opt/parpaing

# Dependencies first, from pyproject.toml alone: a code change rebuilds only the last layer.
COPY pyproject.toml /app/pyproject.toml
RUN --mount=type=secret,id=ca \
    --mount=type=bind,source=worker/build/with-ca,target=/usr/local/bin/with-ca \
    python3 -c 'import tomllib; print("\n".join(tomllib.load(open("/app/pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > /tmp/requirements.txt \
 && with-ca pip install -q -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# Installed in place (editable): tower finds its migrations and shipped configs next to
# the package, as in a checkout, and the distribution's metadata (its version) is there.
COPY . /app
RUN --mount=type=secret,id=ca \
    --mount=type=bind,source=worker/build/with-ca,target=/usr/local/bin/with-ca \
    with-ca pip install -q --no-deps -e /app
ENV TOWER_HOST=0.0.0.0 \
    TOWER_PORT=8080
WORKDIR /app
EXPOSE 8080
# Root: the Docker socket it drives is root-equivalent anyway (docs/operations.md).
ENTRYPOINT ["parpaing"]
CMD ["serve"]
