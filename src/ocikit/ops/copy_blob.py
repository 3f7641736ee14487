"""Blobs copied as they are: an artifact's (an attestation, a signature), byte for byte."""

from __future__ import annotations

from ..layer.streams import HashingReader
from ..model import Descriptor, Digest, Manifest
from ..transports import ImageDestination, ImageSource
from .progress import ProgressReporter


def copy_blob(
    source: ImageSource, desc: Descriptor, dest: ImageDestination, progress: ProgressReporter
) -> None:
    """One blob, verified (digest, size) as it streams into the destination."""
    with dest.new_blob() as writer, source.open_blob(desc) as raw:
        HashingReader(
            raw,
            what=f"{source.ref}: blob {desc.digest}",
            expected_digest=desc.digest,
            expected_size=desc.size,
            sink=writer.file,
            progress=progress.advance,
        ).drain()
        writer.commit(desc.digest)


def copy_artifact(
    source: ImageSource, dest: ImageDestination, progress: ProgressReporter
) -> Manifest:
    """A manifest whose blobs are not image layers: each verified and copied byte for byte,
    then the manifest (untagged: an index names it)."""
    manifest = source.manifest()
    seen: set[Digest] = set()
    for desc in (manifest.config, *manifest.layers):
        if desc.digest not in seen and not dest.reuse_blob(desc.digest, desc.size):
            copy_blob(source, desc, dest, progress)
        seen.add(desc.digest)
    dest.put_child_manifest(manifest)
    return manifest
