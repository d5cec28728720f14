"""Checks on what a client sends the served model: base64 fields, exam zips, phase tensors.

Every check raises :class:`RequestError` with a message a client can act on; none of
them ever echoes a DICOM value (only member names, sizes and shapes).
"""

from __future__ import annotations

import base64
import binascii
import io
import stat
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

MB = 1024 * 1024


class RequestError(ValueError):
    """A request the model cannot answer; the message says why (sent back as a 400)."""


@dataclass(frozen=True)
class Limits:
    """Request limits frozen into each model version (the ``serve`` section of params)."""

    max_payload_mb: float
    max_uncompressed_mb: float
    max_compression_ratio: float
    max_files: int


def decode_base64(text: object, field: str, max_mb: float) -> bytes:
    """A base64 text field as bytes; its size is checked before it is decoded."""
    if not isinstance(text, str) or not text:
        raise RequestError(f"{field} must be a non-empty base64 string, got {type(text).__name__}")
    if len(text) * 3 / 4 > max_mb * MB:
        raise RequestError(f"{field} is {len(text) * 3 / 4 / MB:.1f} MB, over the limit of {max_mb:g} MB")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise RequestError(f"{field} is not valid base64: {error}") from None


def _unsafe_name(name: str) -> str | None:
    """Why a zip member name could escape a folder it were extracted to, or None when it is safe."""
    if "\x00" in name:
        return "contains a NUL character"
    posix = name.replace("\\", "/")
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
        return "is an absolute path"
    if ".." in PurePosixPath(posix).parts:
        return "climbs out of the archive ('..')"
    return None


def read_zip(data: bytes, limits: Limits) -> tuple[dict[Path, bytes], dict[Path, str]]:
    """The members of an exam zip, in memory under generated names, and generated name -> member name.

    Nothing is written to disk (a request is read once, from memory). Refuses path-traversal names, links,
    more than ``max_files`` members, more than ``max_uncompressed_mb`` in all and an overall ratio above
    ``max_compression_ratio`` (a zip bomb); sizes are counted while reading, since headers can lie.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as error:
        raise RequestError(f"dicom_zip is not a zip archive: {error}") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if not members:
            raise RequestError("dicom_zip holds no files")
        if len(members) > limits.max_files:
            raise RequestError(f"dicom_zip holds {len(members)} files, over the limit of {limits.max_files}")
        for member in members:
            reason = _unsafe_name(member.filename)
            if reason:
                raise RequestError(f"zip member {member.filename!r} {reason}")
            if stat.S_ISLNK(member.external_attr >> 16):
                raise RequestError(f"zip member {member.filename!r} is a symbolic link")
        declared = sum(m.file_size for m in members)
        compressed = max(1, sum(m.compress_size for m in members))
        budget = int(limits.max_uncompressed_mb * MB)
        if declared > budget:
            raise RequestError(f"dicom_zip expands to {declared / MB:.1f} MB, over the limit of "
                               f"{limits.max_uncompressed_mb:g} MB")
        if declared / compressed > limits.max_compression_ratio:
            raise RequestError(f"dicom_zip expands {declared / compressed:.0f}-fold, over the limit of "
                               f"{limits.max_compression_ratio:g} (zip bomb?)")
        files: dict[Path, bytes] = {}
        names: dict[Path, str] = {}
        total = 0
        for index, member in enumerate(members):
            path = Path(f"member{index:06d}")
            chunks = []
            try:
                with archive.open(member) as source:
                    while chunk := source.read(MB):
                        total += len(chunk)
                        if total > budget:
                            raise RequestError(f"dicom_zip expands past the limit of {limits.max_uncompressed_mb:g} MB")
                        chunks.append(chunk)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError) as error:
                raise RequestError(f"zip member {member.filename!r} cannot be read: {error}") from None
            files[path], names[path] = b"".join(chunks), member.filename
        return files, names


def read_tensors(data: bytes, phases: Sequence[str], input_size: int, channels: int) -> dict[str, np.ndarray]:
    """Preprocessed inputs from an ``.npz`` (phase name -> (stacks, size, size, channels)), checked.

    The arrays must be real floating point, finite, in [0, 1] (the chain's output range),
    of the model's input shape and with the same number of stacks in every phase.
    """
    try:
        archive = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as error:  # noqa: BLE001 - any unreadable archive is the client's error
        raise RequestError(f"tensors is not a NumPy .npz archive: {type(error).__name__}: {error}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise RequestError("tensors must be a NumPy .npz archive of named arrays, got a single array")
    with archive:
        missing = [p for p in phases if p not in archive.files]
        if missing:
            raise RequestError(f"tensors lack phase(s) {missing}; the model needs {list(phases)} "
                               f"and got {sorted(archive.files)}")
        out: dict[str, np.ndarray] = {}
        for phase in phases:
            try:
                array = archive[phase]
            except ValueError as error:  # object arrays need pickle, which is refused
                raise RequestError(f"tensors[{phase!r}] cannot be read: {error}") from None
            expected = ("stacks", input_size, input_size, channels)
            if array.ndim != 4 or array.shape[1:] != expected[1:] or array.shape[0] < 1:
                raise RequestError(f"tensors[{phase!r}] has shape {array.shape}; expected {expected}")
            if not np.issubdtype(array.dtype, np.floating):
                raise RequestError(f"tensors[{phase!r}] has dtype {array.dtype}; expected float32")
            if not np.isfinite(array).all():
                raise RequestError(f"tensors[{phase!r}] holds {int((~np.isfinite(array)).sum())} NaN or "
                                   "infinite values")
            low, high = float(array.min()), float(array.max())
            if low < 0 or high > 1:
                raise RequestError(f"tensors[{phase!r}] spans [{low:g}, {high:g}]; preprocessed inputs lie in [0, 1]")
            out[phase] = array.astype(np.float32, copy=False)
    counts = {phase: len(array) for phase, array in out.items()}
    if len(set(counts.values())) > 1:
        raise RequestError(f"phases have different numbers of stacks: {counts}")
    return out


def encode_tensors(inputs: dict[str, np.ndarray], compressed: bool = True) -> str:
    """Base64 ``.npz`` of phase tensors: the client side of :func:`read_tensors` (``compressed=False`` for an
    in-process caller, where zlib only costs time)."""
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **{k: np.asarray(v, np.float32)
                                                                 for k, v in inputs.items()})
    return base64.b64encode(buffer.getvalue()).decode("ascii")
