"""Review: a local page where a person decides what the gate could not (``datagate review``).

* :mod:`.queues` — which rows of a gate's manifests to look at (unknown origin, borderline
  detector scores, rejected, semantic-duplicate pairs), read by column and by row group so
  a 100k-image queue costs an index, never the whole table;
* :mod:`.decisions` — the overrides file as this server writes it: one durable append per
  decision, and undo by truncating back to before this server's last append;
* :mod:`.previews` — the image of a manifest row, read back from its shard through the
  scan's bounded decoder and re-encoded as a ~512 px JPEG;
* :mod:`.server` — the HTTP server (127.0.0.1 only) with its JSON API, and :mod:`.page`,
  the one self-contained HTML page it serves.
"""

from __future__ import annotations
