"""cli/ in this process: formats, gates, options, and commands that start nothing."""
