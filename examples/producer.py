"""Demo producer: submits jobs for a few tenants at a steady rate and prints what Janus decided.

    python -m examples.producer --redis redis://127.0.0.1:6379/0 --rate 30 --dependency payments
    python -m examples.producer --count 100          # stop after 100 submits

Every second it prints one line: how many submits were ready, scheduled or rejected (with
the rejection reasons). It stops after ``--count`` submits, or on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections import Counter
from types import FrameType

from janus.client import Janus
from janus.errors import JanusError

DEFAULT_TENANTS = "tenant-a,tenant-b,tenant-vip"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m examples.producer",
        description="Submit demo jobs to Janus for a few tenants, at a steady rate.",
    )
    parser.add_argument(
        "--redis",
        default=os.environ.get("JANUS_REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="Redis URL (default: $JANUS_REDIS_URL or %(default)s)",
    )
    parser.add_argument(
        "--prefix",
        default=os.environ.get("JANUS_PREFIX", "janus"),
        help="Janus key prefix (default: %(default)s)",
    )
    parser.add_argument("--dependency", default="payments", help="default: %(default)s")
    parser.add_argument(
        "--rate", type=float, default=20.0, help="submits per second (default: %(default)s)"
    )
    parser.add_argument(
        "--tenants",
        default=DEFAULT_TENANTS,
        help="comma-separated scopes, used in turn (default: %(default)s)",
    )
    parser.add_argument(
        "--count", type=int, default=0, help="stop after this many submits (default: unlimited)"
    )
    args = parser.parse_args(argv)
    if args.rate <= 0:
        parser.error("--rate must be > 0")
    if args.count < 0:
        parser.error("--count must be >= 0")
    args.tenants = [t.strip() for t in args.tenants.split(",") if t.strip()]
    if not args.tenants:
        parser.error("--tenants must name at least one scope")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stopping = False

    def _stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    try:
        jn = Janus.from_url(args.redis, prefix=args.prefix)
    except JanusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    limit = args.count or "unlimited"
    print(
        f"producer: {args.dependency} at {args.rate:g}/s for {', '.join(args.tenants)} "
        f"(count: {limit})",
        flush=True,
    )
    totals: Counter[str] = Counter()
    window: Counter[str] = Counter()
    start = last_report = time.monotonic()
    sent = 0
    with jn:
        while not stopping and (not args.count or sent < args.count):
            delay = start + sent / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            tenant = args.tenants[sent % len(args.tenants)]
            payload = json.dumps({"tenant": tenant, "amount_cents": 100 + sent % 900})
            try:
                d = jn.submit(args.dependency, scope=tenant, payload=payload)
                key = d.status if d.accepted else f"rejected:{d.reason}"
            except JanusError as exc:
                key = f"error:{type(exc).__name__}"
            sent += 1
            window[key] += 1
            totals[key] += 1
            now = time.monotonic()
            if now - last_report >= 1.0:
                print(f"[{sent:>7}] {_summary(window)}", flush=True)
                window.clear()
                last_report = now
    print(f"done: {sent} submitted: {_summary(totals)}", flush=True)
    return 0


def _summary(counts: Counter[str]) -> str:
    return ", ".join(f"{key}={n}" for key, n in sorted(counts.items())) or "nothing"


if __name__ == "__main__":
    sys.exit(main())
