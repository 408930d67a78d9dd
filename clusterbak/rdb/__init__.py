"""Reading RDB files as they stream past: magic, version, CRC64, sha256, header counts."""
