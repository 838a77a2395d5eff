"""Transcoding one DICOM instance (or its frames) to an uncompressed transfer syntax with pydicom.

Used when the PACS cannot deliver an instance in the transfer syntax a WADO-RS client asked
for (PS3.18 Section 8.7.3.5.2): the facade asks for it as stored and decodes it here, one
instance at a time, with pydicom's pixel data plugins (pylibjpeg, pylibjpeg-libjpeg,
pylibjpeg-openjpeg, pylibjpeg-rle). Bytes in, bytes out: no HTTP here.
"""
from __future__ import annotations

import io

import numpy as np
from pydicom import dcmread, dcmwrite
from pydicom.dataset import FileMetaDataset
from pydicom.pixels import get_decoder, pack_bits, pixel_array
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

#: Transfer syntaxes the facade writes instances in (PS3.5 Section 10): the uncompressed
#: little endian ones. Compressed targets are left to the PACS.
PRODUCIBLE = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian})
#: Uncompressed transfer syntaxes pydicom reads without a pixel data decoder.
NATIVE = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
                    ExplicitVRBigEndian})
#: Largest instance (bytes, as stored) decoded in memory; a larger one is not transcoded.
MAX_INSTANCE_BYTES = 512 * 1024 * 1024
_PIXEL_DATA = 0x7FE00010


class TranscodeError(ValueError):
    """The instance cannot be transcoded: a stored syntax no installed decoder handles,
    damaged pixel data, an instance too large, or bytes that are not a DICOM file."""

    def __init__(self, message: str = "the instance cannot be transcoded"):
        super().__init__(message)


def can_decode(transfer_syntax: str) -> bool:
    """Whether an instance stored in *transfer_syntax* can be decoded here.

    Native syntaxes always; compressed ones when pydicom has a decoder with an installed
    plugin (PS3.5 Section 8.2). Video (MPEG-2, MPEG-4, HEVC) and unknown syntaxes cannot.
    """
    if transfer_syntax in NATIVE:
        return True
    try:
        return get_decoder(UID(transfer_syntax)).is_available
    except (NotImplementedError, ValueError):
        return False


_ENCODINGS = {(False, True): ExplicitVRLittleEndian, (True, True): ImplicitVRLittleEndian,
              (False, False): ExplicitVRBigEndian}


def is_part10(data: bytes) -> bool:
    """Whether *data* starts like a DICOM file: a 128-byte preamble and ``DICM`` (PS3.10 Section 7.1)."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def _read(part10: bytes):
    """The dataset of a Part-10 file, or of a bare dataset as some PACS store one (no preamble,
    no File Meta: Orthanc keeps such files as it received them), its encoding then guessed by
    pydicom and written into File Meta Information built from the SOP Common module."""
    if len(part10) > MAX_INSTANCE_BYTES:
        raise TranscodeError(f"the instance is larger than {MAX_INSTANCE_BYTES} bytes")
    try:
        ds = dcmread(io.BytesIO(part10), force=not is_part10(part10))
        if "TransferSyntaxUID" in getattr(ds, "file_meta", ()):
            return ds
        # A bare dataset, or File Meta without a Transfer Syntax UID: the encoding pydicom found.
        syntax = _ENCODINGS.get(ds.original_encoding)
        if syntax is None or "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:
            raise TranscodeError("neither a DICOM file nor a dataset with a SOP Class and Instance UID")
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = syntax
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.preamble = b"\0" * 128
        return ds
    except TranscodeError:
        raise
    except Exception as exc:  # pydicom's parser raises many kinds on arbitrary bytes
        raise TranscodeError(f"not a readable DICOM file: {exc}") from exc


def _native_pixels(ds) -> None:
    """Replace compressed or big endian Pixel Data with little endian native data (in place)."""
    stored = ds.file_meta.TransferSyntaxUID
    if _PIXEL_DATA not in ds:
        return
    if stored.is_compressed:
        if not can_decode(stored):
            raise TranscodeError(f"no decoder for the stored transfer syntax {stored}")
        # The same pixels and UIDs (PS3.4 Annex C: a decompressed image is the same image);
        # YCbCr becomes RGB, as the Photometric Interpretation the decoder writes says.
        ds.decompress(generate_instance_uid=False)
    elif stored == ExplicitVRBigEndian and ds.get("BitsAllocated", 8) > 8:
        values = pixel_array(ds)
        ds.PixelData = values.astype(values.dtype.newbyteorder("<"), copy=False).tobytes()
        ds["PixelData"].VR = "OW"


def transcode_instance(part10: bytes, transfer_syntax: str) -> bytes:
    """Rewrite a DICOM Part-10 file in *transfer_syntax*, decompressing its Pixel Data.

    Parameters
    ----------
    part10 : bytes
        The instance as stored (PS3.10 Section 7.1), in any transfer syntax :func:`can_decode`.
    transfer_syntax : str
        One of :data:`PRODUCIBLE`, or ``*``: as stored, only a bare dataset made a Part-10 file.

    Returns
    -------
    bytes
        The Part-10 file in *transfer_syntax* (*part10* itself when already in it).

    Raises
    ------
    TranscodeError
        If *transfer_syntax* is not producible, or the instance cannot be read or decoded.
    """
    if transfer_syntax not in PRODUCIBLE and transfer_syntax != "*":
        raise TranscodeError(f"the facade does not write {transfer_syntax}")
    ds = _read(part10)
    if transfer_syntax == "*":
        transfer_syntax = ds.file_meta.TransferSyntaxUID
    if ds.file_meta.TransferSyntaxUID == transfer_syntax and is_part10(part10) and ds.file_meta.get(
            "MediaStorageSOPInstanceUID"):
        return part10
    try:
        if ds.file_meta.TransferSyntaxUID != transfer_syntax:
            _native_pixels(ds)
        ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
        out = io.BytesIO()
        # dcmwrite, not save_as: a big endian dataset is written little endian (its Pixel Data
        # swapped by _native_pixels).
        dcmwrite(out, ds, enforce_file_format=True)
    except TranscodeError:
        raise
    except Exception as exc:  # a codec's own errors (RuntimeError, ValueError, ...) on damaged data
        raise TranscodeError(f"the pixel data cannot be decoded: {exc}") from exc
    return out.getvalue()


def _frame_bytes(values: np.ndarray, ds) -> bytes:
    """One decoded frame as native little endian bytes, laid out as its metadata says (PS3.5 Section 8.1)."""
    if ds.get("BitsAllocated", 8) == 1:
        return pack_bits(values, pad=False)
    if (values.ndim == 3 and ds.get("PlanarConfiguration", 0) == 1
            and not ds.file_meta.TransferSyntaxUID.is_compressed):
        values = values.transpose(2, 0, 1)  # colour-by-plane, as stored
    return np.ascontiguousarray(values.astype(values.dtype.newbyteorder("<"), copy=False)).tobytes()


def decode_frames(part10: bytes, numbers: list[int]) -> list[bytes]:
    """The frames *numbers* (1-based) of an instance, uncompressed little endian.

    What ``application/octet-stream`` frames are (PS3.18 Section 8.7.3.5.2): Explicit VR
    Little Endian pixel data, one frame each, YCbCr of a JPEG decoded as RGB.

    Raises
    ------
    TranscodeError
        If the instance cannot be read or decoded.
    IndexError
        If a frame number is beyond NumberOfFrames, or there is no Pixel Data (the caller
        answers 404).
    """
    ds = _read(part10)
    if _PIXEL_DATA not in ds:
        raise IndexError("the instance has no pixel data")
    try:
        count = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError) as exc:
        raise TranscodeError(f"NumberOfFrames is not a number: {exc}") from exc
    missing = [n for n in numbers if not 1 <= n <= count]
    if missing:
        raise IndexError(f"frame {missing[0]} does not exist (NumberOfFrames is {count})")
    stored = ds.file_meta.TransferSyntaxUID
    if stored.is_compressed and not can_decode(stored):
        raise TranscodeError(f"no decoder for the stored transfer syntax {stored}")
    try:
        # Native frames keep their colour space (a frame is the Pixel Data as stored); decoded
        # ones are RGB where the codec's output is (YCbCr of JPEG Baseline), as for instances.
        return [_frame_bytes(pixel_array(ds, index=n - 1, raw=not stored.is_compressed), ds) for n in numbers]
    except Exception as exc:  # a codec's own errors on damaged data
        raise TranscodeError(f"the pixel data cannot be decoded: {exc}") from exc
