"""An image index copied whole: every manifest (images, and artifacts byte for byte), then
the index, its exact bytes when no manifest changed."""

from __future__ import annotations

from ..errors import UsageError
from ..model import Compression, Descriptor, Index, Manifest
from ..model import mediatypes as mt
from ..transports import Image, ImageDestination, ImageSource, IndexSource
from ..transports.base import Flavor
from .copy_blob import copy_artifact
from .copy_image import Cancellation, ImageCopier
from .progress import ProgressReporter


def copy_index(
    top: IndexSource,
    dest: ImageDestination,
    *,
    compression: Compression | None,
    level: int | None,
    progress: ProgressReporter,
    jobs: int,
    cancel: Cancellation,
) -> Index:
    """Every manifest of ``top.index`` into ``dest``, then the index (``put_index``)."""
    index = top.index
    assert index is not None
    written = []
    for desc in index.manifests:
        if desc.media_type in mt.INDEX_TYPES:
            raise UsageError(
                f"{top.ref}: the index names another index ({desc.digest}); ocikit copies "
                f"one level of index"
            )
        child = top.open_child(desc)
        owned: ImageSource | None = child  # closed here unless an Image takes it
        try:
            if _is_image(child.manifest()):
                image = Image(child)
                owned = None  # the image closes it
                with image:
                    copier = ImageCopier(
                        image,
                        dest,
                        compression=compression,
                        level=level,
                        progress=progress,
                        jobs=jobs,
                        cancel=cancel,
                    )
                    manifest = copier.run(child=True)
            else:  # an artifact (an attestation, a signature): its blobs as they are
                manifest = copy_artifact(child, dest, progress)
        finally:
            if owned is not None:
                owned.close()
        written.append(_entry(manifest, desc))
    if written == list(index.manifests):
        result = index
    else:
        docker = all(d.media_type == mt.DOCKER_MANIFEST for d in written)
        media_type = mt.DOCKER_MANIFEST_LIST if docker else mt.OCI_INDEX
        if dest.properties.flavor is Flavor.OCI:
            media_type = mt.OCI_INDEX
        result = Index.build(written, index.annotations, media_type)
    dest.put_index(result, [])
    return result


def _entry(manifest: Manifest, desc: Descriptor) -> Descriptor:
    """The index's entry for a manifest as written (the source entry's platform and
    annotations kept)."""
    return Descriptor(
        manifest.media_type,
        manifest.digest,
        len(manifest.raw),
        desc.annotations,
        desc.platform,
        desc.urls,
        desc.extra,
    )


def _is_image(manifest: Manifest) -> bool:
    """A container image (a config ocikit reads, layers it can verify), not an artifact."""
    return manifest.config.media_type in (mt.OCI_CONFIG, mt.DOCKER_CONFIG) and all(
        mt.layer_compression(d.media_type) is not None for d in manifest.layers
    )
