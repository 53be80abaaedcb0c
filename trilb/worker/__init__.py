"""A worker process: one trio.run serving its slot's listeners."""
