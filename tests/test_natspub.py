"""The trio-facing NATS publisher and the stand-in's consumer, against a real nats-server.

Every test starts its own ``nats-server`` (``tests/nats_server.py``) on a free loopback port and
checks with a real subscriber (nats-py on a plain asyncio thread, or a JetStream stream as a
witness that survives a server restart)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from nats_server import NatsServer, creds_text

from ccsa.ccbackend.models import Resource, StartJob, StopJob
from ccsa.errors import ConfigError, PublishError
from ccsa.natsbus.lineproto import decode, encode_start, encode_stop
from ccsa.natsbus.natsconf import subject_warning
from ccsa.natsbus.publisher import Publisher
from ccsa.sim.ccbackend.clusters import minimal
from ccsa.sim.ccbackend.nats_consumer import NatsConsumer
from ccsa.sim.ccbackend.state import Backend

SUBJECT = "cc.job.event"


class Subscriber:
    """A plain nats-py subscriber on its own thread and asyncio loop (independent of ccsa)."""

    def __init__(self, url: str, subject: str = SUBJECT, **options: Any) -> None:
        self.url, self.subject, self.options = url, subject, options
        self.messages: list[bytes] = []
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        import nats

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            nc = await nats.connect(self.url, allow_reconnect=False, **self.options)

            async def on_msg(msg: Any) -> None:
                self.messages.append(bytes(msg.data))

            await nc.subscribe(self.subject, cb=on_msg)
            await nc.flush()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await nc.close()

    def __enter__(self) -> Subscriber:
        self._thread.start()
        assert self._ready.wait(10), "subscriber did not connect"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[bytes]:
        with trio.fail_after(timeout):
            while len(self.messages) < count:
                await trio.sleep(0.01)
        return list(self.messages)


def start_body(job_id: int, start_time: int = 1_700_000_000) -> StartJob:
    return StartJob(
        job_id=job_id,
        cluster="fritz",
        user="alice",
        project="proj1",
        num_nodes=1,
        resources=[Resource(hostname="f0101", hwthreads=[0, 1])],
        start_time=start_time,
        shared="none",
        partition="singlenode",
        num_hwthreads=2,
        walltime=3600,
        meta_data={"jobScript": '#!/bin/bash\necho "a,b=c d"\n'},
    )


def stop_body(job_id: int, start_time: int = 1_700_000_000) -> StopJob:
    return StopJob(
        job_id=job_id,
        cluster="fritz",
        job_state="completed",
        stop_time=start_time + 60,
        start_time=start_time,
    )


def publisher_for(server: NatsServer, **extra: Any) -> Publisher:
    return Publisher(
        server.url,
        subject=SUBJECT,
        user=server.user,
        password=server.password,
        creds_file=server.creds_file,
        nkey_seed_file=server.nkey_seed_file,
        reconnect_wait=0.1,
        **extra,
    )


# ------------------------------------------------------------------ pure parts


def test_subject_warning() -> None:
    warning = subject_warning("jobs")
    assert warning is not None
    assert "cc.job.event" in warning
    assert "natsSubject" in warning
    assert subject_warning("cc.job.event") is None


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    missing = str(tmp_path / "absent.creds")
    with pytest.raises(ConfigError, match="natsCredsFile") as info:
        Publisher("nats://127.0.0.1:1", subject=SUBJECT, creds_file=missing)
    assert info.value.key == "natsCredsFile"
    assert "No such file" in str(info.value)

    # nats-py would loop forever on this file; we refuse it up front.
    bad_creds = tmp_path / "bad.creds"
    bad_creds.write_text("just some text\n")
    with pytest.raises(ConfigError, match="not a NATS creds file"):
        Publisher("nats://127.0.0.1:1", subject=SUBJECT, creds_file=str(bad_creds))

    bad_seed_creds = tmp_path / "badseed.creds"
    bad_seed_creds.write_text(creds_text("eyJ.x.y", "SUAGARBAGE"))
    with pytest.raises(ConfigError, match="not a valid NKey seed") as info:
        Publisher("nats://127.0.0.1:1", subject=SUBJECT, creds_file=str(bad_seed_creds))
    assert info.value.key == "natsCredsFile"

    seed = tmp_path / "user.nk"
    seed.write_text("not-a-seed\n")
    with pytest.raises(ConfigError, match="not a valid NKey seed") as info:
        Publisher("nats://127.0.0.1:1", subject=SUBJECT, nkey_seed_file=str(seed))
    assert info.value.key == "natsNKeySeedFile"

    with pytest.raises(ConfigError, match="natsSubject"):
        Publisher("nats://127.0.0.1:1", subject="cc job")


def test_from_config_reads_nats_keys() -> None:
    class Secret:
        def get(self) -> str:
            return "pw"

    cfg = SimpleNamespace(
        nats_server="nats.example",
        nats_port=4333,
        nats_subject="cc.job.event",
        nats_user="u",
        nats_password=Secret(),
        nats_creds_file="",
        nats_nkey_seed_file="",
    )
    pub = Publisher.from_config(cfg)
    assert pub.servers == "nats://nats.example:4333"
    assert pub.subject == "cc.job.event"
    assert not pub.connected
    with pytest.raises(ConfigError, match="natsServer"):
        Publisher.from_config(SimpleNamespace(nats_server=""))


# ------------------------------------------------------------------ real server


@pytest.mark.parametrize("auth", ["plain", "user", "nkey", "creds"])
async def test_publish_reaches_subscriber(tmp_path: Path, auth: str) -> None:
    with NatsServer(tmp_path, auth) as server:  # type: ignore[arg-type]
        lines = [
            encode_start(start_body(1), hostname="ctl"),
            encode_stop(stop_body(1), hostname="ctl", partition="singlenode"),
            encode_stop(stop_body(2), hostname="ctl", partition=""),
        ]
        with Subscriber(server.url, **server.client_options()) as sub:
            async with publisher_for(server) as pub:
                await pub.wait_connected(10)
                assert pub.connected
                for line in lines:
                    await pub.publish(line)
                # Confirmed means the server has them: the subscriber gets them in order.
                assert await sub.wait_for(3) == lines
        assert [e.function for e in decode(b"".join(sub.messages))] == [
            "start_job",
            "stop_job",
            "stop_job",
        ]
        assert not pub.connected


async def test_wrong_password_fails_cleanly(tmp_path: Path) -> None:
    with NatsServer(tmp_path, "user") as server:
        async with Publisher(
            server.url, subject=SUBJECT, user="ccsa", password="wrong", reconnect_wait=0.1
        ) as pub:
            with pytest.raises(PublishError, match=r"(?i)authorization") as info:
                await pub.wait_connected(3)
            assert "wrong" not in str(info.value)
            with pytest.raises(PublishError, match="not connected"):
                await pub.publish(b"x")


def test_credential_refusal_is_not_hidden_by_the_reset_after_it() -> None:
    """nats-server answers bad credentials with -ERR 'Authorization Violation' and closes; the
    next attempt may only see a reset. The error keeps the refusal until a connect succeeds
    (the test above met the reset alone on a loaded machine)."""
    import nats.errors

    pub = Publisher("nats://127.0.0.1:4222", subject=SUBJECT, user="ccsa", password="wrong")
    pub._note_error(nats.errors.AuthorizationError())
    pub._note_error(ConnectionResetError(104, "Connection reset by peer"))
    text = pub._not_connected("not connected after 3 s")
    assert "ConnectionResetError" in text
    assert "refused the credentials" in text
    assert "Authorization" in text
    assert "wrong" not in text


async def test_starts_while_server_down_and_connects_later(tmp_path: Path) -> None:
    server = NatsServer(tmp_path, "plain")
    async with publisher_for(server) as pub:
        # The daemon must start with NATS down; a publish fails loudly instead of buffering.
        with pytest.raises(PublishError, match="not connected") as info:
            await pub.publish(b"lost?")
        assert "kept for retry" in str(info.value)
        with pytest.raises(PublishError, match="not connected after"):
            await pub.wait_connected(0.2)
        await trio.to_thread.run_sync(server.start)
        try:
            with Subscriber(server.url) as sub:
                await pub.wait_connected(10)
                await pub.publish(b"retried")
                assert await sub.wait_for(1) == [b"retried"]
        finally:
            server.stop()


async def test_publish_after_stop_fails(tmp_path: Path) -> None:
    with NatsServer(tmp_path) as server:
        pub = publisher_for(server)
        async with pub:
            await pub.wait_connected(10)
            await pub.publish_many([b"a", b"b"])
        with pytest.raises(PublishError, match="not running"):
            await pub.publish(b"c")
        # Clean shutdown: the NATS thread is gone.
        assert not [t for t in threading.enumerate() if t.name == "ccsa-nats"]


async def _jetstream_witness(server: NatsServer) -> list[bytes]:
    """All messages the server's stream holds (run in a thread with its own asyncio loop)."""

    async def read() -> list[bytes]:
        import nats

        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            info = await js.stream_info("EVENTS")
            out = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg("EVENTS", seq)
                out.append(bytes(msg.data or b""))
            return out
        finally:
            await nc.close()

    return await trio.to_thread.run_sync(lambda: asyncio.run(read()))


async def test_server_restart_mid_run_loses_nothing(tmp_path: Path) -> None:
    server = NatsServer(tmp_path, "plain", jetstream=True)
    server.start()
    try:

        async def make_stream() -> None:
            import nats
            from nats.js.api import StorageType

            nc = await nats.connect(server.url)
            await nc.jetstream().add_stream(
                name="EVENTS", subjects=[SUBJECT], storage=StorageType.FILE
            )
            await nc.close()

        await trio.to_thread.run_sync(lambda: asyncio.run(make_stream()))
        total = 120
        lines = [encode_stop(stop_body(i), hostname="ctl", partition="p") for i in range(total)]
        confirmed: list[int] = []
        failures = 0

        async def producer() -> None:
            # The caller's part of the contract: keep the event and retry on PublishError.
            nonlocal failures
            async with publisher_for(server, connect_timeout=1.0) as pub:
                await pub.wait_connected(10)
                for index, line in enumerate(lines):
                    while True:
                        try:
                            await pub.publish(line, timeout=2.0)
                        except PublishError:
                            failures += 1
                            await trio.sleep(0.05)
                        else:
                            confirmed.append(index)
                            break
                    await trio.sleep(0.002)

        async def restarter() -> None:
            while len(confirmed) < total // 3:
                await trio.sleep(0.005)
            await trio.to_thread.run_sync(server.stop)
            await trio.sleep(0.5)
            await trio.to_thread.run_sync(server.start)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(restarter)
                nursery.start_soon(producer)
        assert confirmed == list(range(total))
        assert failures > 0, "the outage was not noticed"
        stored = await _jetstream_witness(server)
        # At least once: every event is on the server, in order of first arrival.
        assert set(stored) == set(lines)
        first_seen = list(dict.fromkeys(stored))
        assert first_seen == lines
    finally:
        server.stop()


async def test_standin_consumer_creates_and_stops_jobs(tmp_path: Path) -> None:
    with NatsServer(tmp_path, "user") as server:
        backend = Backend({"fritz": minimal("fritz")}, clock=lambda: 1_700_000_100.0)
        consumer = NatsConsumer(
            backend, server.url, SUBJECT, user=server.user, password=server.password
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(consumer.run)
            async with publisher_for(server) as pub:
                await pub.wait_connected(10)
                await pub.publish(encode_start(start_body(4242), hostname="ctl"))
                await consumer.wait_for(1)
                assert [j.state for j in backend.find("fritz", 4242)] == ["running"]
                await pub.publish(encode_stop(stop_body(4242), hostname="ctl", partition=""))
                # The empty-tag trap: cc-backend drops the whole message, nothing happens.
                await pub.publish(
                    b"job,function=start_job,hostname= "
                    + encode_start(start_body(77), hostname="x").split(b" ", 1)[1]
                )
                # Same start again: the duplicate rule of the REST path applies over NATS.
                await pub.publish(encode_start(start_body(4242), hostname="ctl"))
                outcomes = await consumer.wait_for(4)
            nursery.cancel_scope.cancel()
        assert [(o.function, o.status) for o in outcomes] == [
            ("start_job", 201),
            ("stop_job", 200),
            ("parse_error", 0),
            ("start_job", 422),
        ]
        assert "expected tag value" in outcomes[2].message
        assert "already exists" in outcomes[3].message
        (job,) = backend.find("fritz", 4242)
        assert job.state == "completed"
        assert backend.find("fritz", 77) == []
