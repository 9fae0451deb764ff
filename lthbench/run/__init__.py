"""Which runs the matrix needs (``plan``), in which order and where they train (``scheduler``, executors, ``worker``)."""
