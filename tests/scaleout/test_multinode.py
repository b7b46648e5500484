"""Two LiveKit nodes on one Redis (LiveKit's own multi-node mode), for real: native processes.

The cluster (tests/scaleout/cluster.py) runs both nodes with the Helm chart's rendered
LiveKit configuration. Which node hosts a room is read where LiveKit keeps it: Redis'
`room_node_map` (room -> node id); each node's id comes from its own log.

What LiveKit guarantees, and what it does not (livekit-server v1.13.5):
- a room lives on one node; a participant whose signalling reaches another node is relayed
  to it over Redis, and its media goes to the hosting node's own address;
- a node is dead for placement once its stats in Redis are 5 s old (refreshed every 2 s):
  new rooms, and a room whose node is dead, are then placed on a live node;
- the rooms of a node that dies are lost with it: no media or signalling fail-over. Their
  participants' SDKs report the loss and reconnect (or the caller rejoins), which creates the
  room afresh on a live node, dispatching the agent again by the token; rooms on other nodes
  are untouched. Whether our agent is heard again there is the appliance's part (an expected
  failure today: the job left on the dead node keeps its room claim).
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import redis
import yaml
from livekit import api, rtc

from tests.e2e.caller import Caller, request_token
from tests.e2e.calls import answered_once_more, greeted
from tests.helm.render import livekit_config
from tests.e2e.harness import worker_info
from tests.scaleout.cluster import AGENT_START_TIMEOUT_S, Cluster, running_cluster
from tests.standins.gemini_live import GeminiLiveStandin

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

#: LiveKit's `room_node_map` hash in Redis (pkg/routing/redisrouter.go, NodeRoomKey).
ROOM_NODE_MAP = "room_node_map"
#: Placement is random: this many rooms land on one node only with probability 2 / 2**20.
MAX_ROOMS = 20
#: How long the front door may answer 503 (no node it trusts) after a node comes back:
#: it skips a node that refused connections for `fail_duration` (10 s, tests/scaleout/Caddyfile).
FRONT_DOOR_TRUST_S = 20
#: A job process starting on a busy machine (imports, model connect) before the greeting (s).
JOB_START_TIMEOUT_S = 180
#: How long the agent of a call whose node died may take to be heard again (s).
AGENT_BACK_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def cluster(standin: GeminiLiveStandin, tmp_path_factory: pytest.TempPathFactory, log_dir: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster-state"), log_dir / "scaleout",
                         standin.base_url, str(standin.ca_file)) as processes:
        yield processes


def room_node(cluster: Cluster, room: str) -> str | None:
    """'a' or 'b': which node hosts `room` now (None: no node has it)."""
    client = redis.Redis.from_url(cluster.env["REDIS_URL"], decode_responses=True)
    try:
        node_id = client.hget(ROOM_NODE_MAP, room)
    finally:
        client.close()
    names = {cluster.node_id(name): name for name in cluster.nodes}
    return names.get(node_id) if node_id else None


def server_api(cluster: Cluster, url: str | None = None) -> api.LiveKitAPI:
    """LiveKit's server API through the front door (or one node's `url`)."""
    env = cluster.env
    return api.LiveKitAPI((url or env["LIVEKIT_URL"]).replace("ws://", "http://"),
                          env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"])


async def room_on(cluster: Cluster, node: str, token: dict[str, Any]) -> None:
    """Create the token's room on `node`, with the token's agent dispatch.

    Placement is random and a room is placed when it is created, so the room is created
    empty through the front door until it lands on `node` (others are deleted at once, before
    anyone joins). A token's own dispatch applies only to a room its join creates, so the
    token's room configuration (agent, metadata, timeouts) is applied here instead.
    """
    config = jwt.decode(token["participant_token"], options={"verify_signature": False})["roomConfig"]
    lk = server_api(cluster)
    try:
        for _ in range(MAX_ROOMS):
            await lk.room.create_room(api.CreateRoomRequest(
                name=token["room_name"], empty_timeout=int(config.get("emptyTimeout", 60)),
                departure_timeout=int(config.get("departureTimeout", 20)),
                max_participants=int(config.get("maxParticipants", 3))))
            if room_node(cluster, token["room_name"]) == node:
                for agent in config["agents"]:
                    await lk.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(
                        room=token["room_name"], agent_name=agent["agentName"], metadata=agent.get("metadata", "")))
                return
            await lk.room.delete_room(api.DeleteRoomRequest(room=token["room_name"]))
    finally:
        await lk.aclose()
    raise AssertionError(f"the room did not land on node {node} in {MAX_ROOMS} tries")


async def call_on(cluster: Cluster, node: str, via: str | None = None, name: str = "Ada") -> Caller:
    """A joined caller whose room is hosted on `node`, its signalling through `via`'s URL (a
    node name) or the front door."""
    status, token = await asyncio.to_thread(request_token, cluster.token_url, {"participant_name": name})
    assert status == 201, token
    await room_on(cluster, node, token)
    if via is not None:
        token = {**token, "server_url": cluster.nodes[via].url}
    caller = Caller(cluster.token_url, name=name, token=token)
    await caller.__aenter__()
    assert room_node(cluster, caller.room.name) == node
    return caller


def active_jobs(cluster: Cluster) -> dict[str, int]:
    return {name: int(worker_info(w.ready_file).get("active_jobs", 0)) for name, w in cluster.workers.items()}


def connection_log(caller: Caller) -> list[tuple[float, str]]:
    """(monotonic time, event) for the caller's connection: reconnecting, reconnected, disconnected."""
    log: list[tuple[float, str]] = []
    for event in ("reconnecting", "reconnected", "disconnected"):
        caller.room.on(event, lambda *_, e=event: log.append((time.monotonic(), e)))
    return log


async def create_room(lk: api.LiveKitAPI, name: str) -> None:
    """Create room `name` through the front door, waiting while it trusts no node (503)."""
    deadline = time.monotonic() + FRONT_DOOR_TRUST_S
    while True:
        try:
            await lk.room.create_room(api.CreateRoomRequest(name=name, empty_timeout=5))
            return
        except api.TwirpError as exc:
            if exc.status != 503 or time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)


async def spread(cluster: Cluster, expect: set[str]) -> dict[str, int]:
    """Create empty rooms through the front door until each node in `expect` hosts one; rooms per node."""
    counts: dict[str, int] = {}
    lk = server_api(cluster)
    try:
        for _ in range(MAX_ROOMS):
            name = f"spread-{uuid.uuid4().hex[:8]}"
            await create_room(lk, name)
            node = room_node(cluster, name)
            counts[node or "none"] = counts.get(node or "none", 0) + 1
            await lk.room.delete_room(api.DeleteRoomRequest(room=name))
            if expect <= set(counts):
                break
    finally:
        await lk.aclose()
    return counts


async def test_rooms_land_on_both_nodes(cluster: Cluster) -> None:
    counts = await spread(cluster, {"a", "b"})
    assert {"a", "b"} <= set(counts), counts


async def test_a_caller_reaching_node_b_talks_to_the_agent_in_a_room_on_node_a(
    cluster: Cluster, standin: GeminiLiveStandin
) -> None:
    started = time.monotonic()
    caller = await call_on(cluster, "a", via="b")
    try:
        assert caller.token["server_url"] == cluster.nodes["b"].url
        await caller.wait_until(lambda: caller.agent_audio.audible_seconds() > 0.5, JOB_START_TIMEOUT_S, "the greeting")
        await greeted(caller, standin, started)
        await answered_once_more(caller, standin, started)
        assert room_node(cluster, caller.room.name) == "a", "relayed, not moved"
    finally:
        await caller.__aexit__(None, None, None)


async def test_a_worker_registered_on_node_b_serves_a_room_on_node_a(
    cluster: Cluster, standin: GeminiLiveStandin
) -> None:
    cluster.stop("agent-lb")  # only agent-b is registered now (an idle worker exits at once)
    try:
        started = time.monotonic()
        caller = await call_on(cluster, "a")
        try:
            await caller.wait_until(lambda: caller.agent_audio.audible_seconds() > 0.5, JOB_START_TIMEOUT_S, "the greeting")
            await greeted(caller, standin, started)
            # agent-b, registered on node B, is the only worker: it runs the job of the room on A
            # (maybe beside one an earlier test's call left behind, still ending).
            assert not cluster.workers["agent-lb"].ready_file.exists()
            assert int(worker_info(cluster.workers["agent-b"].ready_file).get("active_jobs", 0)) >= 1
            await answered_once_more(caller, standin, started)
        finally:
            await caller.__aexit__(None, None, None)
    finally:
        cluster.start(["agent-lb"], timeout_s=AGENT_START_TIMEOUT_S)


async def test_node_a_killed_mid_call_b_goes_on_and_a_caller_is_told_and_rejoins(
    cluster: Cluster, standin: GeminiLiveStandin
) -> None:
    started = time.monotonic()
    on_a = await call_on(cluster, "a", name="Ada")
    on_b = await call_on(cluster, "b", via="b", name="Bob")  # room and signalling on node B
    try:
        await on_a.wait_until(lambda: on_a.agent_audio.audible_seconds() > 0.5, JOB_START_TIMEOUT_S, "the greeting")
        await greeted(on_a, standin, started)
        await on_b.wait_until(lambda: on_b.agent_audio.audible_seconds() > 0.5, JOB_START_TIMEOUT_S, "the greeting")
        await greeted(on_b, standin, started)
        a_events, b_events = connection_log(on_a), connection_log(on_b)
        room_a = on_a.room.name
        killed_at = time.monotonic()
        cluster.signal("livekit-a", signal.SIGKILL)

        # Node B's call goes on, untouched: no reconnect, and the agent answers.
        await answered_once_more(on_b, standin, started)
        assert b_events == [], b_events
        assert on_b.room.connection_state == rtc.ConnectionState.CONN_CONNECTED

        # Node A's caller is told at once (its SDK reports the lost connection; the page shows
        # it), then the SDK's own reconnect either rejoins the room, now placed on node B, or
        # gives up (then the caller rejoins with the same token, as the page's Connect does).
        await on_a.wait_until(lambda: any(e in ("reconnected", "disconnected") for _, e in a_events), 90,
                              "the end of A's caller's reconnect attempt")
        told_s = a_events[0][0] - killed_at
        outcome = next(e for _, e in a_events if e in ("reconnected", "disconnected"))
        back_s = next(t for t, e in a_events if e == outcome) - killed_at
        caller = on_a
        if outcome == "disconnected":
            caller = Caller(cluster.token_url, name="Ada", token=on_a.token)
            await caller.__aenter__()
            back_s = time.monotonic() - killed_at
        assert room_node(cluster, room_a) == "b", "the room now lives on node B"
        assert a_events[0][1] in ("reconnecting", "disconnected"), a_events
        # The agent of the call: dispatched again for the room on B, it picks the call up.
        heard = await agent_heard_after(caller, killed_at + 1, AGENT_BACK_TIMEOUT_S)
        if caller is not on_a:
            await caller.__aexit__(None, None, None)
    finally:
        await on_a.__aexit__(None, None, None)
        await on_b.__aexit__(None, None, None)
        cluster.restart("livekit-a")  # killed above (or, on a failure before, stopped here)
    print(f"\nnode A SIGKILL: A's caller told after {told_s:.1f} s ({a_events[0][1]}); {outcome} (in the room "
          f"on node B) after {back_s:.1f} s; agent heard again: "
          + (f"{heard - killed_at:.1f} s after the kill" if heard else f"not within {AGENT_BACK_TIMEOUT_S} s"))
    if heard is None:
        # Known defect, not LiveKit's: the job stranded on the dead node keeps refreshing its
        # room claim while its SDK reconnects, so the new job leaves ("another agent already
        # serves this room") and the watchdog gives the call up (agent/voice_agent/watchdog.py).
        pytest.xfail("the agent does not come back after its room's node died: the stranded job keeps its room claim")


async def agent_heard_after(caller: Caller, after: float, timeout_s: float) -> float | None:
    """When agent audio was first heard after monotonic time `after`, waiting up to `timeout_s` s."""
    deadline = time.monotonic() + timeout_s
    while (heard := caller.agent_audio.first_audible_after(after)) is None and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return heard


async def test_node_a_back_new_rooms_spread_again(cluster: Cluster) -> None:
    counts = await spread(cluster, {"a", "b"})
    assert {"a", "b"} <= set(counts), counts


def test_both_nodes_run_the_charts_livekit_configuration(cluster: Cluster) -> None:
    rendered: dict[str, Any] = yaml.safe_load(cluster.env["LIVEKIT_CONFIG"])
    shipped = yaml.safe_load(livekit_config())
    # The same file but for where Redis and the token server are.
    for key in ("redis", "webhook"):
        rendered.pop(key), shipped.pop(key)
    assert rendered == shipped
