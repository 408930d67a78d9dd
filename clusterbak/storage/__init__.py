"""Where backup sets live: streaming writes to local files (optionally zstd), later S3."""
