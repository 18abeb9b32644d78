"""The model bundle: the versioned folder that training writes and the service reads.

This package must stay free of torch and transformers: the serving path imports it.
The format is documented in docs/bundle.md.
"""

from arbiter.bundle.load import Bundle, BundleError, load_bundle
from arbiter.bundle.manifest import FORMAT_VERSION, Manifest, ModelSpec

__all__ = ["FORMAT_VERSION", "Bundle", "BundleError", "Manifest", "ModelSpec", "load_bundle"]
