"""Learned image codecs (TIC, TIC+, STF, WACNN, zigzag, ERSTC) with real rANS bitstreams.

Layout: ``architectures/`` (one family per file), ``layers/`` (shared blocks), ``entropy/`` (portable coding),
``container.py`` (the bitstream format), ``registry.py`` (shipped weights), ``codec.py`` (image in, bytes out).
"""

import warnings

# compressai 1.2.8 scripts a few helpers with torch.jit at import time; torch 2.14 warns about it on every
# import. The warning is about compressai's code, not ours, and would drown the CLI's output.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

__version__ = "0.1.0"
