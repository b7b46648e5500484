"""Call records: the agent writes them to a real Redis, the token server's reader reads them back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis as sync_redis
from livekit import api
from livekit.agents import utils
from voice_calls import responses
from voice_calls.records import CALLS, OPEN_CALLS, agent_key, call_key, events_key, list_calls, load_call
from tests.redis_server import RedisServer, running_redis
from voice_agent import claims, records

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")


@pytest.fixture()
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path, persist=True) as server:
        yield server


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
    live = load_call(reader(redis_server), "room-1")
    assert live is not None and live["open"] and live["ended_at"] is None
    assert "video_frames" not in live  # no video shown (yet)
    assert [t["text"] for t in live["turns"]] == ["Hello! How can I help?", "What time is it in Paris?"]

    recorder.event("usage", {"input_tokens": 20, "input_image_tokens": 4, "output_tokens": 7, "total_tokens": 27})
    recorder.count_video_frame()
    recorder.count_video_frame()
    recorder.end("participant left")
    await recorder.aclose()

    for decode in (True, False):
        record = load_call(reader(redis_server, decode), "room-1")
        assert record is not None
        assert (record["participant_identity"], record["participant_name"]) == ("user-1", "Ada")
        assert record["end_reason"] == "participant left" and not record["open"]
        assert record["ended_at"] >= record["started_at"]
        assert [t["role"] for t in record["turns"]] == ["assistant", "user"]
        assert record["tool_calls"][0]["name"] == "get_current_time"
        assert record["tool_calls"][0]["output"] == "It is 13:00"
        assert record["usage"] == {"input_tokens": 30, "input_image_tokens": 4, "output_tokens": 12,
                                    "total_tokens": 42, "responses": 2}
        assert record["video_frames"] == 2
        assert [e["event"] for e in record["events"]] == ["job_started", "call_ended"]
    assert load_call(reader(redis_server), "no-such-room") is None
    await client.aclose()


async def test_response_times_and_the_agent_state_are_recorded(redis_server: RedisServer) -> None:
    client = records.connect(redis_server.url)
    recorder = records.CallRecorder(client, "room-t", "job-t")
    recorder.start(participant_identity="user-1", participant_name="Ada", metadata="{}")
    session = utils.EventEmitter()
    records.record_session(session, recorder)
    session.emit("agent_state_changed", SimpleNamespace(new_state="thinking"))
    recorder.event("turn", {"role": "user", "text": "What time is it?"})
    recorder.record_response(0.8125)  # the reply starts ...
    session.emit("agent_state_changed", SimpleNamespace(new_state="speaking"))
    recorder.event("turn", {"role": "assistant", "text": "It is noon."})  # ... and ends
    assert await recorder.flush()

    call = load_call(reader(redis_server), "room-t")
    assert call is not None and call["agent_state"] == "speaking"
    assert [t.get("response_s") for t in call["turns"]] == [None, 0.812]
    assert "response" not in [e.get("event") for e in call["events"]]
    since = time.time() - 60
    assert [(r["room"], r["seconds"]) for r in responses.recent(reader(redis_server), since)] == [("room-t", 0.812)]
    assert responses.recent(reader(redis_server), time.time() + 60) == []

    recorder.end("participant left")
    await recorder.aclose()
    assert "agent_state" not in list_calls(reader(redis_server))[0], "only live calls have a state"
    await client.aclose()


async def test_a_caller_s_late_transcript_is_read_back_before_the_reply_it_prompted(
    redis_server: RedisServer
) -> None:
    """Gemini may send the caller's final transcript after its reply; livekit-agents dates the
    caller's message at the turn's start, and the record is read in that order."""
    client = records.connect(redis_server.url)
    recorder = records.CallRecorder(client, "room-late", "job-l")
    recorder.start(participant_identity="user-1", participant_name="Ada", metadata="{}")
    turn_began = time.time()
    recorder.event("turn", {"role": "assistant", "text": "Hello!", "started_at": turn_began - 5})
    recorder.event("turn", {"role": "assistant", "text": "It is noon.", "started_at": turn_began + 1.5})
    recorder.event("turn", {"role": "user", "text": "What time is it?", "started_at": turn_began})  # arrives last
    assert await recorder.flush()

    call = load_call(reader(redis_server), "room-late")
    assert call is not None
    assert [t["text"] for t in call["turns"]] == ["Hello!", "What time is it?", "It is noon."]
    assert [t.text for t in await recorder.load_turns()] == ["Hello!", "What time is it?", "It is noon."]
    await recorder.aclose()
    await client.aclose()


async def test_calls_are_listed_newest_first(redis_server: RedisServer) -> None:
    client = records.connect(redis_server.url)
    for room in ("room-a", "room-b", "room-c"):
        recorder = records.CallRecorder(client, room, f"job-{room}")
        recorder.start(participant_identity=None, participant_name=None, metadata="")
        await recorder.aclose()
        await asyncio.sleep(0.01)
    listed = list_calls(reader(redis_server))
    assert [s["room"] for s in listed] == ["room-c", "room-b", "room-a"]
    assert all(s["open"] for s in listed)
    older = list_calls(reader(redis_server), limit=1, before=listed[0]["started_at"])
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

    record = load_call(reader(redis_server), "room-r")
    assert record is not None
    assert [t["text"] for t in record["turns"]] == ["before the restart", "while Redis is away", "after the restart"]
    assert [t.text for t in await records.CallRecorder(client, "room-r", "job-2").load_turns()] == [
        "before the restart", "while Redis is away", "after the restart"
    ]
    await client.aclose()


async def test_writes_redis_refuses_for_a_while_are_retried_not_dropped(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """OOM (maxmemory reached), READONLY (a replica) and MISCONF refusals end: the events wait."""
    admin = reader(redis_server)
    client = records.connect(redis_server.url)
    recorder = records.CallRecorder(client, "room-o", "job-o")
    recorder.start(participant_identity="ada", participant_name="Ada", metadata="{}")
    assert await recorder.flush()
    failures_before = records.WRITE_FAILURES.labels(error="OOM")._value.get()
    limit = admin.config_get("maxmemory")["maxmemory"]
    admin.config_set("maxmemory", "1")  # noeviction: every write is refused with OOM
    recorder.event("turn", {"role": "user", "text": "while memory is full"})
    assert not await recorder.flush(timeout=1.5), "refused writes wait"
    admin.config_set("maxmemory", limit)
    assert await recorder.flush(timeout=10)
    record = load_call(admin, "room-o")
    assert [t["text"] for t in record["turns"]] == ["while memory is full"]
    assert records.WRITE_FAILURES.labels(error="OOM")._value.get() > failures_before
    assert any("call records cannot be written" in r.getMessage() for r in caplog.records)
    await recorder.aclose()
    await client.aclose()


async def test_records_expire_after_the_retention_and_streams_are_capped(redis_server: RedisServer) -> None:
    admin = reader(redis_server)
    client = records.connect(redis_server.url)
    old = records.CallRecorder(client, "room-old", "job-1", retention=records.Retention(days=1, max_events=100))
    old.start(participant_identity=None, participant_name=None, metadata="{}")
    for n in range(1000):
        old.event("usage", {"n": n})
    assert await old.flush(timeout=30)
    assert 100 <= admin.xlen(events_key("room-old")) < 300, "capped (approximately)"
    assert admin.ttl(call_key("room-old")) > 86_400, "an open call outlives the retention"
    old.end("caller left")
    assert await old.flush()
    assert 86_000 < admin.ttl(call_key("room-old")) <= 86_400
    assert 86_000 < admin.ttl(events_key("room-old")) <= 86_400
    admin.zadd(CALLS, {"room-ancient": time.time() - 2 * 86_400})
    new = records.CallRecorder(client, "room-new", "job-2", retention=records.Retention(days=1))
    new.start(participant_identity=None, participant_name=None, metadata="{}")
    assert await new.flush()
    assert admin.zscore(CALLS, "room-ancient") is None, "the listing forgets expired calls"
    assert admin.zscore(CALLS, "room-old") is not None
    await old.aclose()
    await new.aclose()
    await client.aclose()


async def test_one_job_holds_a_room(redis_server: RedisServer) -> None:
    client = records.connect(redis_server.url)
    first = claims.RoomClaim(client, "room-x", "job-1")
    second = claims.RoomClaim(client, "room-x", "job-2")
    assert await first.take(ttl_ms=500) is True
    assert await second.take(ttl_ms=500) is False
    assert await first.refresh(ttl_ms=500)
    await second.release()  # not the holder: no effect
    assert await second.take(ttl_ms=500) is False
    await asyncio.sleep(0.7)  # the holder stopped refreshing (crashed): the key expires
    assert await second.take(ttl_ms=500) is True
    assert not await first.refresh(ttl_ms=500), "another job holds it now"
    await second.release()
    assert await client.get(agent_key("room-x")) is None
    await client.aclose()


async def test_a_claim_that_expired_while_redis_was_away_is_taken_again(redis_server: RedisServer) -> None:
    client = records.connect(redis_server.url)
    holder = claims.RoomClaim(client, "room-y", "job-1")
    other = claims.RoomClaim(client, "room-y", "job-2")
    assert await holder.take(ttl_ms=400) is True
    redis_server.stop()
    assert await holder.refresh(ttl_ms=400), "Redis away: the holder keeps serving"
    await asyncio.sleep(0.6)  # the claim expires meanwhile
    redis_server.start()
    assert not await client.exists(agent_key("room-y"))
    assert await holder.refresh(ttl_ms=400), "nobody holds the room: the holder takes it again"
    assert await other.take(ttl_ms=400) is False
    assert await client.get(agent_key("room-y")) == "0:job-1"
    await client.aclose()


async def test_a_job_whose_call_was_handed_over_cannot_take_the_room_back(redis_server: RedisServer) -> None:
    """Fencing: a stalled job wakes up after the watchdog gave its call to another job."""
    client = records.connect(redis_server.url)
    stalled = claims.RoomClaim(client, "room-f", "job-1")
    assert await stalled.take(ttl_ms=300) is True
    await asyncio.sleep(0.4)  # its loop stalls: the claim lapses
    assert await claims.hand_over(client, "room-f", None) == 1
    assert not await stalled.refresh(ttl_ms=300), "the generation moved: the stalled job must leave"
    successor = claims.RoomClaim(client, "room-f", "job-2")
    assert await successor.take(ttl_ms=300) is True and successor.generation == 1
    assert not await stalled.refresh(ttl_ms=300)
    assert await claims.hand_over(client, "room-f", "0:job-1") is None, "a live successor is not fenced out"
    await client.aclose()


async def test_live_jobs_are_the_ones_with_a_connection(redis_server: RedisServer) -> None:
    job = records.connect(redis_server.url, client_name=claims.job_client_name("AJ_live"))
    watcher = records.connect(redis_server.url)
    await job.ping()
    assert await claims.live_jobs(watcher) == {"AJ_live"}
    await job.aclose()  # the process died: the kernel closed its sockets
    for _ in range(50):
        if not await claims.live_jobs(watcher):
            break
        await asyncio.sleep(0.02)
    assert await claims.live_jobs(watcher) == set()
    await watcher.aclose()


class FakeLiveKit:
    """The part of `livekit.api.LiveKitAPI` the watchdog uses: a caller and a (dead) agent in every
    room, dispatches that a worker takes at once, notices recorded."""

    def __init__(self, *_args: object) -> None:
        self.dispatched: list[tuple[float, str]] = []
        self.notices: list[tuple[str, bytes]] = []
        self.room = SimpleNamespace(list_participants=self._list, remove_participant=self._remove,
                                    send_data=self._send, update_room_metadata=self._noop, delete_room=self._noop)
        self.agent_dispatch = SimpleNamespace(create_dispatch=self._dispatch, list_dispatch=self._list_dispatch)

    async def _list(self, _request: object) -> api.ListParticipantsResponse:
        return api.ListParticipantsResponse(participants=[
            api.ParticipantInfo(identity="user-1", kind=api.ParticipantInfo.Kind.STANDARD),
            api.ParticipantInfo(identity="agent-1", kind=api.ParticipantInfo.Kind.AGENT),
        ])

    async def _remove(self, _request: object) -> None:
        return None

    async def _send(self, request: api.SendDataRequest) -> None:
        self.notices.append((request.room, request.data))

    async def _noop(self, _request: object) -> None:
        return None

    async def _dispatch(self, request: api.CreateAgentDispatchRequest) -> api.AgentDispatch:
        self.dispatched.append((time.monotonic(), request.room))
        return api.AgentDispatch(id=f"AD_{len(self.dispatched)}", room=request.room)

    async def _list_dispatch(self, room_name: str) -> list[api.AgentDispatch]:
        return [api.AgentDispatch(id=f"AD_{i + 1}", room=room_name,
                                  state=api.AgentDispatchState(jobs=[api.Job(id=f"AJ_{i}")]))
                for i in range(len(self.dispatched))]

    async def aclose(self) -> None:
        return None


async def _open_call(client: records.aioredis.Redis, room: str) -> None:
    await client.sadd(OPEN_CALLS, room)
    await client.hset(call_key(room), mapping={"room": room, "metadata": "{}"})


async def _wait_dispatched(fake: FakeLiveKit, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not fake.dispatched and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def _watchdog(monkeypatch: pytest.MonkeyPatch, url: str, **times: float) -> tuple[FakeLiveKit, object]:
    from voice_agent import watchdog

    fake = FakeLiveKit()
    monkeypatch.setattr(watchdog.api, "LiveKitAPI", lambda *args: fake)
    dog = watchdog.CallWatchdog(redis_url=url, livekit_url="ws://unused", api_key="k", api_secret="s",
                                agent_name="voice-agent", **times)
    return fake, dog


@dataclass
class Watched:
    """One open call whose room job-1 holds, and the LiveKit API the watchdog over it calls."""

    fake: FakeLiveKit
    client: records.aioredis.Redis
    job: records.aioredis.Redis
    claim: claims.RoomClaim


@contextlib.asynccontextmanager
async def watchdog_over(
    monkeypatch: pytest.MonkeyPatch, server: RedisServer, room: str, ttl_ms: int, **times: float
) -> AsyncIterator[Watched]:
    """An open call in `room`, its claim taken by job-1 for `ttl_ms`, and a watchdog with
    `times` running over it for the block; everything closed afterwards."""
    fake, dog = _watchdog(monkeypatch, server.url, **times)
    client = records.connect(server.url)
    job = records.connect(server.url, client_name=claims.job_client_name("job-1"))
    await _open_call(client, room)
    watched = Watched(fake, client, job, claims.RoomClaim(job, room, "job-1"))
    assert await watched.claim.take(ttl_ms=ttl_ms)
    task = asyncio.create_task(dog.run())  # type: ignore[attr-defined]
    try:
        yield watched
    finally:
        while not task.done():  # a cancel can be lost inside a client's timeout (Python 3.11)
            task.cancel()
            await asyncio.wait([task], timeout=1.0)
        await watched.job.aclose()
        await watched.client.aclose()


async def test_a_job_whose_process_died_is_replaced_before_its_claim_expires(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with watchdog_over(monkeypatch, redis_server, "room-d", 10_000,
                             interval_s=0.1, claim_ttl_s=10.0, confirm_s=0.3) as w:
        await asyncio.sleep(0.8)
        assert w.fake.dispatched == [], "a live job is left alone"
        await w.job.aclose()  # the job's process dies: its connection closes, its claim stays
        died_at = time.monotonic()
        await _wait_dispatched(w.fake, 3.0)
        assert [room for _, room in w.fake.dispatched] == ["room-d"]
        assert w.fake.dispatched[0][0] - died_at < 1.5, "handed over well before the 10 s claim expired"
        assert await w.client.hget(call_key("room-d"), claims.GENERATION_FIELD) == "1"
        for _ in range(100):  # the caller is told right after the dispatch
            if w.fake.notices:
                break
            await asyncio.sleep(0.02)
        assert json.loads(w.fake.notices[0][1])["code"] == "agent_reconnecting"


async def test_a_stalled_job_keeps_its_call_until_its_claim_stays_missing_for_a_ttl(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with watchdog_over(monkeypatch, redis_server, "room-s", 2000,
                             interval_s=0.1, claim_ttl_s=2.0, confirm_s=0.3) as w:
        await asyncio.sleep(3.0)  # its event loop stalls 1.5 TTLs: the claim lapses, the job lives
        assert w.fake.dispatched == [], "a stalled but live job was taken for dead"
        assert await w.claim.refresh(ttl_ms=2000), "it wakes up and takes its claim again"
        await asyncio.sleep(1.0)
        assert w.fake.dispatched == []
        await asyncio.sleep(4.0)  # now stuck for good: missing for over a TTL more
        assert [room for _, room in w.fake.dispatched] == ["room-s"]
        assert not await w.claim.refresh(ttl_ms=2000), "fenced out"


async def test_the_watchdog_holds_off_after_redis_was_away(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim that expired during a Redis outage is not taken for a dead agent: the watchdog
    waits `hold_off_s` of reachable Redis (its holder takes the claim again meanwhile)."""
    async with watchdog_over(monkeypatch, redis_server, "room-w", 800,
                             interval_s=0.1, claim_ttl_s=0.8, confirm_s=0.3, hold_off_s=1.5) as w:
        await asyncio.sleep(0.3)
        redis_server.stop()
        await asyncio.sleep(1.0)  # the claim (800 ms) expires while Redis is away
        redis_server.start()
        back_at = time.monotonic()
        await w.client.aclose()
        w.client = records.connect(redis_server.url)  # the old connection died with the server
        await asyncio.sleep(0.5)
        assert not await w.client.exists(agent_key("room-w"))
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:  # the holder reconnects and refreshes, as a job does
            assert await w.claim.refresh(ttl_ms=800)
            await asyncio.sleep(0.25)
        assert w.fake.dispatched == [], "a live agent was taken for a dead one"
        # The holder is gone for good (crashed): the call is dispatched again at once.
        await w.job.aclose()
        gone_at = time.monotonic()
        await _wait_dispatched(w.fake, 2.0)
        assert [room for _, room in w.fake.dispatched] == ["room-w"]
        assert w.fake.dispatched[0][0] - gone_at < 1.0
        assert w.fake.dispatched[0][0] - back_at > 3.0
