"""Layer bytes: the streams below the image model, none of it tied to a transport.

The tar reader (``tarstream``, Go's archive/tar semantics) and writer (``tarwriter``),
compression (``compress``), hashing and verifying streams (``streams``), one-pass scans and
transcodes of a layer blob (``scan``, ``transcode``), what each entry does to the tree below
and what is wrong with it (``analyze``, ``paths``), the limits reading stays within
(``bounds``), squashfs layers (``squashfs``, ``squashfs_format``), a directory read as a
layer's entries (``overlay``), and the O_NOFOLLOW directory-fd access every tree hostile input
wrote is touched through (``dirfd``).

Nothing is imported here: each module is imported by its full name, so a command loads only
what it uses.
"""
