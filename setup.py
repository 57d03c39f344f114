"""The one compiled part of hitl-sip: the relayed per-packet path (hitl_sip/media/_rtpcore.c).
Everything else is declared in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "hitl_sip.media._rtpcore", ["hitl_sip/media/_rtpcore.c"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                        "-Wno-missing-field-initializers", "-Wno-cast-function-type"],
)])
