"""The optional native core (``src/native/``): C extensions built from Debian's compiler at
install time. Each is ``optional``: where it cannot be built (no compiler, no headers), the
install still succeeds and ocikit runs its pure-Python path (``ocikit.native``)."""

from setuptools import Extension, setup

_FLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-fvisibility=hidden"]

setup(
    ext_modules=[
        # tar headers: parsed in batches, the rules of layer/tarstream.py exactly
        Extension(
            "ocikit._tarcore",
            ["src/native/tarcore.c"],
            extra_compile_args=_FLAGS,
            optional=True,
        ),
        # the per-file work of builds: files read and hashed a directory at a time, tar headers
        Extension(
            "ocikit._filecore",
            ["src/native/filecore.c"],
            extra_compile_args=_FLAGS,
            libraries=["crypto"],
            optional=True,
        ),
    ],
)
