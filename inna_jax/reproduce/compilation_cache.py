"""The ``inna-jax`` commands keep their compiled XLA programs on disk between runs.

A command compiles the same few programs every time it runs (a training step per optimizer
family, an evaluation pass, the models' initialisation), and on a CPU compiling them takes
about as long as the reduced protocols' training. JAX's persistent compilation cache
(https://docs.jax.dev/en/latest/persistent_compilation_cache.html) stores each compiled
program in a folder; a later run with the same program, shapes, JAX version and machine loads
it instead of compiling again. The results do not change: the loaded program is the one that
was compiled.

The commands use the folder named by the environment variable ``INNA_JAX_COMPILATION_CACHE``,
by default ``$XDG_CACHE_HOME/inna_jax/jax`` (``~/.cache/inna_jax/jax``); ``off`` turns the
cache off. A ``JAX_COMPILATION_CACHE_DIR`` set by the user wins over both. The folder is
trusted code: do not point it at a folder others can write to. The library itself
(``import inna_jax``) never turns the cache on.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

#: The environment variable naming the folder, or ``off``.
ENV = "INNA_JAX_COMPILATION_CACHE"
_OFF = ("off", "0", "false", "no", "none", "")
#: Programs that compile faster than this are not stored (a file per tiny op costs more).
MIN_COMPILE_TIME_S = 0.1


def cache_dir(environ: MutableMapping[str, str] | None = None) -> Path | None:
    """The folder the commands use, or ``None`` when ``INNA_JAX_COMPILATION_CACHE=off``.

    Example:
        >>> from inna_jax.reproduce.compilation_cache import cache_dir
        >>> cache_dir({"INNA_JAX_COMPILATION_CACHE": "off"}) is None
        True
        >>> str(cache_dir({"INNA_JAX_COMPILATION_CACHE": "/tmp/xla"}))
        '/tmp/xla'
        >>> str(cache_dir({"XDG_CACHE_HOME": "/var/cache/me"}))
        '/var/cache/me/inna_jax/jax'
    """
    env = os.environ if environ is None else environ
    value = env.get(ENV)
    if value is not None:
        return None if value.strip().lower() in _OFF else Path(value).expanduser()
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "inna_jax" / "jax"


def enable(environ: MutableMapping[str, str] | None = None) -> Path | None:
    """Turns JAX's persistent compilation cache on for this process, before it compiles.

    Uses the folder of :func:`cache_dir` and keeps the programs that took at least
    :data:`MIN_COMPILE_TIME_S` to compile, unless the user set ``JAX_COMPILATION_CACHE_DIR``
    or ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS``, which JAX reads itself. The folder
    grows with each new program (about 15 kB for a small CNN's training step); JAX bounds it
    with ``JAX_COMPILATION_CACHE_MAX_SIZE`` (bytes; needs the ``filelock`` package). The
    ``inna-jax`` entry point calls this first thing.

    Returns:
        The folder in use, or ``None`` when the cache is off.
    """
    import jax

    env = os.environ if environ is None else environ
    if jax.config.jax_compilation_cache_dir:  # the user's JAX_COMPILATION_CACHE_DIR
        return Path(jax.config.jax_compilation_cache_dir)
    folder = cache_dir(env)
    if folder is None:
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in env:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_S)
    return folder
