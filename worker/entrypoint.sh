# The worker container's command: tower runs `sh /opt/parpaing/entrypoint.sh` under
# Docker's init (tower/execution/docker/hardening.py). Its path, the worker's beside it
# and the done line are stated in tower/execution/protocol.py (ENTRYPOINT_PATH,
# WORKER_PATH, DONE_LINE); tests/unit/test_protocol.py checks that this file agrees.
#
# The worker runs under this shell, which outlives it. Its output is on the bundle
# volume, a tmpfs that Docker unmounts (and so empties) when the container stops: the
# container must stay up until tower has collected /bundle/out, so the shell announces
# the worker's end and then idles until tower kills it. SIGTERM/SIGINT are passed on to
# the worker (tini, PID 1, signals only its own child: this shell); the trap is set
# before the worker starts, and the worker handles them before it says ready, so none is
# lost. The worker reads its bundle from the container's stdin, but dash gives a
# background job /dev/null as stdin before applying its redirections (so `<&0` is
# /dev/null too): the real stdin is kept as fd 3 first and handed over from there.
trap 'kill -TERM "$worker" 2>/dev/null; exit 143' TERM INT
exec 3<&0
python3 /opt/parpaing/worker.py <&3 3<&- & worker=$!
while kill -0 "$worker" 2>/dev/null; do wait "$worker"; done
echo "parpaing-worker done"
exec sleep infinity
