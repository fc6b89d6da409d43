"""Archive engine: file trees and disk images <-> ordered streams of chunks.

A backup turns a resource into one byte stream (a PAX tar stream for a file tree, the
raw image for a disk), cuts it into chunks (FastCDC for trees, fixed blocks for disks),
names each chunk by the BLAKE3 digest of its plain bytes, and hands the chunks the vault
lacks to a `ChunkSink`. The result is a `Manifest` that lists the chunks in order; a
restore reads them back through a `ChunkSource`, verifying each one.

Modules: `sink` (the two store-facing protocols, `ChunkRef`, errors), `manifest`,
`pipeline` (chunking, the bounded ordered backup pipeline, the restore prefetcher),
`tree` (backing up file trees), `extract` (restoring them, whole or one file),
`catalog` (a tree backup's member records), `parent` (reusing the previous backup's
chunks of unchanged files), `disk` (images and block devices).

May import: `opencbr.storage` only (and, today, nothing of ours at all: the engine talks
to a store solely through the protocols in `sink`, which `storage` adapts).
"""
