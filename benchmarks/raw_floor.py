"""The raw floor: the least a Python program can do to turn an export response into Singer.

One streamed GET of the export endpoint (``requests``, gzip as the tap gets it), and for each
line ``json.loads`` (stdlib ``json``, on purpose: it is what a minimal loop would use) and one
``{"type": "RECORD", "stream": "events", "record": <the event>}`` line written to stdout with
``json.dumps`` (stdlib defaults). No schema, no state, no retries, no threads. The benchmark
runs it as a subprocess and reads its stdout to the end, exactly as it does for the tap.

``--json msgspec`` makes a stricter floor: the same loop with msgspec's C decoder and encoder
(what the tap itself parses and writes with), so the tap is not measured only against a slow
stdlib loop.

Usage: python benchmarks/raw_floor.py --config CONFIG.json [--json stdlib|msgspec]  (the tap's
config keys: service_account_username/secret, project_id, api_url, start_date, end_date)
"""

from __future__ import annotations

import argparse
import json
import sys

from export_lines import export_lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--json", choices=["stdlib", "msgspec"], default="stdlib")
    args = parser.parse_args(argv)
    with open(args.config, encoding="utf-8") as fh:
        config = json.load(fh)
    lines = export_lines(config)
    if args.json == "msgspec":
        import msgspec

        decode, encode = msgspec.json.decode, msgspec.json.Encoder().encode
        out = sys.stdout.buffer
        for line in lines:
            out.write(encode({"type": "RECORD", "stream": "events", "record": decode(line)}))
            out.write(b"\n")
        out.flush()
        return 0
    write = sys.stdout.write
    loads, dumps = json.loads, json.dumps
    for line in lines:
        write(dumps({"type": "RECORD", "stream": "events", "record": loads(line)}) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
