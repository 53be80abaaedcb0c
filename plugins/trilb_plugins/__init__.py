"""trilb's first-party plugins, written against the public plugin API only (trilb.plugin).

Each is registered in the ``trilb.plugins`` entry-point group by trilb's pyproject.toml,
exactly as a third-party package registers its own.
"""
