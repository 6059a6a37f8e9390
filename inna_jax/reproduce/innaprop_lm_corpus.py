"""The corpus of ``inna-jax innaprop-lm``: Python standard-library source files, as bytes.

Every CPython 3.11+ install carries its standard library's source, so this corpus is on every
machine without a download. The file list is fixed (files present in every CPython from 3.11
on); the validation split is made of whole files that the training split never sees. The
bytes of each file are those of the installed Python, so the sizes differ a little from one
Python version to the next: the command records them with the Python version.
"""

from __future__ import annotations

import dataclasses
import sysconfig
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: The training files, relative to ``sysconfig.get_paths()["stdlib"]``.
TRAIN_FILES: tuple[str, ...] = (
    "abc.py", "argparse.py", "ast.py", "base64.py", "bisect.py", "calendar.py",
    "codecs.py", "collections/__init__.py", "configparser.py", "contextlib.py", "copy.py",
    "csv.py", "dataclasses.py", "difflib.py", "email/message.py", "enum.py", "fnmatch.py",
    "functools.py", "gettext.py", "glob.py", "html/parser.py", "http/client.py",
    "inspect.py", "ipaddress.py", "json/decoder.py", "json/encoder.py", "locale.py",
    "logging/__init__.py", "numbers.py", "operator.py", "optparse.py", "pprint.py",
    "queue.py", "random.py", "reprlib.py", "sched.py", "selectors.py", "shlex.py",
    "shutil.py", "string.py", "subprocess.py", "tempfile.py", "threading.py",
    "tokenize.py", "traceback.py", "typing.py", "unittest/case.py", "urllib/parse.py",
    "uuid.py", "weakref.py",
)  # fmt: skip
#: The held-out validation files (whole files, none of them in :data:`TRAIN_FILES`).
VALIDATION_FILES: tuple[str, ...] = ("fractions.py", "heapq.py", "statistics.py", "textwrap.py")


@dataclasses.dataclass(frozen=True)
class Corpus:
    """The two splits as byte arrays (``uint8``), and the files they were read from."""

    train: np.ndarray
    validation: np.ndarray
    train_files: tuple[str, ...]
    validation_files: tuple[str, ...]
    root: str

    def describe(self) -> dict:
        """The files, their root and the split sizes in bytes, for the summary JSON."""
        return {
            "root": self.root,
            "train_files": list(self.train_files),
            "validation_files": list(self.validation_files),
            "train_bytes": int(self.train.size),
            "validation_bytes": int(self.validation.size),
        }


def stdlib_root() -> Path:
    """The folder of the running Python's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def _read(root: Path, names: Sequence[str]) -> np.ndarray:
    parts = []
    for name in names:
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(
                f"corpus file {name!r} is missing from the standard library at {root} "
                "(inna-jax innaprop-lm reads CPython 3.11+ source files)"
            )
        parts.append(path.read_bytes() + b"\n")
    return np.frombuffer(b"".join(parts), dtype=np.uint8)


def load_corpus(
    train_files: Sequence[str] = TRAIN_FILES,
    validation_files: Sequence[str] = VALIDATION_FILES,
    *,
    root: str | Path | None = None,
) -> Corpus:
    """Reads the two splits, each file's bytes followed by a newline, in list order.

    Args:
        train_files: training files, relative to ``root``.
        validation_files: validation files, relative to ``root``; none may be a training file.
        root: the folder (default: :func:`stdlib_root`).

    Raises:
        FileNotFoundError: one line naming the first missing file.
        ValueError: for a file in both lists.
    """
    shared = sorted(set(train_files) & set(validation_files))
    if shared:
        raise ValueError(f"validation_files must not be training files, got {shared} in both")
    folder = stdlib_root() if root is None else Path(root)
    return Corpus(
        _read(folder, train_files),
        _read(folder, validation_files),
        tuple(train_files),
        tuple(validation_files),
        str(folder),
    )
