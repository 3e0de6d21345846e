"""Learned image codecs (TIC, TIC+, STF, WACNN, zigzag, ERSTC) with real rANS bitstreams.

Layout: ``architectures/`` (one family per file), ``layers/`` (shared blocks), ``entropy/`` (portable coding),
``container.py`` (the bitstream format), ``registry.py`` (shipped weights), ``codec.py`` (image in, bytes out).
"""

__version__ = "0.1.0"
