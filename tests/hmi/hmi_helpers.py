"""Constants shared by the HMI fixtures and tests (importable: conftest puts this folder on sys.path)."""
QR_TEXT = '<img src=x onerror="window.pwned=1">&amp;'
PASSWORDS = {"eng": "engineer-pass", "op": "operator-pass"}
