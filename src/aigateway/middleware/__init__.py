"""Pipeline middlewares: each a small object configured once per config snapshot."""
