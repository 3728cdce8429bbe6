"""Start, stop and check the embedded services: `python scripts/services.py up|down|status`."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from lib.config import ConfigError, configure
from lib.services.service import ServiceError, shown_url
from lib.services.stack import Stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("action", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        stack = Stack(configure())
        if args.action == "status":
            statuses = stack.status()
            width = max(len(shown_url(s.url)) for s in statuses)
            for s in statuses:
                health = "healthy" if s.healthy else f"NOT healthy ({s.detail})"
                print(f"{s.name:<9} {shown_url(s.url):<{width}}  {s.state:<20} {health}")
            return 0 if all(s.healthy for s in statuses) else 1
        began = time.monotonic()
        messages = stack.up() if args.action == "up" else stack.down()
        print("\n".join(messages))
        if args.action == "up":
            print(f"All services healthy after {time.monotonic() - began:.1f} s.")
        return 0
    except (ConfigError, ServiceError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
