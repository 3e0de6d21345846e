"""Typed errors of the codec core.

Every failure a caller can trigger with bad input maps to one of these classes, so the HTTP layer can turn
them into stable error codes without string matching, and so a corrupt stream is never mistaken for a bug.
"""

from __future__ import annotations


class ModelStoreError(Exception):
    """Base class: anything the codec core rejects on purpose."""

    code = "model_store_error"


class BitstreamError(ModelStoreError):
    """The bytes are not a stream this decoder can read (bad magic, version, CRC, lengths)."""

    code = "corrupt_bitstream"


class TruncatedStreamError(BitstreamError):
    """The stream ends before the lengths its header announces."""

    code = "truncated_bitstream"


class UnsupportedVersionError(BitstreamError):
    """The container's format version is newer than this decoder (or unknown)."""

    code = "unsupported_format_version"


class UnknownModelError(ModelStoreError):
    """A model name (or model + quality) that the registry does not know."""

    code = "unknown_model"


class WeightsMismatchError(ModelStoreError):
    """The stream was made with weights whose digest differs from the ones loaded here."""

    code = "weights_mismatch"


class WeightsFileError(ModelStoreError):
    """A shipped weights file is missing or its sha256 differs from the manifest."""

    code = "weights_file_error"


class WeightsRetiredError(WeightsFileError):
    """The weights were retired from this install (superseded by a newer version) and kept in git history.

    A stream that names them is recognised, not treated as unknown: the message says how to restore them
    (``python -m model_store.retirement restore``), after which it decodes exactly as before.
    """

    code = "weights_retired"


class CoderMismatchError(BitstreamError):
    """The decoder derived different entropy-coder inputs than the encoder did.

    Raised instead of returning an image: if the scale indexes differ, rANS decoded garbage.
    """

    code = "coder_mismatch"


class ImageInputError(ModelStoreError):
    """An input image that cannot be coded (wrong mode, empty, too many pixels)."""

    code = "bad_image"


class LimitExceededError(ModelStoreError):
    """A size announced by a header or an image is above a configured limit."""

    code = "limit_exceeded"


class UncodableLatentError(ModelStoreError):
    """The model produced latent values the entropy coder cannot represent (not finite, or absurdly large).

    Shipped weights never do this on 8-bit images; a diverged or broken model does, and compressai's rANS coder
    would loop forever on such a symbol rather than fail, so the codec refuses before coding.
    """

    code = "uncodable_latent"
