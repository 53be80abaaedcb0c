"""The master process: sockets, fork, supervision, reload. Never imports trio."""
