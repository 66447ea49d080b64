"""The bytes after the handshake: dialling the console (TCP, TLS), the host link, the bridge."""

# Host reads of 64-256 KiB move the most bytes per system call; on this project's 2-core
# machines 4 KiB reads gave ~520 MB/s downstream, 64 KiB ~1,550 and 256 KiB ~1,600.
READ_SIZE = 256 * 1024
