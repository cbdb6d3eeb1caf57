"""sessionwatch: detects hijacked, replayed and policy-violating web sessions."""

__version__ = "0.1.0"
