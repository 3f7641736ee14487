"""What Python itself takes for a re-push: the plain-Python baseline of bench_all.py's re-push
row. The standard library alone (``http.client``, ``json``) reads an OCI layout's image and
makes the requests an unchanged re-push makes (the API check, a ``HEAD`` per blob, the
manifest's ``PUT``) to a plain-HTTP registry without authentication. ``--click`` imports click
first, as any command of ocikit's command line does.

    python bench/repush_floor.py [--click] LAYOUT TAG HOST:PORT REPO TAG

Not a tool: no authentication, no TLS, no index; it exits 1 when a blob is missing.
"""

from __future__ import annotations

import sys

if "--click" in sys.argv:
    import click  # noqa: F401  # what ocikit's command line costs before anything else

    sys.argv.remove("--click")

import http.client
import json
import os


def main(layout: str, tag: str, host: str, repo: str, dest_tag: str) -> int:
    with open(os.path.join(layout, "index.json"), "rb") as f:
        index = json.loads(f.read(1 << 20))
    wanted = [
        m
        for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag
    ]
    digest = wanted[0]["digest"]
    with open(os.path.join(layout, "blobs", *digest.split(":")), "rb") as f:
        raw = f.read(4 << 20)
    manifest = json.loads(raw)
    name, _, port = host.partition(":")
    conn = http.client.HTTPConnection(name, int(port or 80), timeout=30)
    conn.request("GET", "/v2/")
    conn.getresponse().read()
    for blob in [manifest["config"], *manifest["layers"]]:
        conn.request("HEAD", f"/v2/{repo}/blobs/{blob['digest']}")
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            print(f"{blob['digest']}: {response.status}", file=sys.stderr)
            return 1
    media_type = manifest.get("mediaType", "application/vnd.oci.image.manifest.v1+json")
    conn.request(
        "PUT", f"/v2/{repo}/manifests/{dest_tag}", body=raw, headers={"Content-Type": media_type}
    )
    response = conn.getresponse()
    response.read()
    return 0 if response.status == 201 else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:6]))
