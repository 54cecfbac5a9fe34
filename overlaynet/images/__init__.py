"""Images: the catalog (what a name means) and the root filesystems containers run in.

`catalog.load().resolve("alpine")` -> `Image`; `rootfs.prepare(image, container_dir, hostname)`
-> the root folder for `host.process.Launch(root=...)`; `rootfs.remove(container_dir)`.
"""
