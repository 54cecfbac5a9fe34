"""`overlaynet trace`: one probe from a container, followed hop by hop, and where it stopped."""
