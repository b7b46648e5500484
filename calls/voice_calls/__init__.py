"""What the appliance's services share about calls, in one place.

The agent worker writes and the token server reads the same Redis keys; their names,
formats and the scripts that read them atomically live here, not in each service. Both
images copy this package next to their own (docker/services.Dockerfile); the native run and
the tests put this folder on PYTHONPATH.

* `logs`: the keys of a call's JSON log lines (room, participant, job, call) in every service.
* `admission`: how many calls the agent workers can take, and the calls promised to callers
  who have a token but no agent yet (the token server's `503 at_capacity`).
* `records`: the call records (keys, event stream fields and types, the ``(job, seq)``
  duplicate rule, reading a call back); the agent and its watchdog write them, the token
  server's ``GET /api/calls`` reads them.
* `credentials`: how long a LiveKit secret or an operator's key must be (the native run's
  start-up check and the token server's settings).
"""
