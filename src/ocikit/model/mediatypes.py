"""Media types of the OCI image-spec and Docker's schema 2, and how layers map to compression."""

from __future__ import annotations

from enum import Enum

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = OCI_LAYER + "+gzip"
OCI_LAYER_ZSTD = OCI_LAYER + "+zstd"
OCI_LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = DOCKER_LAYER + ".gzip"
DOCKER_LAYER_ZSTD = DOCKER_LAYER + ".zstd"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
# squashfs layers, as stacker names them (suffix: the squashfs's own compression); their
# diff_id is the digest of the squashfs itself, and whiteouts are overlayfs's
SQUASHFS_LAYER = "application/vnd.stacker.image.layer.squashfs"
SQUASHFS_LAYER_GZIP = SQUASHFS_LAYER + "+gzip"

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})


class Compression(Enum):
    """How a layer's bytes are compressed. The value is the CLI spelling."""

    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"
    SQUASHFS = "squashfs"  # not a compression of a tar: a squashfs filesystem (kept as it is)

    @classmethod
    def parse(cls, name: str) -> Compression:
        """A compression of tar layers, as a user spells it (squashfs is not one)."""
        try:
            found = cls(name.lower())
            if found is cls.SQUASHFS:
                raise ValueError(name)
            return found
        except ValueError:
            from ..errors import UsageError

            choices = ", ".join(c.value for c in cls if c is not cls.SQUASHFS)
            raise UsageError(f"unknown compression {name!r} (choose from {choices})") from None


GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def detect(head: bytes) -> Compression:
    """The compression of a stream, from its first bytes (here, not with the compressors of
    ``layer.compress``: naming a layer's compression loads none of them)."""
    if head.startswith(GZIP_MAGIC):
        return Compression.GZIP
    if head.startswith(ZSTD_MAGIC):
        return Compression.ZSTD
    if head.startswith(b"hsqs"):  # a squashfs superblock (little endian magic)
        return Compression.SQUASHFS
    return Compression.NONE


_OCI_LAYER_BY_COMPRESSION = {
    Compression.NONE: OCI_LAYER,
    Compression.GZIP: OCI_LAYER_GZIP,
    Compression.ZSTD: OCI_LAYER_ZSTD,
}
_DOCKER_LAYER_BY_COMPRESSION = {
    Compression.NONE: DOCKER_LAYER,
    Compression.GZIP: DOCKER_LAYER_GZIP,
    Compression.ZSTD: DOCKER_LAYER_ZSTD,
}
_LAYER_COMPRESSION = {
    **{mt: c for c, mt in _OCI_LAYER_BY_COMPRESSION.items()},
    **{mt: c for c, mt in _DOCKER_LAYER_BY_COMPRESSION.items()},
    SQUASHFS_LAYER: Compression.SQUASHFS,
    SQUASHFS_LAYER_GZIP: Compression.SQUASHFS,
    SQUASHFS_LAYER + "+zstd": Compression.SQUASHFS,
    OCI_LAYER_NONDIST: Compression.NONE,
    OCI_LAYER_NONDIST + "+gzip": Compression.GZIP,
    OCI_LAYER_NONDIST + "+zstd": Compression.ZSTD,
    DOCKER_FOREIGN_LAYER: Compression.GZIP,
}


def is_layer(media_type: str) -> bool:
    return media_type in _LAYER_COMPRESSION


def layer_compression(media_type: str) -> Compression | None:
    """The compression a layer media type declares, or None if it is not a known layer type."""
    return _LAYER_COMPRESSION.get(media_type)


def oci_layer_type(compression: Compression) -> str:
    if compression is Compression.SQUASHFS:
        return SQUASHFS_LAYER_GZIP
    return _OCI_LAYER_BY_COMPRESSION[compression]


def docker_layer_type(compression: Compression) -> str:
    if compression is Compression.SQUASHFS:
        from ..errors import UsageError

        raise UsageError("Docker images cannot hold squashfs layers")
    return _DOCKER_LAYER_BY_COMPRESSION[compression]
