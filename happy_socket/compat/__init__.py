"""Every reach into a dependency's internals, one module per library, checked at start-up.

A release that lacks what a module uses fails loudly (:class:`~happy_socket.errors.ConfigError`
naming the library and the missing piece) or takes the public path, and says which in the log.
"""
