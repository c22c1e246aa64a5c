"""The botocore versions ``BedrockInstrumentor`` supports.

The Converse API reached botocore in 1.34.116; ``invoke_model`` and its streaming twin are
older. Operations are matched by name on every ``_make_api_call``, so an operation the
installed botocore lacks is simply never seen.
"""

from __future__ import annotations

__all__ = ["MAKE_API_CALL", "_instruments"]

_instruments = ("botocore >= 1.34.116",)

MAKE_API_CALL = ("botocore.client", "BaseClient._make_api_call")
"""(module, "Class.method") wrapped to see every client call."""
