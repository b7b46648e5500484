"""Call records: the agent writes them to a real Redis, the token server's reader reads them back."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis as sync_redis
from livekit import api

from token_server.records import list_sessions, load_session
from voice_agent import records

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")


class RedisServer:
    """redis-server with append-only persistence in a temporary directory; restartable."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory),
             "--appendonly", "yes", "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        client = sync_redis.Redis(port=self.port)
        for _ in range(100):
            try:
                client.ping()
                return
            except sync_redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture()
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def reader(server: RedisServer, decode: bool = True) -> sync_redis.Redis:
    return sync_redis.Redis(port=server.port, decode_responses=decode)


async def test_a_call_is_written_as_it_goes_and_read_back(redis_server: RedisServer) -> None:
    client = records.connect(redis_server.url)
    recorder = records.CallRecorder(client, "room-1", "job-a")
    recorder.start(participant_identity="user-1", participant_name="Ada", metadata="{}")
    recorder.event("turn", {"role": "assistant", "text": "Hello! How can I help?"})
    recorder.event("turn", {"role": "user", "text": "What time is it in Paris?"})
    recorder.event("tool", {"call_id": "c1", "name": "get_current_time", "arguments": '{"timezone": "Europe/Paris"}',
                            "output": "It is 13:00", "is_error": False})
    recorder.event("usage", {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15})
    assert await recorder.flush()

    # Readable while the call goes on (not only at the end).
    live = load_session(reader(redis_server), "room-1")
    assert live is not None and live["open"] and live["ended_at"] is None
    assert "video_frames" not in live  # no video shown (yet)
    assert [t["text"] for t in live["turns"]] == ["Hello! How can I help?", "What time is it in Paris?"]

    recorder.event("usage", {"input_tokens": 20, "input_image_tokens": 4, "output_tokens": 7, "total_tokens": 27})
    recorder.count_video_frame()
    recorder.count_video_frame()
    recorder.end("participant left")
    await recorder.aclose()

    for decode in (True, False):
        session = load_session(reader(redis_server, decode), "room-1")
        assert session is not None
        assert (session["participant_identity"], session["participant_name"]) == ("user-1", "Ada")
        assert session["end_reason"] == "participant left" and not session["open"]
        assert session["ended_at"] >= session["started_at"]
        assert [t["role"] for t in session["turns"]] == ["assistant", "user"]
        assert session["tool_calls"][0]["name"] == "get_current_time"
        assert session["tool_calls"][0]["output"] == "It is 13:00"
        assert session["usage"] == {"input_tokens": 30, "input_image_tokens": 4, "output_tokens": 12,
                                    "total_tokens": 42, "responses": 2}
        assert session["video_frames"] == 2
        assert [e["event"] for e in session["events"]] == ["job_started", "call_ended"]
    assert load_session(reader(redis_server), "no-such-room") is None
    await client.aclose()


async def test_sessions_are_listed_newest_first(redis_server: RedisServer) -> None:
    client = records.connect(redis_server.url)
    for room in ("room-a", "room-b", "room-c"):
        recorder = records.CallRecorder(client, room, f"job-{room}")
        recorder.start(participant_identity=None, participant_name=None, metadata="")
        await recorder.aclose()
        await asyncio.sleep(0.01)
    listed = list_sessions(reader(redis_server))
    assert [s["room"] for s in listed] == ["room-c", "room-b", "room-a"]
    assert all(s["open"] for s in listed)
    older = list_sessions(reader(redis_server), limit=1, before=listed[0]["started_at"])
    assert [s["room"] for s in older] == ["room-b"]
    await client.aclose()


async def test_a_redis_restart_loses_nothing(redis_server: RedisServer) -> None:
    client = records.connect(redis_server.url)
    recorder = records.CallRecorder(client, "room-r", "job-r")
    recorder.start(participant_identity="user-r", participant_name=None, metadata="")
    recorder.event("turn", {"role": "user", "text": "before the restart"})
    assert await recorder.flush()

    redis_server.stop()
    recorder.event("turn", {"role": "assistant", "text": "while Redis is away"})
    assert not await recorder.flush(timeout=1.0), "held in memory while Redis is away"
    redis_server.start()  # same directory: the append-only file is replayed
    assert await recorder.flush(timeout=15.0)
    recorder.event("turn", {"role": "user", "text": "after the restart"})
    await recorder.aclose()

    session = load_session(reader(redis_server), "room-r")
    assert session is not None
    assert [t["text"] for t in session["turns"]] == ["before the restart", "while Redis is away", "after the restart"]
    assert [t.text for t in await records.CallRecorder(client, "room-r", "job-2").load_turns()] == [
        "before the restart", "while Redis is away", "after the restart"
    ]
    await client.aclose()


async def test_one_job_holds_a_room(redis_server: RedisServer) -> None:
    client = records.connect(redis_server.url)
    first = records.CallRecorder(client, "room-x", "job-1")
    second = records.CallRecorder(client, "room-x", "job-2")
    assert await first.claim(ttl_ms=500) is True
    assert await second.claim(ttl_ms=500) is False
    assert await first.refresh(ttl_ms=500)
    assert not await second.refresh(ttl_ms=500)
    await second.release()  # not the holder: no effect
    assert await second.claim(ttl_ms=500) is False
    await asyncio.sleep(0.7)  # the holder stopped refreshing (crashed): the key expires
    assert await second.claim(ttl_ms=500) is True
    await second.release()
    assert await first.claim(ttl_ms=500) is True
    await client.aclose()


async def test_a_claim_that_expired_while_redis_was_away_is_taken_again(redis_server: RedisServer) -> None:
    client = records.connect(redis_server.url)
    holder = records.CallRecorder(client, "room-y", "job-1")
    other = records.CallRecorder(client, "room-y", "job-2")
    assert await holder.claim(ttl_ms=400) is True
    redis_server.stop()
    assert await holder.refresh(ttl_ms=400), "Redis away: the holder keeps serving"
    await asyncio.sleep(0.6)  # the claim expires meanwhile
    redis_server.start()
    assert not await client.exists(records.agent_key("room-y"))
    assert await holder.refresh(ttl_ms=400), "nobody holds the room: the holder takes it again"
    assert await other.claim(ttl_ms=400) is False
    assert not await other.refresh(ttl_ms=400), "another job's room is not taken"
    assert await client.get(records.agent_key("room-y")) == "job-1"
    await client.aclose()


class FakeLiveKit:
    """The part of `livekit.api.LiveKitAPI` the watchdog uses: a caller and a (dead) agent in every room."""

    def __init__(self, *_args: object) -> None:
        self.dispatched: list[tuple[float, str]] = []
        self.room = SimpleNamespace(list_participants=self._list, remove_participant=self._remove)
        self.agent_dispatch = SimpleNamespace(create_dispatch=self._dispatch)

    async def _list(self, _request: object) -> api.ListParticipantsResponse:
        return api.ListParticipantsResponse(participants=[
            api.ParticipantInfo(identity="user-1", kind=api.ParticipantInfo.Kind.STANDARD),
            api.ParticipantInfo(identity="agent-1", kind=api.ParticipantInfo.Kind.AGENT),
        ])

    async def _remove(self, _request: object) -> None:
        return None

    async def _dispatch(self, request: api.CreateAgentDispatchRequest) -> None:
        self.dispatched.append((time.monotonic(), request.room))

    async def aclose(self) -> None:
        return None


async def test_the_watchdog_holds_off_after_redis_was_away(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim that expired during a Redis outage is not taken for a dead agent: the watchdog
    waits `hold_off_s` of reachable Redis (its holder takes the claim again meanwhile)."""
    from voice_agent import watchdog

    fake = FakeLiveKit()
    monkeypatch.setattr(watchdog.api, "LiveKitAPI", lambda *args: fake)
    client = records.connect(redis_server.url)
    await client.sadd(records.OPEN_CALLS, "room-w")
    await client.hset(records.call_key("room-w"), mapping={"room": "room-w", "metadata": "{}"})
    await client.set(records.agent_key("room-w"), "job-1", px=800)
    dog = watchdog.CallWatchdog(redis_url=redis_server.url, livekit_url="ws://unused", api_key="k", api_secret="s",
                                agent_name="voice-agent", interval_s=0.1, hold_off_s=1.5)
    task = asyncio.create_task(dog.run())
    try:
        await asyncio.sleep(0.3)
        redis_server.stop()
        await asyncio.sleep(1.0)  # the claim (800 ms) expires while Redis is away
        redis_server.start()
        back_at = time.monotonic()
        await client.aclose()
        client = records.connect(redis_server.url)  # the old connection died with the server
        await asyncio.sleep(0.5)
        assert not await client.exists(records.agent_key("room-w"))
        await client.set(records.agent_key("room-w"), "job-1", px=800)  # the holder's next refresh
        await _keep(client, records.agent_key("room-w"), seconds=2.5)
        assert fake.dispatched == [], "a live agent was taken for a dead one"
        # The holder is gone for good (crashed): the call is dispatched again without a hold-off.
        await client.delete(records.agent_key("room-w"))
        gone_at = time.monotonic()
        for _ in range(50):
            if fake.dispatched:
                break
            await asyncio.sleep(0.05)
        assert [room for _, room in fake.dispatched] == ["room-w"]
        assert fake.dispatched[0][0] - gone_at < 0.5
        assert fake.dispatched[0][0] - back_at > 3.0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()


async def _keep(client: records.aioredis.Redis, key: str, seconds: float) -> None:
    """Refresh a claim every 0.25 s for `seconds`, as its holder does."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await client.pexpire(key, 800)
        await asyncio.sleep(0.25)
