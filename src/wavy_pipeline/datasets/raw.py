"""Read-only datasets for the raw corpus: metadata text files, audio files and images."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import soundfile as sf
from kedro.io import AbstractDataset
from kedro.io.core import DatasetError
from PIL import Image, UnidentifiedImageError

from wavy_pipeline.data.audio import Audio, UnreadableAudioError
from wavy_pipeline.data.images import to_rgb

_Loaded = TypeVar("_Loaded")


class ReadOnlyFileDataset(AbstractDataset[None, _Loaded]):
    """Base of the datasets of one file the project reads and never writes: ``save``
    refuses, the dataset exists when the file does, and it is described by its path
    (subclasses add their options to :meth:`_describe`)."""

    _filepath: Path
    _never_written = "the raw corpus is never written"

    def save(self, data: None) -> None:
        raise DatasetError(f"{self} is read-only: {self._never_written}.")

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class TextLinesDataset(ReadOnlyFileDataset[list[str]]):
    """A text file read as a list of lines, without ever failing on bad bytes.

    Lines are decoded as UTF-8 with ``surrogateescape``: a line that is not valid UTF-8
    keeps its bytes as lone surrogates, so the parser can put it in quarantine with a
    reason (see :func:`wavy_pipeline.data.corpus.is_valid_utf8`) instead of crashing.

    Args:
        filepath: Path of the text file.
        optional: If true, a missing file loads as no lines (for sidecar files that
            only some corpora have) instead of raising.
        missing_hint: What the error for a missing file tells the user to do (default:
            check ``corpus_root``), e.g. how to generate a corpus that is not shipped.
    """

    def __init__(
        self,
        *,
        filepath: str,
        optional: bool = False,
        missing_hint: str | None = None,
        metadata: dict | None = None,
    ):
        self._filepath = Path(filepath)
        self._optional = optional
        self._missing_hint = missing_hint or (
            "Check `corpus_root` (kedro run --params corpus_root=DIR) and the Flickr8k Audio "
            "layout in README."
        )
        self.metadata = metadata

    def load(self) -> list[str]:
        if not self._filepath.is_file():
            if self._optional:
                return []
            raise DatasetError(
                f"Corpus file '{self._filepath}' does not exist. {self._missing_hint}"
            )
        text = self._filepath.read_bytes().decode("utf-8", errors="surrogateescape")
        return text.removeprefix("\ufeff").splitlines()

    def _describe(self) -> dict[str, Any]:
        return super()._describe() | {"optional": self._optional}


# libsndfile's own diagnosis of a sample chunk whose header promises more bytes than the
# file holds, e.g. "data : 32000 (should be 15978)" for a WAV cut off half-way.
_SHORT_CHUNK = re.compile(r"^(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_SIZE_UNKNOWN = 0xFFFFFFFF - 1  # streamed WAVs put a placeholder size in the header


def truncation(extra_info: str) -> str | None:
    """Why a file is truncated, from soundfile's ``extra_info`` (None if it is not).

    libsndfile reads a truncated WAV/AIFF without complaint and returns only the frames
    that are there; its log keeps the announced and the actual sizes of the samples.
    """
    match = _SHORT_CHUNK.search(extra_info)
    if not match:
        return None
    announced, actual = int(match[1]), int(match[2])
    if actual >= announced or announced >= _SIZE_UNKNOWN:
        return None
    return (
        f"truncated audio: the header announces {announced} bytes of samples, "
        f"the file holds {actual}"
    )


class AudioFileError(DatasetError, UnreadableAudioError):
    """A ``DatasetError`` (what Kedro and the callers of a dataset expect) that the audio
    stage also knows as its own :class:`~wavy_pipeline.data.audio.UnreadableAudioError`,
    so an unreadable file is quarantined, never a crash."""


class AudioDataset(ReadOnlyFileDataset[Audio]):
    """One audio file read with soundfile (wav, flac, ogg, … whatever libsndfile reads).

    Used as the per-file dataset of a ``PartitionedDataset`` over ``wavs/``; loading is
    lazy there, so listing 40,000 files costs nothing. Unreadable, truncated and too long
    files raise :class:`AudioFileError` with the reason, which the audio pipeline quarantines.

    Args:
        filepath: Path of the audio file.
        max_seconds: Files longer than this are refused before decoding (their header
            says how long they are), so one stray hour-long file cannot exhaust memory.
    """

    def __init__(
        self, *, filepath: str, max_seconds: float | None = 1800.0, metadata: dict | None = None
    ):
        self._filepath = Path(filepath)
        self._max_seconds = max_seconds
        self.metadata = metadata

    def load(self) -> Audio:
        try:
            with sf.SoundFile(self._filepath) as handle:
                sample_rate = handle.samplerate
                if self._max_seconds and handle.frames > self._max_seconds * sample_rate:
                    raise AudioFileError(
                        f"audio is {handle.frames / sample_rate:.0f} s long, more than "
                        f"max_seconds={self._max_seconds:g}"
                    )
                truncated = truncation(handle.extra_info)
                if truncated:
                    raise AudioFileError(truncated)
                samples = handle.read(dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            raise AudioFileError(f"unreadable audio: {exc}") from exc
        return Audio(samples=samples, sample_rate=sample_rate)

    def _describe(self) -> dict[str, Any]:
        return super()._describe() | {"max_seconds": self._max_seconds}


class ImageFileDataset(ReadOnlyFileDataset[Image.Image]):
    """One corpus image, decoded as people see it (:func:`wavy_pipeline.data.images.to_rgb`):
    8-bit RGB, EXIF orientation applied, transparency on white, 16-bit scaled.

    The only place where the project decodes corpus images: it is the per-file dataset of
    the ``raw_image_files`` ``PartitionedDataset``, which every stage reads. Unreadable
    files raise ``DatasetError`` with a reason fit for a quarantine table (never a Python
    object's address); Pillow's decompression-bomb guard stays on.

    Args:
        filepath: Path of the image file.
    """

    def __init__(self, *, filepath: str, metadata: dict | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> Image.Image:
        try:
            size = self._filepath.stat().st_size
            if size == 0:
                raise DatasetError("empty file (0 bytes)")
            with Image.open(self._filepath) as image:
                image.load()
                return to_rgb(image)
        except UnidentifiedImageError as exc:
            raise DatasetError(f"not an image Pillow can read ({size} bytes)") from exc
        except Image.DecompressionBombError as exc:
            raise DatasetError(f"refused as a decompression bomb: {exc}") from exc
        except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
            raise DatasetError(f"{exc}".strip() or type(exc).__name__) from exc
