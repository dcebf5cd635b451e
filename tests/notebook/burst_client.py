"""Run as a separate process: N GET requests through a tunnel, results written atomically.

    python burst_client.py FRONT_PORT HOSTNAME N OUT_JSON
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request


def main() -> None:
    port, hostname, n, out = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    results = []
    for i in range(n):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/burst/{i}",
                                     headers={"Host": hostname})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                results.append([i, resp.status, resp.read().decode()])
        except OSError as exc:
            results.append([i, 0, repr(exc)])
    with open(out + ".tmp", "w") as f:
        json.dump(results, f)
    os.replace(out + ".tmp", out)  # the kernel checks for this file right after its sleep


if __name__ == "__main__":
    main()
