"""``janus dashboard``: a web dashboard for SREs over the same API the CLI uses.

Every dependency at a glance (rate and burst, tokens, started/completed/failed per second,
in flight, queues, oldest wait, circuit, pauses, retry budget, dead letters), each one's
scopes with their share against their weight and their quota, a live chart, its events, its
dead letters (filtered, paged, each with its payload shown safely and every attempt), a job
by id; pause and resume, replay and purge, each confirmed and refused in read-only mode.

:mod:`janus.dashboard.views` is pure (what the pages show), :mod:`janus.dashboard.security`
holds the safety checks, :mod:`janus.dashboard.app` the Starlette app. It needs the
``dashboard`` extra (``pip install 'janus-limiter[dashboard]'``).
"""
