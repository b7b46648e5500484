"""The keys a call's log lines carry in every service, so one grep follows a call.

The token server (structlog), the agent worker (livekit-agents' JSON lines in production
mode; `JobContext.log_context_fields` adds the call's keys to every line of its job) and
the scripts write one JSON object per line. A call's lines carry, when known:

    room         the LiveKit room (one room per call)
    participant  the caller's participant identity (the token's identity)
    job          the agent's LiveKit job id (AJ_...); a call handed over has several
    call         a phone call's SIP call id (livekit-sip's sip.callID attribute)

and the milestones of a call carry `event` (structlog's event name; an extra field on the
agent's lines, whose `message` is for people):

    token_issued      token server: a join token for the room was issued
    livekit_event     token server: a LiveKit webhook (`livekit_event`: room_finished, ...)
    call_dispatched   agent: a job started for the room
    model_connected   agent: the model link is up (model_reconnected: up again)
    call_ended        agent: the job ended (`reason`)

So `grep room-XYZ` over every service's log shows the token, the dispatch, the model link and
the end, in order of their `timestamp`.
"""

from __future__ import annotations

ROOM = "room"
PARTICIPANT = "participant"
JOB = "job"
CALL = "call"
#: livekit-sip's participant attribute holding the SIP call id (the `call` key).
SIP_CALL_ID_ATTRIBUTE = "sip.callID"
#: The key of a milestone's name.
EVENT = "event"

TOKEN_ISSUED = "token_issued"
CALL_DISPATCHED = "call_dispatched"
MODEL_CONNECTED = "model_connected"
CALL_ENDED = "call_ended"


def call_fields(*, room: str | None = None, participant: str | None = None, job: str | None = None,
                call: str | None = None) -> dict[str, str]:
    """The call's keys that are known (empty and None values left out)."""
    fields = {ROOM: room, PARTICIPANT: participant, JOB: job, CALL: call}
    return {key: value for key, value in fields.items() if value}
