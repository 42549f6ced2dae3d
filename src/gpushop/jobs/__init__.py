"""Jobs: a command run detached on a rented instance, its files moved there and back, and the
rental released whatever happens (``spec`` and ``remote`` are pure; ``runner`` does the I/O)."""
