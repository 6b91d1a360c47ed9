"""The worker contract through a real, hardened container (docs/execution.md).

Each test starts the worker image the way tower does (uid 1000, read-only root, no
capabilities, no network, a tmpfs volume at /bundle, Docker's init), waits for the
ready line, attaches, writes the framed bundle on the container's stdin, follows its
output to the done line, and reads /bundle/out back both ways the runner does: the
worker's output frame and get_archive, which must agree.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator

import docker
import pytest
from docker.models.containers import Container

from tests.unit.test_worker import big_prompt, shipped_profile, shipped_templates, stdin_cat_engine
from tower.configs.models import Engine, Template
from tower.configs.parse import parse_engine
from tower.execution.bundle import WorkerOutput, bundle_tar, read_output
from tower.execution.docker import containers
from tower.execution.docker.archive import collect_output
from tower.execution.docker.hardening import container_options
from tower.execution.outcome import parse_outcome
from tower.execution.protocol import READY_LINE
from tower.execution.slots import ContainerShape
from tower.execution.spec import CLAUDE_MD_PATH, PROMPT_PATH, JobSpec, build_spec
from tower.settings import Settings

LABEL = "parpaing.test"
READY = READY_LINE
# Bounds on each wait, so a broken worker fails the test instead of hanging the run.
EXIT_DEADLINE = 120


@pytest.fixture
def run_label(docker_client: docker.DockerClient) -> Iterator[dict[str, str]]:
    """A label for this test's containers and volumes, all removed afterwards."""
    labels = {LABEL: f"worker-contract-{uuid.uuid4().hex[:12]}"}
    yield labels
    selector = {"label": f"{LABEL}={labels[LABEL]}"}
    for container in docker_client.containers.list(all=True, filters=selector):
        container.remove(force=True)
    for volume in docker_client.volumes.list(filters=selector):
        volume.remove(force=True)


def start_worker(client: docker.DockerClient, image: str, labels: dict[str, str]) -> Container:
    """The container tower would create (hardening.container_options), with only this
    test's labels and name: a live tower's reconcile must not take it for a stray."""
    slot_id = f"test-{uuid.uuid4().hex[:12]}"
    volume = client.volumes.create(
        name=f"parpaing-test-bundle-{slot_id}",
        driver="local",
        driver_opts={"type": "tmpfs", "device": "tmpfs", "o": "size=64m,uid=1000,gid=1000"},
        labels=labels,
    )
    # The gateway's socket volume: empty here (no gateway), made with this test's labels.
    socket_volume = client.volumes.create(name=f"parpaing-test-socket-{slot_id}", labels=labels)
    shape = ContainerShape(image, "512m", 1.0, 256, "", str(socket_volume.name))
    settings = Settings(worker_tmp_size="64m", worker_workspace_size="64m")
    options = container_options(shape, settings, slot_id, str(volume.name))
    options |= {"labels": labels, "name": f"parpaing-test-worker-{slot_id}"}
    container = client.containers.create(**options)
    container.start()
    wait_for_line(container, READY)
    return container


def wait_for_line(container: Container, line: bytes) -> None:
    """Follow the logs until `line`; the stream ends (and the test fails) if the
    container exits first."""
    window = b""
    for chunk in container.logs(stream=True, follow=True, stderr=False):
        window = window[-len(line) :] + chunk
        if line in window:
            return
    logs = container.logs(tail=20).decode(errors="replace")
    pytest.fail(f"the container exited before {line!r}; the end of its logs:\n{logs}")


def run_job(client: docker.DockerClient, container: Container, spec: JobSpec) -> WorkerOutput:
    """Attach, deliver, follow to the done line, collect: the runner's steps. The
    container stays up after the worker (its tmpfs /bundle would empty on exit)."""
    feed = containers.attach(client, str(container.id))
    try:
        containers.deliver(client, feed, bundle_tar(spec))
        followed = containers.follow_output(
            client, feed, EXIT_DEADLINE, lambda _stream, _data: None, 1 << 30
        )
    finally:
        containers.close_output(feed)
    assert followed.finished, container.logs(tail=20)
    assert followed.output is not None, "the worker sent no output frame"
    collected = collect_output(client, str(container.id), 1 << 30)
    assert collected is not None, "the worker left nothing in /bundle/out"
    assert read_output(followed.output) == collected
    return collected


def spec_for(request: dict[str, object], engine: Engine, settings: Settings) -> JobSpec:
    templates: dict[str, Template] = shipped_templates()
    return build_spec(
        request, shipped_profile("default"), engine, templates, settings, "e2e-0123456789ab", "tok"
    )


def test_a_5_mb_prompt_reaches_the_engine_byte_identical(
    docker_client: docker.DockerClient, worker_image: str, run_label: dict[str, str]
) -> None:
    prompt = big_prompt(5 * 1024 * 1024)
    settings = Settings(max_result_size=8 * 1024 * 1024)
    engine = stdin_cat_engine()
    templates = shipped_templates() | {"default": Template(name="default", source="{{ prompt }}")}
    spec = build_spec(
        {"prompt": prompt, "output_format": "text"},
        shipped_profile("default"),
        engine,
        templates,
        settings,
        "e2e-0123456789ab",
        "tok",
    )
    container = start_worker(docker_client, worker_image, run_label)

    output = run_job(docker_client, container, spec)

    assert output.result is not None
    assert output.result["exit_code"] == 0, output.result
    sent = hashlib.sha256(prompt.encode("utf-8")).hexdigest()
    assert hashlib.sha256(output.stdout).hexdigest() == sent
    outcome = parse_outcome(
        output,
        engine=engine,
        spec=spec,
        oom_killed=False,
        timed_out=False,
        max_result_size=settings.max_result_size,
    )
    assert outcome.succeeded
    assert outcome.result == prompt


def test_dry_run_reports_the_exact_argv_and_runs_nothing(
    docker_client: docker.DockerClient, worker_image: str, run_label: dict[str, str]
) -> None:
    engine = shipped_engine("claude-code")
    settings = Settings()
    request = {"prompt": "fix the bug", "dry_run": True, "system_prompt": "be terse"}
    spec = spec_for(request, engine, settings)
    container = start_worker(docker_client, worker_image, run_label)

    output = run_job(docker_client, container, spec)

    outcome = parse_outcome(
        output,
        engine=engine,
        spec=spec,
        oom_killed=False,
        timed_out=False,
        max_result_size=settings.max_result_size,
    )
    assert (outcome.succeeded, outcome.exit_code) == (True, 0)
    assert outcome.result is not None
    report = json.loads(outcome.result)
    assert report["dry_run"] is True
    assert report["argv"] == list(spec.argv)
    assert report["argv"][:3] == ["claude", "-p", "--dangerously-skip-permissions"]
    assert PROMPT_PATH in report["files"]
    assert CLAUDE_MD_PATH in report["files"]
    assert output.stdout == b""  # the engine never ran


def test_the_engine_runs_as_the_worker_user_with_its_files_in_place(
    docker_client: docker.DockerClient, worker_image: str, run_label: dict[str, str]
) -> None:
    script = (
        'printf "%s %s " "$(id -u)" "$HOME"; '
        f"stat -c '%u %a' {PROMPT_PATH} {CLAUDE_MD_PATH} | tr '\\n' ' '; "
        "stat -c %u /bundle/job/spec.json"
    )
    engine = parse_engine(
        "probe",
        'id = "probe"\nname = "probe"\nbinary = "bash"\noutput = "text"\n'
        f'args = ["-c", {json.dumps(script)}]\n[prompt]\nvia = "stdin"\n',
    )
    spec = spec_for({"prompt": "hi"}, engine, Settings())
    container = start_worker(docker_client, worker_image, run_label)

    output = run_job(docker_client, container, spec)

    assert output.result is not None and output.result["exit_code"] == 0, output
    assert output.stdout.decode().split() == [
        "1000",
        "/home/worker",
        *("1000", "600"),  # the prompt: the worker's, private
        *("1000", "644"),  # CLAUDE.md
        "1000",  # the worker unpacked the bundle as itself
    ]


def shipped_engine(name: str) -> Engine:
    from tower.configs.defaults import shipped_defaults

    content = next(c for kind, n, c in shipped_defaults() if kind == "engine" and n == name)
    return parse_engine(name, content)
